"""Fault injection: a test hook that kills the process at a named point of the real code.

The kill-and-resume tests (``tests/test_kill_resume.py``) must stop a run exactly where a crash
would hurt (a model trained but not stored, a cache blob written but its manifest not, half the
report files, inside the database transaction), not wherever a timer happens to fire. So the
code calls ``faults.point("name")`` at those places, and the tests set:

- ``VITROBUST_FAULT="kill@NAME:N"``: the N-th time this process reaches point NAME (N defaults to
  1), it sends itself SIGKILL. Nothing runs after it (no ``finally``, no ``atexit``, no flush),
  as after a power cut or the OOM killer. ``"kill@NAME:N after OTHER"`` counts only arrivals
  after the first at point OTHER (``kill@atomic-write:1 after run-recorded``: inside the first
  file written once the database row is in, however many cache files came before).
- ``VITROBUST_FAULT_LOG=PATH``: every point reached is appended to PATH (one ``NAME`` a line,
  written before the kill), so a test can count what a run finished: models stored, sets
  committed, and what the run after it had to do again.

The points, in the order a run reaches them: ``run-begun`` (its database row is in; plugin),
``train-epoch`` (zoo/train.py), ``model-trained`` and ``model-committed`` (before and after the
weights are stored; zoo/cache.py), ``cache-blob-written`` (a cache entry's blob is in, its
manifest not yet; blobstore.py), ``adversarial-generated`` and ``adversarial-committed``
(advcache.py), ``check-done`` (after each check; plugin), ``db-transaction`` (inside the
transaction that records the run, before its commit; store.py), ``run-recorded`` (committed,
no report yet; run.py), ``atomic-write`` (a file written under its temporary name, not yet
renamed; fileio.py) and ``report-file`` (after each report file; report.py).

Both are read once, when this module is imported. Unset (always, outside these tests), a call
costs one global lookup. Counts are per process: under pytest-xdist each worker counts its own.
Not for users: there is nothing here a run needs.
"""
from __future__ import annotations

import os
import re
import signal

from .errors import VitrobustError

FAULT_ENV = "VITROBUST_FAULT"
LOG_ENV = "VITROBUST_FAULT_LOG"
_SPEC = re.compile(r"kill@([a-z][a-z0-9-]*)(?::([1-9][0-9]*))?(?: after ([a-z][a-z0-9-]*))?")

_kill: tuple[str, int] | None = None   # (point, the arrival that kills)
_after: str | None = None              # arrivals count once this point was reached
_log: str | None = None
_seen: dict[str, int] = {}
_active = False


def configure(environ=os.environ) -> None:
    """Read the two variables (done at import; tests of this module call it again)."""
    global _kill, _after, _log, _active
    text = environ.get(FAULT_ENV, "").strip()
    _kill = _after = None
    if text:
        match = _SPEC.fullmatch(text)
        if match is None:
            raise VitrobustError(f"${FAULT_ENV}={text!r}: expected kill@POINT[:N][ after POINT] "
                                 "(a test hook, see vitrobust/faults.py)")
        _kill, _after = (match[1], int(match[2] or 1)), match[3]
    _log = environ.get(LOG_ENV) or None
    _seen.clear()
    _active = bool(_kill or _log)


def point(name: str) -> None:
    """A place where the process may be killed for a test; nothing at all when not testing."""
    if _active:
        _reached(name)


def _reached(name: str) -> None:
    global _after
    count = _seen[name] = _seen.get(name, 0) + (_after is None)
    if name == _after:
        _after = None
    if _log:
        fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:   # one write of one line with O_APPEND: lines of several processes never interleave
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
    if _kill == (name, count):
        _die()


def _die() -> None:
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


configure()
