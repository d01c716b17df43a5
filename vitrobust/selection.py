"""The checks a pytest command line selects, without running them.

``vitrobust plan`` and ``vitrobust run --executor ray`` must work on exactly the checks the run
itself will decide: the same spec paths, ``testpaths``, ``-k`` and ``-m`` expressions, matrix
expansion and plugin options. Rather than re-implement pytest's selection, this runs pytest's
own collection in-process (``--collect-only``) with the vitrobust plugin and keeps the selected
items, and the :class:`~vitrobust.engine.Engine` the plugin configures from the same options
(data, zoo config, device, precision, image cap, seeds), so a plan computes every cache key the
way the run will.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import pytest

from .errors import VitrobustError


class SelectionError(VitrobustError):
    """The selection did not collect (a bad spec, a bad option); the message is pytest's."""


@dataclass(frozen=True)
class Selected:
    """One selected check: its pytest node id, its spec and its parsed check."""

    nodeid: str
    spec: object
    check: object


def select(pytest_args: list[str]) -> tuple[list[Selected], object]:
    """``(selected checks, engine)`` for a pytest command line (collection only: no model is
    built, no data is loaded). A collection error is a :class:`SelectionError`."""
    grab = _Grab()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = pytest.main(["--collect-only", "-q", "-p", "no:randomly", *pytest_args], plugins=[grab])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) or grab.engine is None:
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        problem = grab.errors or [line for line in lines if "rror" in line] or lines[-3:]
        raise SelectionError(f"collecting the selected specs failed (pytest exit {int(code)}): "
                             + " | ".join(problem[:3]))
    return grab.items, grab.engine


class _Grab:
    """A pytest plugin object that keeps the selected check items and the session's engine."""

    def __init__(self):
        self.items: list[Selected] = []
        self.engine = None
        self.errors: list[str] = []

    def pytest_collectreport(self, report):
        if report.failed:   # a spec's error is one line (SpecFile.repr_failure)
            self.errors.append(f"{report.nodeid}: {report.longreprtext.strip().splitlines()[-1]}")

    @pytest.hookimpl(trylast=True)   # after -k / -m deselection
    def pytest_collection_finish(self, session):
        from .collect import CheckItem
        from .plugin import session_of

        self.items = [Selected(i.nodeid, i.spec, i.check) for i in session.items if isinstance(i, CheckItem)]
        self.engine = session_of(session.config).engine
