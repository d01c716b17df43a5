"""Adversarial sets: made once per (source weights, threat model, strategy, data slice), then
read from the on-disk cache by every target, every check and every later session.

An :class:`AttackConfig` is an attack as a spec declares it (hashable, so it keys caches); the
:class:`AdversarialSets` of a session turns (source model, attack, slice) into adversarial images
through :meth:`vitrobust.advcache.AdvCache.get_or_create`, the one way sets are made and read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import sanity
from .advcache import AdvCache
from .attacks import make_attack, resolve_strategy
from .dataslice import DataSlice
from .fileio import atomic_write
from .names import ModelName

GRADIENT_PROBE = 32   # images on which input gradients are checked before a white-box attack


@dataclass(frozen=True)
class AttackConfig:
    """Registry name, parameters and strategy of one spec attack."""

    name: str
    params: tuple
    strategy: str | None = None

    @classmethod
    def from_spec(cls, entry: dict) -> "AttackConfig":
        params = {k: v for k, v in entry.items() if k not in ("name", "strategy")}
        return cls(entry["name"], tuple(sorted(params.items())), entry.get("strategy"))

    def build(self):
        return make_attack(self.name, **dict(self.params))


@dataclass(frozen=True)
class AdversarialSet:
    images: torch.Tensor       # one adversarial input per image of the slice
    strategy: str              # how the source was attacked: white-box, transfer:<m>, ...
    threat_model: dict
    key: str                   # the adversarial cache key
    delta_path: str | None     # universal attacks: the fitted perturbation (.npy)


class AdversarialSets:
    """The session's adversarial sets, in memory and on disk.

    ``model(name)`` builds a model, ``data(slice, image_size)`` loads a slice, ``warn(warnings,
    model)`` files sanity warnings: the engine provides all three.
    """

    def __init__(self, cache: AdvCache, model: Callable, data: Callable, warn: Callable):
        self.cache, self._model, self._data, self._warn = cache, model, data, warn
        self._sets: dict[tuple, AdversarialSet] = {}

    def get(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> AdversarialSet:
        key = (source, attack, data_slice)
        if key not in self._sets:
            self._sets[key] = self._make(source, attack, data_slice)
        return self._sets[key]

    def _make(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> AdversarialSet:
        model = self._model(source)
        instance = attack.build()
        attacked, label = resolve_strategy(instance, model, attack.strategy, self._model)
        data = self._data(data_slice, model.info.input_size)
        # the key material of vitrobust 0.1: unchanged, so caches built before stay valid
        material = {"source": attacked.info.weight_hash, "source_name": str(source),
                    "threat_model": instance.threat_model(), "strategy": label,
                    "data": data.fingerprint, "data_key": data_slice.key}
        if instance.universal:
            fit = self._data(data_slice.fit_slice(), model.info.input_size)
            material["fit_data"] = fit.fingerprint

            def create():
                delta, adv = instance.fit_eval(attacked, fit, data)
                return {"adv": adv, "delta": delta}
        else:
            def create():
                return {"adv": instance(attacked, data.images, data.labels)}

        if instance.needs_grad and attacked.info.differentiable:   # AutoAttack-style: usable gradients?
            head = slice(0, GRADIENT_PROBE)
            self._warn(sanity.gradient_warnings(attacked, data.images[head], data.labels[head]), source)
        stored = self.cache.get_or_create(material, create)
        cache_key = self.cache.key(material)
        delta_path = _save_delta(self.cache.root, cache_key, stored["delta"]) if "delta" in stored else None
        return AdversarialSet(stored["adv"], label, instance.threat_model(), cache_key, delta_path)


def _save_delta(root: Path, cache_key: str, delta: torch.Tensor) -> str:
    """The perturbation as ``.npy`` for the report, named by its cache key: one file per set,
    whatever the session (a salted ``hash()`` made a new file every session)."""
    path = Path(root) / "artifacts" / f"uap-{cache_key[:24]}.npy"
    if not path.exists():
        def write(tmp):
            with open(tmp, "wb") as fh:
                np.save(fh, delta.squeeze(0).numpy())
        atomic_write(path, write)
    return str(path)
