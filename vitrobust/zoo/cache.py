"""The on-disk model cache: trained weights keyed by recipe, data, code and torch versions."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .. import __version__
from ..fileio import atomic_write

# Bump when a change to training code should invalidate every cached model.
TRAINING_CODE_VERSION = 1


def cache_root() -> Path:
    """``$VITROBUST_CACHE`` or ``~/.cache/vitrobust``."""
    root = os.environ.get("VITROBUST_CACHE") or Path.home() / ".cache" / "vitrobust"
    return Path(root)


def cache_key(name: str, recipe: dict, data_fingerprint: str, **extra) -> str:
    material = {"name": name, "recipe": recipe, "data": data_fingerprint, "extra": extra,
                "vitrobust": __version__, "training_code": TRAINING_CODE_VERSION,
                "torch": torch.__version__.split("+")[0]}
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _path(name: str, key: str) -> Path:
    return cache_root() / "models" / f"{name.replace(':', '__')}-{key}.pt"


def load_weights(name: str, key: str) -> dict | None:
    """The cached state dict, or None when absent or unreadable (then it is rebuilt)."""
    path = _path(name, key)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: treat as a miss and rebuild
        return None


def save_weights(name: str, key: str, payload: dict) -> Path:
    """Write atomically: a crash mid-write never leaves a half file under the final name, and
    two processes training the same model never share a temporary file."""
    return atomic_write(_path(name, key), lambda tmp: torch.save(payload, tmp))


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
