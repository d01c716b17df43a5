"""Adversarial sets: made once per (source weights, threat model, strategy, data slice), then
read from the on-disk cache by every target, every check and every later session.

An :class:`AttackConfig` is an attack as a spec declares it (hashable, so it keys caches); the
:class:`AdversarialSets` of a session turns (source model, attack, slice) into adversarial images
through :meth:`vitrobust.advcache.AdvCache.get_or_create`, the one way sets are made and read.

Attacks run on the session's device (a CPU-pinned model, INT8, is attacked on the CPU) under its
precision. The cache key holds the device type and precision only when they are not the
default CPU / fp32: the key material of a CPU fp32 run is the one of vitrobust 0.1, so caches
made before devices existed stay valid. A CUDA out-of-memory halves the attack's batch and
retries; the halving is filed as a RunWarning (random attacks draw per batch, so it can change
the set).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import sanity
from .advcache import AdvCache
from .attacks import make_attack, resolve_strategy
from .dataslice import DataSlice
from .device import DEFAULT_PRECISION, autocast, halving
from .errors import VitrobustError
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

    def __init__(self, cache: AdvCache, model: Callable, data: Callable, warn: Callable, *,
                 device=None, precision: str = DEFAULT_PRECISION):
        self.cache, self._model, self._data, self._warn = cache, model, data, warn
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.precision = precision
        self._sets: dict[tuple, AdversarialSet] = {}

    def get(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> AdversarialSet:
        key = (source, attack, data_slice)
        if key not in self._sets:
            self._sets[key] = self._make(source, attack, data_slice)
        return self._sets[key]

    def material(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> dict:
        """The cache key material of the set :meth:`get` makes or reads for these arguments,
        without attacking (:mod:`vitrobust.planner` asks it: a planned unit is done iff the
        cache holds this key). Builds the models and loads the data it names."""
        return self._prepare(source, attack, data_slice)[0]

    def _prepare(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice):
        """``(material, attack instance, model attacked, strategy label, data, fit data)``."""
        model = self._model(source)
        instance = attack.build()
        attacked, label = resolve_strategy(instance, model, attack.strategy, self._model)
        data = self._data(data_slice, model.info.input_size)
        # the key material of vitrobust 0.1: unchanged, so caches built before stay valid
        material = {"source": attacked.info.weight_hash, "source_name": str(source),
                    "threat_model": instance.threat_model(), "strategy": label,
                    "data": data.fingerprint, "data_key": data_slice.key}
        device = self.attack_device(attacked)
        if device.type != "cpu" or self.precision != DEFAULT_PRECISION:
            material.update(device=device.type, precision=self.precision)
        fit = None
        if instance.universal:
            fit = self._data(data_slice.fit_slice(), model.info.input_size)
            if fit.name == data.name:   # a folder without test/ serves "test" from val/
                raise VitrobustError(
                    f"{attack.name}: the universal perturbation would be fitted on the images it is "
                    f"scored on ({data.name} serves split {data_slice.split!r} and fit_split "
                    f"{data_slice.fit_split!r}); set data.fit_split to another split, e.g. train")
            material["fit_data"] = fit.fingerprint
        return material, instance, attacked, label, data, fit

    def _make(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> AdversarialSet:
        material, instance, attacked, label, data, fit = self._prepare(source, attack, data_slice)
        device = self.attack_device(attacked)
        if instance.universal:
            def run(attack):
                delta, adv = attack.fit_eval(attacked, fit, data, device=device)
                return {"adv": adv, "delta": delta}
        else:
            def run(attack):
                return {"adv": attack(attacked, data.images, data.labels, device=device)}

        def create():
            with autocast(self.device, self.precision):
                made, _ = halving(lambda batch: run(_with_batch(instance, batch)), instance.batch_size,
                                  lambda old, new: self._halved(source, attack, old, new))
            return made

        if instance.needs_grad and attacked.info.differentiable:   # AutoAttack-style: usable gradients?
            def probe(n):   # fewer images on CUDA out-of-memory: it is a probe, not a result
                return sanity.gradient_warnings(attacked, data.images_at(slice(0, n)).to(device), data.labels[:n].to(device))
            with autocast(self.device, self.precision):
                self._warn(halving(probe, GRADIENT_PROBE)[0], source)
        stored = self.cache.get_or_create(material, create)
        cache_key = self.cache.key(material)
        delta_path = _save_delta(self.cache.artifact_dir, cache_key, stored["delta"]) if "delta" in stored else None
        return AdversarialSet(stored["adv"], label, instance.threat_model(), cache_key, delta_path)

    def attack_device(self, attacked) -> torch.device:
        """Where an attack on ``attacked`` runs: its pinned device (INT8: the CPU), else the
        session's (a straight-through model computes its gradients on the surrogate's)."""
        pinned = getattr(attacked.info, "pinned_device", None)
        return torch.device(pinned) if pinned else self.device

    def _halved(self, source: ModelName, attack: AttackConfig, old: int, new: int) -> None:
        self._warn([{"kind": "out-of-memory",
                     "message": f"{source}: CUDA out of memory attacking with {attack.name} at batch "
                                f"{old}; retried at batch {new} (random attacks draw per batch: the "
                                f"set can differ from one made at batch {old})"}], source)


def _with_batch(attack, batch_size: int):
    """``attack`` at another batch size (a copy: the configured one keeps its threat model)."""
    if batch_size == attack.batch_size:
        return attack
    smaller = copy.copy(attack)
    smaller.batch_size = batch_size
    return smaller


def _save_delta(folder: Path, cache_key: str, delta: torch.Tensor) -> str:
    """The perturbation as ``.npy`` for the report, named by its cache key: one file per set,
    whatever the session (a salted ``hash()`` made a new file every session)."""
    path = Path(folder) / f"uap-{cache_key[:24]}.npy"
    if not path.exists():
        def write(tmp):
            with open(tmp, "wb") as fh:
                np.save(fh, delta.squeeze(0).numpy())
        atomic_write(path, write)
    return str(path)
