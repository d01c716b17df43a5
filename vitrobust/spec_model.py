"""What a loaded spec is (:class:`Spec`, :class:`Check`) and how the loader says what is wrong
with one (:class:`SpecError`, one line: ``file:line: spec 'id': key: problem``).

Kept apart from the loader so each part of it (:mod:`vitrobust.spec_fields`,
:mod:`vitrobust.spec_checks`, :mod:`vitrobust.spec`) builds the same objects and phrases errors
the same way.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional

from .errors import VitrobustError
from .exprtree import measures

__all__ = ["SpecError", "Spec", "Check", "Where", "one_line", "known", "suggest"]


class SpecError(VitrobustError):
    """An invalid spec; the message is one line: ``file:line: spec 'id': key: problem``."""


@dataclass(frozen=True)
class Check:
    """One expanded check: one pytest item."""

    spec_id: str
    text: str                 # expanded, e.g. asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)
    template: str             # as written, e.g. asr(deit_{size}:int8, sp) > asr(deit_{size}, sp)
    params: dict              # this matrix cell, e.g. {"size": "tiny"} ({} without a matrix)
    claim: Optional[str]
    xfail: Optional[str]      # reason the claim is expected not to reproduce, or None
    inconclusive: str         # fail | skip | xfail
    node: object              # parsed tree (Chain or Monotonic)
    line: int                 # YAML line of the check
    varies: Optional[str] = None   # why the claim is expected to vary with the training seed
    xfail_one_build: Optional[str] = None   # why one build does not decide a claim that holds across seeds

    def __hash__(self):
        return hash((self.spec_id, self.text, self.line))

    def strict_xfail(self, one_build: bool) -> Optional[str]:
        """The reason for a strict xfail marker in this run: ``xfail:``, or ``xfail_one_build:`` in
        a single-build run (``--vitrobust-seeds 1``)."""
        return self.xfail or (self.xfail_one_build if one_build else None)

    def expected_not_to_pass(self, one_build: bool) -> Optional[str]:
        """Why this check is expected not to pass in this run (the report's reason), or None."""
        varies = f"varies with the training seed: {self.varies}" if self.varies else None
        return self.strict_xfail(one_build) or varies

    @property
    def param_id(self) -> str:
        """``size=tiny,keep=0.7`` ('' without matrix parameters), for readable test ids."""
        return ",".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def measures(self) -> list:
        return measures(self.node)


@dataclass(frozen=True)
class Spec:
    id: str
    about: str
    path: str
    data: dict                # source (None = the run's default), split, limit, fit_split, fit_limit
    attacks: dict             # alias -> {"name": registry name, **params}
    matrix: dict              # key -> list of values
    confidence: float
    inconclusive: str
    checks: list
    line: int = 1             # YAML line where the spec starts

    def __hash__(self):
        return hash((self.id, self.path))


MAX_MESSAGE = 1000   # an error quoting a megabyte of hostile YAML stays readable


def one_line(text) -> str:
    """``text`` on one line (whitespace runs become one space), cut to :data:`MAX_MESSAGE`."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def known(keys) -> str:
    return ", ".join(sorted(map(str, keys)))


def suggest(word, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Where:
    """The file and spec being read, so every error names them the same way."""

    def __init__(self, path: str, index: Optional[int] = None):
        self.path, self.index, self.spec_id = path, index, None

    def error(self, line: int, key: str, problem: str) -> SpecError:
        """``path:line: spec 'id': key: problem`` as a :class:`SpecError` (raise it)."""
        parts = [f"{self.path}:{line}" if line else self.path]
        if self.spec_id is not None:
            parts.append(f"spec {self.spec_id!r}")
        elif self.index is not None:
            parts.append(f"spec #{self.index + 1}")
        if key:
            parts.append(key)
        parts.append(problem)
        return SpecError(one_line(": ".join(parts)))
