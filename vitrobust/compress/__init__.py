"""Compressions as name suffixes: ``deit_small:int8``, ``deit_small:prune0.7``, ``:mini``...

Each compression lives in its own module and registers an ``apply`` function with
``@register_compression``. ``apply(base, name=..., progress=..., **params)`` receives the built
base :class:`ModelWrapper` and returns a new wrapper for the compressed variant (trained from
the base and cached through :func:`vitrobust.zoo.variant.trained_variant` where training is
needed).

A registration also says what the rest of the suite needs to know without a list kept
elsewhere: an ``example`` suffix (the registry's tests build ``vit_fixture:<example>`` for every
registered compression) and, for a compression without usable gradients, its gradient
``surrogate`` (``"parent"``: the model it was applied to), which becomes the variant's
``ModelInfo.surrogate`` and is what the ``straight-through`` and bare ``transfer`` attack
strategies use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..errors import VitrobustError
from ..names import ModelName
from ..zoo.wrapper import ModelWrapper

# The variants every default-zoo size gets (see `vitrobust zoo list`).
DEFAULT_VARIANTS = ("int8", "prune0.7", "prune0.6", "prune0.5", "mini", "distilled", "bornagain")
SURROGATES = (None, "parent")


class CompressionError(VitrobustError):
    """An unknown or malformed suffix, or a base a compression cannot apply to; one line."""


@dataclass(frozen=True)
class Compression:
    prefix: str
    pattern: re.Pattern
    apply: Callable[..., ModelWrapper]
    about: str
    example: str                 # a suffix this compression accepts, e.g. "prune0.7"
    surrogate: str | None = None  # "parent": gradients come from the model it was applied to


_COMPRESSIONS: dict[str, Compression] = {}


def register_compression(prefix: str, pattern: str | None = None, about: str = "", *,
                         example: str | None = None, surrogate: str | None = None):
    """Register ``apply`` for suffixes matching ``pattern`` (default: exactly ``prefix``).

    Named groups of the pattern become keyword arguments of ``apply`` (as floats when numeric).
    ``example`` (default ``prefix``) must match the pattern; ``surrogate`` is None or
    ``"parent"`` (see the module docstring). Both are checked here, at import, so a bad
    registration fails where it is written.
    """
    regex = re.compile(pattern or re.escape(prefix))
    example = example if example is not None else prefix
    if not regex.fullmatch(example):
        raise TypeError(f"register_compression({prefix!r}): example {example!r} does not match {regex.pattern!r}")
    if surrogate not in SURROGATES:
        raise TypeError(f"register_compression({prefix!r}): surrogate must be one of {SURROGATES}, got {surrogate!r}")

    def wrap(apply):
        doc = (apply.__doc__ or "").strip().splitlines()
        _COMPRESSIONS[prefix] = Compression(prefix, regex, apply, about or (doc[0] if doc else ""),
                                            example, surrogate)
        return apply

    return wrap


def parse_suffix(suffix: str) -> tuple[Compression, dict]:
    _ensure_loaded()
    for comp in _COMPRESSIONS.values():
        match = comp.pattern.fullmatch(suffix)
        if match:
            return comp, {k: _number(v) for k, v in match.groupdict().items() if v is not None}
    known = ", ".join(sorted(c.pattern.pattern for c in _COMPRESSIONS.values()))
    raise CompressionError(f"unknown compression suffix {suffix!r}; known: {known}")


def apply_compression(model: ModelWrapper, suffix: str, name: str, progress: bool = True) -> ModelWrapper:
    """The variant ``name`` (``model``'s name plus ``suffix``), with its declared surrogate."""
    comp, params = parse_suffix(suffix)
    variant = comp.apply(model, name=name, progress=progress, **params)
    if comp.surrogate == "parent":
        variant.info.surrogate = str(ModelName(name).parent)
    return variant


def list_compressions() -> list[Compression]:
    _ensure_loaded()
    return sorted(_COMPRESSIONS.values(), key=lambda c: c.prefix)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _ensure_loaded() -> None:
    # Importing a compression module runs its @register_compression. Each module is optional
    # while the set grows: a missing one simply is not registered.
    import importlib

    for module in ("quantize", "prune", "multiplex", "distill", "advtrain"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise
