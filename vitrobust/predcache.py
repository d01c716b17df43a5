"""The predictions cache: each model's predicted class for every image of an input set, made
once and then read by every check, every later run and every other process.

Scoring is most of a warm run (every target model over every clean slice and adversarial set),
and it is the part of a distributed run that must happen where the adversarial images are made,
so that the images never travel (:mod:`vitrobust.executor_ray`). An entry is named by what
fixes the predictions:

- the model: its weight hash (which covers the compression: an INT8 or pruned variant has its
  own) and its name;
- the inputs: a clean data slice (its fingerprint, the image size and the shard of it) or an
  adversarial shard (its cache key, :mod:`vitrobust.adversarial`);
- where it ran: the device type and the precision (a CUDA or bf16 run can flip a near tie).

The value is a 1-D ``int64`` tensor of predicted classes, stored by the protocol of
:mod:`vitrobust.blobstore` (content-hashed blob, manifest written last, checksum on read, a
damaged entry is one warning line and is rebuilt, one maker per entry across processes).
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from .advcache import key_entry, material_key
from .blobstore import dumps, loads
from .objectstore import as_root, open_store

log = logging.getLogger(__name__)

FORMAT = 1   # bump when what a prediction means changes (it is key material)


class PredCache:
    """Predicted classes on disk, keyed by (model, inputs, device, precision)."""

    def __init__(self, root):
        self.root = as_root(root)
        self.store = open_store(self.root, suffix=".pt", what="predictions cache entry")
        self.stats = {"generated": 0, "reused": 0}   # by get_or_create, for the run record

    @staticmethod
    def material(model, inputs: dict, device: str, precision: str) -> dict:
        """The key material of ``model``'s predictions on ``inputs`` (see the module docstring)."""
        return {"model": model.info.weight_hash, "model_name": model.info.name, "inputs": inputs,
                "device": device, "precision": precision}

    @staticmethod
    def key(material: dict) -> str:
        return material_key(FORMAT, material)

    def entry(self, material: dict) -> str:
        return key_entry(self.key(material))

    def has(self, material: dict) -> bool:
        return self.store.has(self.entry(material))

    def get(self, material: dict) -> torch.Tensor | None:
        """The stored predictions, or None when absent or damaged (damage is logged)."""
        # a blob that is whole but not predictions is damage too: one warning, rebuilt
        found = self.store.get(self.entry(material), decode=lambda data: _predictions(loads(data)))
        return None if found is None else found[0]

    def get_or_create(self, material: dict, create: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The entry for ``material``, or ``create()``'s predictions, stored. Across processes
        ``create`` runs once: the others wait for the entry's lock, then read it."""
        def make():
            predictions = _predictions({"predictions": create()})
            # a refused write (WriteError) ends the session (vitrobust.collect)
            self.store.put(self.entry(material), dumps({"predictions": predictions}),
                           {"material": material, "images": len(predictions)})
            return predictions

        predictions, made = self.store.get_or_create(self.entry(material), lambda: self.get(material), make)
        self.stats["generated" if made else "reused"] += 1
        return predictions


def _predictions(loaded) -> torch.Tensor:
    value = loaded.get("predictions") if isinstance(loaded, dict) else None
    if not isinstance(value, torch.Tensor) or value.dim() != 1:
        raise ValueError("not a 1-D tensor of predicted classes")
    return value.detach().to("cpu", torch.int64).contiguous()
