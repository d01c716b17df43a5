"""A readers-writer lock across the processes of one machine: a pytest-xdist worker holds it
shared while it runs a check and exclusively while it runs a check that times something, so a
timing never runs beside another worker's attacks.

Two lock files under one folder, with ``fcntl.flock`` (released by the kernel when a process
dies, so a crashed worker cannot wedge the others):

- ``main``: shared by checks that compute, exclusive for a check that times;
- ``gate``: a turnstile. A reader passes it (takes and drops it) before taking ``main``
  shared; a writer keeps it while it waits and runs. Without it, workers starting one check
  after another could keep ``main`` shared for ever and the timing check would never start.

Where ``fcntl`` is missing (Windows) the lock does nothing and :attr:`Barrier.works` says so.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:   # not POSIX
    fcntl = None
LOCKS = fcntl is not None   # False: the barrier lets everything through


class Barrier:
    def __init__(self, folder: str | Path):
        self.works = LOCKS
        if not self.works:
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)   # another host's worker (--tx ssh) makes its own
        self._main = open(folder / "main.lock", "a+")
        self._gate = open(folder / "gate.lock", "a+")

    @contextmanager
    def held(self, exclusive: bool = False) -> Iterator[None]:
        """Hold the lock for the block: shared (other checks may run), or exclusive (nothing else
        that holds it runs; waits for the checks already running to end)."""
        if not self.works:
            yield
            return
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
            raise
        if not exclusive:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(self._gate, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.works:
            self._main.close()
            self._gate.close()
