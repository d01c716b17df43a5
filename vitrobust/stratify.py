"""A fixed, seeded, class-stratified subset of a labelled collection (no torch).

``limit: 1000`` on an ImageNet-style folder must not mean "the first 1,000 files", which are the
first ~20 classes. Like RobustBench's fixed 5,000 ImageNet ids, the subset is a function of the
image ids and a seed only: not of the order files are listed in, the file system or the machine.

- Every class gets the same share, and what is left over goes one each to the classes that rank
  first by ``sha256(seed, class)``; a class with too few images gives its share to the others
  (water-filling), so the count is always ``min(n, len(ids))``.
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
    """How many of each class a subset of ``n`` takes (``sizes``: images per class).

    Water-filling: the highest level ``L`` with ``sum(min(size, L)) <= n`` gives every class
    ``min(size, L)``; the rest go one each to the classes with images left, in hash order.
    """
    n = min(n, sum(sizes.values()))
    level = 0
    while sum(min(size, level + 1) for size in sizes.values()) <= n:
        level += 1
    quota = {c: min(size, level) for c, size in sizes.items()}
    rest = n - sum(quota.values())
    for c in sorted((c for c in sizes if sizes[c] > level), key=lambda c: _rank(seed, c))[:rest]:
        quota[c] += 1
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
