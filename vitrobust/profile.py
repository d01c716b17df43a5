"""Where a run's time went: model builds, model summaries (params, size, GFLOPs), adversarial
sets, scoring, timing, checks (the reports are written after the record is made;
:func:`vitrobust.run.finish_run` prints their time).

Phases nest (a check builds the adversarial set it needs, which builds its source model), so
each phase is charged its *own* time, the wall time minus the phases it opened: the items add
up to the run's measured time once each, and the five most expensive are the run's real cost.
The inclusive time is kept beside it (``total``): for a check, what it cost when it ran first.

A phase that runs more than once under one name (a model scored on several slices) adds up.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

KINDS = ("model", "summary", "adversarial", "scoring", "timing", "check")


class Profile:
    """Seconds per (kind, name), own and inclusive, from nested :meth:`phase` blocks."""

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self._items: dict[tuple[str, str], dict] = {}
        self._children: list[float] = []   # per open phase: seconds its sub-phases took

    @contextmanager
    def phase(self, kind: str, name: str) -> Iterator[None]:
        if kind not in KINDS:
            raise ValueError(f"profile kind must be one of {KINDS}, got {kind!r}")
        start = self._clock()
        self._children.append(0.0)
        try:
            yield
        finally:
            total = self._clock() - start
            inner = self._children.pop()
            if self._children:
                self._children[-1] += total
            item = self._items.setdefault((kind, name), {"kind": kind, "name": name,
                                                         "seconds": 0.0, "total": 0.0, "count": 0})
            item["seconds"] += total - inner
            item["total"] += total
            item["count"] += 1

    def items(self) -> list[dict]:
        """Every phase, most expensive (own seconds) first, seconds rounded to milliseconds."""
        rows = sorted(self._items.values(), key=lambda i: -i["seconds"])
        return [{**i, "seconds": round(i["seconds"], 3), "total": round(i["total"], 3)} for i in rows]


def by_kind(items: list[dict]) -> dict[str, float]:
    """Own seconds summed per kind, in :data:`KINDS` order (kinds with no time left out)."""
    sums = {kind: 0.0 for kind in KINDS}
    for item in items:
        sums[item["kind"]] = sums.get(item["kind"], 0.0) + item["seconds"]
    return {kind: round(s, 3) for kind, s in sums.items() if s > 0}


def summary_lines(items: list[dict], top: int = 5) -> list[str]:
    """The terminal's view: time per kind, then the ``top`` most expensive items."""
    if not items:
        return []
    kinds = ", ".join(f"{kind} {_seconds(s)}" for kind, s in by_kind(items).items())
    lines = [f"time: {kinds}"]
    for item in sorted(items, key=lambda i: -i["seconds"])[:top]:
        times = f" x{item['count']}" if item["count"] > 1 else ""
        lines.append(f"  {_seconds(item['seconds']):>8}  {item['kind']:<11} {item['name']}{times}")
    return lines


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"
