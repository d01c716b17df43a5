"""The adversarial-example cache: attacks are computed once per (source, attack, data, seed,
strategy) and reused by every target model and every later run.

An entry is three files under ``root``: ``<key>.pt`` (a ``torch.save``d dict of tensors: the
adversarial images, optionally the universal delta), ``<key>.sha256`` (the sha256 of the .pt
file's bytes) and ``<key>.json`` (the key material, for humans and reports). Loading uses
``torch.load(weights_only=True)`` (no pickled code runs) after checking the checksum; a
missing, truncated, tampered or unreadable entry is logged as a warning and rebuilt. Writes
are atomic (temporary file + ``os.replace``), so a crash never leaves half an entry under the
final name.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch

from .errors import VitrobustError
from .fileio import atomic_write

log = logging.getLogger(__name__)

CACHE_FORMAT = 1   # bump when the stored layout or the attacks' numerics change


class AdvCacheError(VitrobustError):
    """A cache entry could not be produced (the create function returned something unstorable)."""


class AdvCache:
    """Adversarial tensors on disk, keyed by what produced them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stats = {"generated": 0, "reused": 0}   # by get_or_create, for the run record

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def key(material: dict) -> str:
        """sha256 of the canonical JSON of ``material`` (sorted keys, no whitespace).

        ``material`` should hold the source model's weight hash, the attack's threat model,
        the data fingerprint, the seed and the strategy label.
        """
        blob = json.dumps({"format": CACHE_FORMAT, **material}, sort_keys=True,
                          separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        base = self.root / key[:2] / key
        return base.with_suffix(".pt"), base.with_suffix(".sha256"), base.with_suffix(".json")

    # -- get / create ------------------------------------------------------------------------
    def get(self, material: dict) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or damaged (damage is logged)."""
        key = self.key(material)
        data, sums, _ = self.paths(key)
        if not data.exists():
            return None
        try:
            expected = sums.read_text().strip()
            actual = _sha256(data)
            if actual != expected:
                raise ValueError(f"checksum mismatch (stored {expected[:12]}, file {actual[:12]})")
            tensors = torch.load(data, map_location="cpu", weights_only=True)
            if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
                raise ValueError("not a dict of tensors")
            return tensors
        except Exception as exc:  # damaged entry: warn, then the caller rebuilds it
            log.warning("adversarial cache entry %s is unusable (%s); rebuilding", data, exc)
            return None

    def get_or_create(self, material: dict,
                      create: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Load the entry for ``material``, or call ``create()`` and store its result."""
        found = self.get(material)
        if found is not None:
            self.stats["reused"] += 1
            return found
        tensors = create()
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise AdvCacheError("create() must return a dict of str -> torch.Tensor")
        self.put(material, tensors)
        self.stats["generated"] += 1
        return tensors

    def put(self, material: dict, tensors: dict[str, torch.Tensor]) -> Path:
        key = self.key(material)
        data, sums, meta = self.paths(key)
        data.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write(data, lambda tmp: torch.save(payload, tmp))
        digest = _sha256(data)
        atomic_write(sums, lambda tmp: tmp.write_text(digest + "\n"))
        info = {"key": key, "material": material, "sha256": digest,
                "tensors": {k: list(v.shape) for k, v in payload.items()}}
        atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str)))
        return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
