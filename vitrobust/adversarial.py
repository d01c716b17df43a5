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

A set is made and stored in *shards* of at most ``$VITROBUST_SHARD_IMAGES`` images (default
1,000): each shard is its own cache entry, with its own seed (the attack's seed plus the shard's
first image index), so a shard is one unit of distributed work (:mod:`vitrobust.planner`) and a
serial run makes the same shards, hence the same images, as a distributed one. A set of one
shard (every set up to that size, and every universal set: its perturbation is fitted on the
whole fit split) has exactly the key material and the seed of an unsharded set, so caches made
before shards existed stay valid.
"""
from __future__ import annotations

import copy
import io
import logging
import os
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

log = logging.getLogger(__name__)

GRADIENT_PROBE = 32   # images on which input gradients are checked before a white-box attack
SHARD_IMAGES_ENV = "VITROBUST_SHARD_IMAGES"
SHARD_IMAGES = 1000   # default images per shard (part of every multi-shard key: changing it remakes sets)


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


@dataclass(frozen=True)
class Shard:
    """Images ``start:stop`` of a set: one cache entry, named by ``key``."""

    start: int
    stop: int
    material: dict
    key: str


@dataclass(frozen=True)
class SetPlan:
    """What a set is, known without attacking: its key, strategy, threat model and shards."""

    key: str                   # of the whole set (a one-shard set: its shard's key)
    strategy: str
    threat_model: dict
    universal: bool
    shards: tuple


def shard_images() -> int:
    """Images per shard: ``$VITROBUST_SHARD_IMAGES``, else :data:`SHARD_IMAGES`."""
    raw = os.environ.get(SHARD_IMAGES_ENV, "")
    try:
        value = int(raw) if raw else SHARD_IMAGES
    except ValueError:
        raise VitrobustError(f"${SHARD_IMAGES_ENV}={raw!r}: not a whole number of images") from None
    if value < 1:
        raise VitrobustError(f"${SHARD_IMAGES_ENV}={raw!r}: must be at least 1")
    return value


def shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[(0, size), (size, 2 * size), ..., (k, n)]``; ``[(0, n)]`` when ``n <= size``."""
    return [(start, min(start + size, n)) for start in range(0, n, size)] or [(0, 0)]


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
        self._plans: dict[tuple, SetPlan] = {}
        self._shards: dict[str, dict[str, torch.Tensor]] = {}   # shard key -> stored tensors

    def get(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> AdversarialSet:
        """The whole set: every shard made or read, joined."""
        key = (source, attack, data_slice)
        if key not in self._sets:
            plan = self.plan(source, attack, data_slice)
            parts = [self.shard(source, attack, data_slice, shard) for shard in plan.shards]
            images = parts[0]["adv"] if len(parts) == 1 else torch.cat([p["adv"] for p in parts])
            delta_path = (_save_delta(self.cache.artifact_dir, plan.key, parts[0]["delta"])
                          if "delta" in parts[0] else None)
            self._sets[key] = AdversarialSet(images, plan.strategy, plan.threat_model, plan.key, delta_path)
        return self._sets[key]

    def plan(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice) -> SetPlan:
        """The set's key, strategy, threat model and shards, without attacking (builds the
        models and loads the data it names)."""
        key = (source, attack, data_slice)
        if key not in self._plans:
            material, instance, _, label, data, _ = self._prepare(source, attack, data_slice)
            ranges = [(0, len(data))] if instance.universal else shard_ranges(len(data), shard_images())
            if len(ranges) == 1:
                shards = (Shard(0, len(data), material, self.cache.key(material)),)
            else:
                shards = tuple(Shard(a, b, m, self.cache.key(m)) for a, b in ranges
                               for m in [{**material, "shard": [a, b], "shard_of": len(data)}])
            whole = {**material, "shards": [[s.start, s.stop] for s in shards]} if len(shards) > 1 else material
            self._plans[key] = SetPlan(self.cache.key(whole), label, instance.threat_model(),
                                       instance.universal, shards)
        return self._plans[key]

    def shard(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice, shard: Shard) -> dict:
        """One shard's stored tensors (``adv``, and ``delta`` for a universal set): read from
        the cache, or made (and stored) now."""
        if shard.key not in self._shards:
            self._shards[shard.key] = self._make(source, attack, data_slice, shard)
        return self._shards[shard.key]

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

    def _make(self, source: ModelName, attack: AttackConfig, data_slice: DataSlice, shard: Shard) -> dict:
        _, instance, attacked, _, data, fit = self._prepare(source, attack, data_slice)
        device = self.attack_device(attacked)
        if shard.start or shard.stop < len(data):   # one shard of several: its own seed
            instance = copy.copy(instance)
            instance.seed = instance.seed + shard.start
            data = data.take(torch.arange(shard.start, shard.stop, device="cpu"))
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
        return self.cache.get_or_create(shard.material, create)

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
    whatever the session (a salted ``hash()`` made a new file every session).

    A file already there is kept only when it holds exactly these bytes (the delta comes from
    the checksummed adversarial cache): a truncated, altered or foreign file is one warning line
    and is rewritten, never shown as this set's perturbation. A write the filesystem refuses is
    a warning too; the report then says it cannot read the file, the run keeps its numbers."""
    path = Path(folder) / f"uap-{cache_key[:24]}.npy"
    buffer = io.BytesIO()
    np.save(buffer, delta.squeeze(0).numpy())
    expected = buffer.getvalue()
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        found = None
    except OSError as exc:   # a folder or an unreadable file under the name
        found, why = b"", exc.strerror or str(exc)
    else:
        why = (f"{len(found)} bytes, the cached one has {len(expected)}" if len(found) != len(expected)
               else "its bytes differ from the cached one")
    if found == expected:
        return str(path)
    if found is not None:
        log.warning("UAP perturbation %s does not hold the cached delta (%s); rewriting it", path, why)
    atomic_write(path, lambda tmp: tmp.write_bytes(expected))   # refused: WriteError ends the session
    return str(path)
