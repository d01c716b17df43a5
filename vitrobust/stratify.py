"""A fixed, seeded, class-stratified subset of a labelled collection (no torch).

``limit: 1000`` on an ImageNet-style folder must not mean "the first 1,000 files", which are the
first ~20 classes. Like RobustBench's fixed 5,000 ImageNet ids, the subset is a function of the
image ids and a seed only: not of the order files are listed in, the file system or the machine.

- Every class gets ``n // classes`` images, and the ``n % classes`` left over go one each to the
  classes that rank first by ``sha256(seed, class)``; a class with too few images gives its share
  to the others (water-filling), so the count is always ``min(n, len(ids))``.
- Within a class, images are taken in the order of ``sha256(seed, id)``.

So every class's share grows with ``n``, and the subset for a smaller ``n`` is contained in the
subset for a larger one: ``limit: 500`` is part of ``limit: 1000``.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

SEED = 0   # the seed every run uses; changing it changes which images every limit picks


def _rank(seed: int, text: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{text}".encode()).digest()


def class_quotas(sizes: dict[str, int], n: int, seed: int = SEED) -> dict[str, int]:
    """How many of each class a subset of ``n`` takes (``sizes``: images per class)."""
    order = sorted(sizes, key=lambda c: _rank(seed, c))
    quota = dict.fromkeys(order, 0)
    remaining = min(n, sum(sizes.values()))
    while remaining > 0:
        open_classes = [c for c in order if quota[c] < sizes[c]]
        share, extra = divmod(remaining, len(open_classes))
        for position, c in enumerate(open_classes):
            give = min(share + (position < extra), sizes[c] - quota[c])
            quota[c] += give
            remaining -= give
    return quota


def stratified_subset(ids: Sequence[str], classes: Sequence[str], n: int | None,
                      seed: int = SEED) -> list[int]:
    """Positions (ascending) of a class-stratified subset of ``n`` of ``ids``; ``classes[i]`` is
    the class of ``ids[i]``. ``n`` None or at least ``len(ids)``: every position."""
    if len(ids) != len(classes):
        raise ValueError(f"{len(ids)} ids but {len(classes)} class labels")
    if n is None or n >= len(ids):
        return list(range(len(ids)))
    members: dict[str, list[int]] = {}
    for position, cls in enumerate(classes):
        members.setdefault(cls, []).append(position)
    quota = class_quotas({c: len(m) for c, m in members.items()}, n, seed)
    chosen = []
    for cls, positions in members.items():
        ranked = sorted(positions, key=lambda p: _rank(seed, ids[p]))
        chosen.extend(ranked[:quota[cls]])
    return sorted(chosen)
