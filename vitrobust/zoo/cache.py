"""The on-disk model cache: trained weights keyed by recipe, data, code and torch versions.

Entries follow the store protocol of :mod:`vitrobust.blobstore` under ``<cache>/models``: the
state dict is a blob named by its sha256 (so a flipped byte is caught, not loaded as other
weights), and ``<name>-<key>.json`` is written last and commits it. :func:`get_or_train` trains
a model once across processes: one trains, the others wait for the entry's lock and load its
weights. A cache that refuses the write (full, read-only) is one warning line naming the file,
and the model trained is used uncached. A weights file of the layout before
(``<name>-<key>.pt``, no checksum) is adopted once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator

import torch

from .. import __version__, faults
from ..blobstore import BlobStore, dumps, loads
from ..objectstore import CacheURL, as_root, open_store

log = logging.getLogger(__name__)

# Bump when a change to training code should invalidate every cached model.
TRAINING_CODE_VERSION = 1

_PROBE: ContextVar[list | None] = ContextVar("vitrobust_model_probe", default=None)


class WouldTrain(Exception):
    """Raised inside :func:`probing` where a model would be trained: its weights are neither
    cached nor shipped. Not a ``VitrobustError``, so the engine's error wrapping lets it through."""

    def __init__(self, name: str, key: str):
        super().__init__(f"{name} is not cached (entry {entry_name(name, key)}) and would be trained")
        self.name, self.key = name, key


@contextmanager
def probing() -> Iterator[list]:
    """Build models without training any (the planner's look at what is cached): inside, a
    model that needs training raises :class:`WouldTrain`, and every cache lookup is appended to
    the yielded list as ``(name, key, found)``."""
    lookups: list = []
    token = _PROBE.set(lookups)
    try:
        yield lookups
    finally:
        _PROBE.reset(token)


def cache_root() -> Path | CacheURL:
    """``$VITROBUST_CACHE`` or ``~/.cache/vitrobust``: a local folder, or an fsspec URL
    (``s3://bucket/prefix``; see :mod:`vitrobust.objectstore`)."""
    return as_root(os.environ.get("VITROBUST_CACHE") or Path.home() / ".cache" / "vitrobust")


def cache_key(name: str, recipe: dict, data_fingerprint: str, **extra) -> str:
    material = {"name": name, "recipe": recipe, "data": data_fingerprint, "extra": extra,
                "vitrobust": __version__, "training_code": TRAINING_CODE_VERSION,
                "torch": torch.__version__.split("+")[0]}
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _store() -> BlobStore:
    return open_store(cache_root() / "models", suffix=".pt", what="cached model")


def entry_name(name: str, key: str) -> str:
    """The cache entry of model ``name`` under ``key`` (``<cache>/models/<entry>.json``)."""
    return f"{name.replace(':', '__')}-{key}"


_entry = entry_name


def load_weights(name: str, key: str) -> dict | None:
    """The cached state dict, or None when absent or damaged (damage is logged; it is rebuilt)."""
    state = _load_weights(name, key)
    if (lookups := _PROBE.get()) is not None:
        lookups.append((name, key, state is not None))
    return state


def _load_weights(name: str, key: str) -> dict | None:
    store = _store()
    found = store.get(_entry(name, key), decode=_state_dict)
    return _adopt(store, name, key) if found is None else found[0]


def _state_dict(data: bytes) -> dict:
    state = loads(data)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"a {type(state).__name__}, not a state dict")
    return state


def save_weights(name: str, key: str, payload: dict) -> Path:
    """Store a state dict (blob, then manifest); the path of its blob. A payload that does not
    serialize raises before anything is written."""
    store = _store()
    manifest = store.put(_entry(name, key), dumps(payload), {"model": name, "key": key})
    return store.blob_path(manifest["blob"])


def get_or_train(name: str, key: str, train: Callable[[], dict]) -> tuple[dict, bool]:
    """``(cached state dict, False)``, or ``(train(), True)`` with the result cached. Across
    processes one trains; the others wait on the entry's lock, then load what it stored.
    Inside :func:`probing` nothing trains: a miss raises :class:`WouldTrain`."""
    if _PROBE.get() is not None:
        state = load_weights(name, key)
        if state is None:
            raise WouldTrain(name, key)
        return state, False

    def make():
        state = train()
        faults.point("model-trained")
        save_weights(name, key, state)   # a refused write (WriteError) ends the session
        faults.point("model-committed")
        return state

    return _store().get_or_create(_entry(name, key), lambda: load_weights(name, key), make)


def _adopt(store: BlobStore, name: str, key: str) -> dict | None:
    """A weights file of the layout before (no checksum), re-stored with one; the file is left
    for older versions still running."""
    if isinstance(store.root, CacheURL):   # that layout only ever existed in local folders
        return None
    legacy = store.root / f"{_entry(name, key)}.pt"
    try:
        state = torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception:   # absent (the usual case) or unreadable: a miss
        return None
    if not isinstance(state, dict):
        return None
    save_weights(name, key, state)
    log.info("cached model %s adopted from the layout before", legacy)
    return state


def state_hash(state_dict: dict) -> str:
    """A short content hash of a model's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k]
        digest.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.dequantize() if v.is_quantized else v
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.detach().contiguous().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]
