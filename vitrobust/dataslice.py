"""A data slice: which images a spec scores (source, split, image limit) and where UAPs are fitted.

The slice's ``key`` (``digits/test[:450]``) names it in the run record and in the adversarial
cache, so two runs that scored the same slice can be paired image by image.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import defaults


@dataclass(frozen=True)
class DataSlice:
    source: str = defaults.DATA_SOURCE
    split: str = defaults.SPLIT
    limit: int | None = defaults.IMAGE_LIMIT
    fit_split: str = defaults.FIT_SPLIT      # universal perturbations are fitted here...
    fit_limit: int | None = defaults.FIT_LIMIT

    @property
    def key(self) -> str:
        return f"{self.source}/{self.split}[:{self.limit}]"

    def fit_slice(self) -> "DataSlice":
        """...the slice a universal perturbation is fitted on (disjoint from this one)."""
        return DataSlice(self.source, self.fit_split, self.fit_limit, self.fit_split, self.fit_limit)

    @classmethod
    def for_spec(cls, spec_data: dict | None, *, source: str, max_images: int | None = None) -> "DataSlice":
        """The slice a spec's ``data:`` asks for, on the run's data ``source``, capped by ``max_images``."""
        spec_data = spec_data or {}
        limit = spec_data.get("limit", defaults.IMAGE_LIMIT)
        if max_images is not None:
            limit = max_images if limit is None else min(limit, max_images)
        return cls(source, spec_data.get("split") or defaults.SPLIT, limit,
                   spec_data.get("fit_split") or defaults.FIT_SPLIT,
                   spec_data.get("fit_limit", defaults.FIT_LIMIT))
