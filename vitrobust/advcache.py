"""The adversarial-example cache: attacks are computed once per (source, attack, data, seed,
strategy) and reused by every target model, every later run and every other process.

Entries follow the store protocol of :mod:`vitrobust.blobstore`: the tensors (a ``torch.save``d
dict: the adversarial images, optionally the universal delta) are a blob named by its sha256,
and ``<key[:2]>/<key>.json`` (the key material, for humans and reports, and the blob's hash) is
written last and commits the entry. Loading checks the checksum, then uses
``torch.load(weights_only=True)`` (no pickled code runs); a torn, tampered or unreadable entry
is logged as a warning and rebuilt. :meth:`AdvCache.get_or_create` makes an entry once across
processes: a per-key lock, and a second look inside it. A cache that refuses the write (full,
read-only) is one warning line naming the file, and the set made is used uncached.

An entry of the layout before (``<key>.pt`` beside ``<key>.sha256``) is adopted when its checksum
holds; its files are left for older versions still running.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch

from . import faults
from .blobstore import dumps, loads
from .errors import VitrobustError
from .objectstore import CacheURL, as_root, open_store

log = logging.getLogger(__name__)

CACHE_FORMAT = 1   # bump when the attacks' numerics change (it is key material)


class AdvCacheError(VitrobustError):
    """A cache entry could not be produced (the create function returned something unstorable)."""


class AdvCache:
    """Adversarial tensors on disk, keyed by what produced them."""

    def __init__(self, root: str | Path):
        self.root = as_root(root)   # a local folder, or an fsspec URL (vitrobust.objectstore)
        self.store = open_store(self.root, suffix=".pt", what="adversarial cache entry")
        self.stats = {"generated": 0, "reused": 0}   # by get_or_create, for the run record

    # -- keys --------------------------------------------------------------------------------
    @staticmethod
    def key(material: dict) -> str:
        """sha256 of the canonical JSON of ``material`` (sorted keys, no whitespace).

        ``material`` should hold the source model's weight hash, the attack's threat model,
        the data fingerprint, the seed and the strategy label.
        """
        return material_key(CACHE_FORMAT, material)

    @staticmethod
    def entry(key: str) -> str:
        return key_entry(key)

    def manifest_path(self, key: str) -> Path:
        """``<key>.json``: the key material and the blob's hash; its presence commits the entry."""
        return self.store.manifest_path(self.entry(key))

    def has(self, material: dict) -> bool:
        """Is the entry for ``material`` committed? (Its manifest exists; nothing is read.)"""
        return self.store.has(self.entry(self.key(material)))

    @property
    def artifact_dir(self) -> Path:
        """Where files for the report go (a UAP's ``.npy``): beside the cache when it is a local
        folder; a report reads local files, so under the temp folder for a URL root."""
        if isinstance(self.root, CacheURL):
            import tempfile

            return Path(tempfile.gettempdir()) / "vitrobust-artifacts"
        return self.root / "artifacts"

    # -- get / create ------------------------------------------------------------------------
    def get(self, material: dict) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or damaged (damage is logged)."""
        key = self.key(material)
        found = self.store.get(self.entry(key), decode=lambda data: _tensors(loads(data)))
        return self._adopt(key, material) if found is None else found[0]

    def get_or_create(self, material: dict,
                      create: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Load the entry for ``material``, or call ``create()`` and store its result. Across
        processes ``create`` runs once: the others wait for the entry's lock, then load it."""
        def make():
            tensors = create()
            faults.point("adversarial-generated")
            if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
                raise AdvCacheError("create() must return a dict of str -> torch.Tensor")
            payload = _payload(tensors)
            self.put(material, payload)   # a refused write (WriteError) ends the session
            faults.point("adversarial-committed")
            return payload

        tensors, made = self.store.get_or_create(self.entry(self.key(material)), lambda: self.get(material), make)
        self.stats["generated" if made else "reused"] += 1
        return tensors

    def put(self, material: dict, tensors: dict[str, torch.Tensor]) -> Path:
        """Store ``tensors`` (on the CPU) under ``material``; the path of the blob written."""
        key = self.key(material)
        payload = _payload(tensors)
        info = {"key": key, "material": material, "tensors": {k: list(v.shape) for k, v in payload.items()}}
        manifest = self.store.put(self.entry(key), dumps(payload), info)
        return self.store.blob_path(manifest["blob"])

    def _adopt(self, key: str, material: dict) -> dict[str, torch.Tensor] | None:
        """An entry of the layout before (``.pt`` + ``.sha256``) whose checksum holds, re-stored."""
        if isinstance(self.root, CacheURL):   # that layout only ever existed in local folders
            return None
        base = self.root / key[:2] / key
        try:
            data = base.with_suffix(".pt").read_bytes()
            if hashlib.sha256(data).hexdigest() != base.with_suffix(".sha256").read_text().strip():
                return None
            tensors = _tensors(loads(data))
        except Exception:   # absent (the usual case), torn or unreadable: a miss
            return None
        self.put(material, tensors)
        log.info("adversarial cache entry %s adopted from the layout before", base)
        return tensors


def material_key(format_version: int, material: dict) -> str:
    """sha256 of the canonical JSON of ``{"format": format_version, **material}``: the key of
    an entry of the adversarial, predictions and timing caches."""
    blob = json.dumps({"format": format_version, **material}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def key_entry(key: str) -> str:
    """``<key[:2]>/<key>``: the entry of a key, in one of 256 folders by its first hex digits."""
    return f"{key[:2]}/{key}"


def _payload(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _tensors(loaded) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError("not a dict of tensors")
    return loaded
