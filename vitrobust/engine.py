"""The engine: turns the measures a check names into numbers, computing each one once.

It joins the torch side (zoo, compress, attacks, metrics) with the spec side (expr, verdict):

- models are built once per session (``zoo.load_model``, which trains and caches on first use);
- clean predictions are computed once per (model, data slice);
- adversarial images are generated once per (source model, attack threat model, strategy,
  data slice) and kept on disk in the adversarial cache, so every target, every check and the
  next session reuse them;
- each measurement is memoized and also recorded for the report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics, sanity
from .attacks import AttackError, make_attack
from .data import DEFAULT_SOURCE, Dataset, load_dataset
from .expr import Measure
from .verdict import Observation, Verdict, decide
from .zoo import load_model, split_name
from .zoo.wrapper import ModelWrapper

RATE_KINDS = ("asr", "transfer", "acc")
DEFAULT_LIMIT = 450          # the whole digits test split
DEFAULT_FIT_SPLIT = "val"    # universal perturbations are fitted here, scored on the spec's split


class EngineError(ValueError):
    """A request the engine cannot satisfy (bad zoo entry, data, attack or strategy); one line."""


@dataclass
class ZooConfig:
    """Where spec model names point: aliases to other architectures and local checkpoints.

    ``models: {deit_small: {arch: deit_small_patch16_224, checkpoint: /ckpt/deit_s.pth}}`` makes
    every spec's ``deit_small`` (and ``deit_small:int8``...) use that model; ``data`` replaces the
    default data source (an ImageFolder path). Specs stay unchanged.
    """

    models: dict[str, dict] = field(default_factory=dict)
    data: str | None = None
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> "ZooConfig":
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise EngineError(f"{path}: cannot read zoo config ({exc.__class__.__name__})") from None
        unknown = set(raw) - {"models", "data"}
        if unknown:
            raise EngineError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: data, models)")
        models = raw.get("models") or {}
        for alias, entry in models.items():
            if not isinstance(entry, dict) or "arch" not in entry:
                raise EngineError(f"{path}: models.{alias}: needs an 'arch' (a registered model name)")
            extra = set(entry) - {"arch", "checkpoint"}
            if extra:
                raise EngineError(f"{path}: models.{alias}: unknown key {sorted(extra)[0]!r} (known: arch, checkpoint)")
        return cls(models=models, data=raw.get("data"), path=str(path))

    def resolve(self, name: str) -> tuple[str, str | None]:
        """(registered name with suffixes, checkpoint for its base) for a spec's model name."""
        base, suffixes = split_name(name)
        entry = self.models.get(base)
        if entry is None:
            return name, None
        return ":".join([entry["arch"], *suffixes]), entry.get("checkpoint")


@dataclass(frozen=True)
class AttackConfig:
    """An attack as a spec declares it: registry name, parameters, strategy for gradient-free
    targets. Hashable, so it keys the caches."""

    name: str
    params: tuple
    strategy: str | None = None

    @classmethod
    def from_spec(cls, entry: dict) -> "AttackConfig":
        params = {k: v for k, v in entry.items() if k not in ("name", "strategy")}
        return cls(entry["name"], tuple(sorted(params.items())), entry.get("strategy"))

    def build(self):
        return make_attack(self.name, **dict(self.params))


@dataclass
class DataConfig:
    source: str
    split: str = "test"
    limit: int | None = DEFAULT_LIMIT

    @property
    def key(self) -> str:
        return f"{self.source}/{self.split}[:{self.limit}]"


class Engine:
    """Session-wide measurement cache. One per pytest session or CLI run."""

    def __init__(self, *, data_source: str | None = None, zoo: ZooConfig | None = None,
                 adv_cache_dir: str | Path | None = None, progress: bool = True,
                 confidence: float = 0.95, max_images: int | None = None):
        self.zoo = zoo or ZooConfig()
        self.max_images = max_images   # caps every spec's image count (a quick smoke run)
        self.data_source = data_source or self.zoo.data or DEFAULT_SOURCE
        self.progress = progress
        self.confidence = confidence
        self.adv_cache = _adv_cache(adv_cache_dir)
        self._models: dict[str, ModelWrapper] = {}
        self._data: dict[tuple, Dataset] = {}
        self._clean: dict[tuple, torch.Tensor] = {}
        self._adv: dict[tuple, tuple[torch.Tensor, str]] = {}
        self._memo: dict[tuple, Observation] = {}
        self.measurements: dict[tuple, dict] = {}
        self.model_records: dict[str, dict] = {}
        self.artifacts: dict[str, str] = {}
        self.warnings: list[dict] = []
        self.cache_stats = {"adversarial_generated": 0, "adversarial_reused": 0}

    # -- building blocks ----------------------------------------------------------------------
    def model(self, name: str) -> ModelWrapper:
        if name not in self._models:
            arch, checkpoint = self.zoo.resolve(name)
            try:
                model = load_model(arch, checkpoint=checkpoint, progress=self.progress)
            except (KeyError, ValueError) as exc:
                raise EngineError(f"model {name!r}: {exc.args[0] if exc.args else exc}") from None
            self._models[name] = model
            probe = torch.rand(8, 3, model.info.input_size, model.info.input_size,
                               generator=torch.Generator().manual_seed(0))
            self._warn(sanity.determinism_warning(model, probe), name)
        return self._models[name]

    def _warn(self, warnings: list[dict], model: str) -> None:
        for w in warnings:
            w = {**w, "model": model}
            if w not in self.warnings:
                self.warnings.append(w)

    def data(self, config: DataConfig, image_size: int) -> Dataset:
        key = (config.source, config.split, config.limit, image_size)
        if key not in self._data:
            self._data[key] = load_dataset(config.source, config.split, config.limit,
                                           image_size=image_size)
        return self._data[key]

    def data_config(self, spec_data: dict | None) -> DataConfig:
        spec_data = spec_data or {}
        source = self.zoo.data or spec_data.get("source") or self.data_source
        if self.data_source != DEFAULT_SOURCE:   # the command line / zoo config wins over the spec
            source = self.data_source
        limit = spec_data.get("limit", DEFAULT_LIMIT)
        if self.max_images is not None:
            limit = self.max_images if limit is None else min(limit, self.max_images)
        return DataConfig(source, spec_data.get("split", "test"), limit)

    def clean_correct(self, name: str, config: DataConfig) -> torch.Tensor:
        model = self.model(name)
        key = (name, config.key)
        if key not in self._clean:
            data = self.data(config, model.info.input_size)
            self._clean[key] = metrics.correct(model, data.images, data.labels)
        return self._clean[key]

    def adversarial(self, source: str, attack: AttackConfig, config: DataConfig) -> torch.Tensor:
        """Adversarial images made on ``source`` for the data slice (memory, then disk cache)."""
        key = (source, attack, config.key)
        if key in self._adv:
            return self._adv[key][0]
        from .attacks.strategy import resolve_strategy

        model = self.model(source)
        try:
            instance = attack.build()
            target_of_attack, label = resolve_strategy(instance, model, attack.strategy, self.model)
        except AttackError as exc:
            raise EngineError(str(exc)) from None
        data = self.data(config, model.info.input_size)
        material = {"source": target_of_attack.info.weight_hash, "source_name": source,
                    "threat_model": instance.threat_model(), "strategy": label,
                    "data": data.fingerprint, "data_key": config.key}
        if getattr(instance, "universal", False):
            fit = self.data(DataConfig(config.source, DEFAULT_FIT_SPLIT, None), model.info.input_size)
            material["fit_data"] = fit.fingerprint

            def create():
                delta, adv = instance.fit_eval(target_of_attack, fit, data)
                return {"adv": adv, "delta": delta}
        else:
            def create():
                return {"adv": instance(target_of_attack, data.images, data.labels)}

        if instance.needs_grad and target_of_attack.info.differentiable:
            head = slice(0, 32)   # AutoAttack-style check: gradients must be usable
            self._warn(sanity.gradient_warnings(target_of_attack, data.images[head], data.labels[head]), source)
        stored = self.adv_cache.get(material)
        if stored is None:
            stored = create()
            self.adv_cache.put(material, stored)
            self.cache_stats["adversarial_generated"] += 1
        else:
            self.cache_stats["adversarial_reused"] += 1
        if "delta" in stored:
            self.artifacts[f"uap:{source}:{attack.name}"] = self._save_delta(source, attack, stored["delta"])
        self._adv[key] = (stored["adv"], label)
        return stored["adv"]

    def _save_delta(self, source: str, attack: AttackConfig, delta: torch.Tensor) -> str:
        path = self.adv_cache.root / "artifacts" / f"uap-{source.replace(':', '_')}-{attack.name}-{abs(hash(attack)) % 10**8}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, delta.squeeze(0).numpy())
        return str(path)

    # -- measurements ---------------------------------------------------------------------------
    def observe(self, measure: Measure, attacks: dict[str, dict], spec_data: dict | None,
                spec_id: str = "") -> Observation:
        """The observation for one measure of a check, memoized for the session."""
        config = self.data_config(spec_data)
        configs = tuple(AttackConfig.from_spec(attacks[a]) for a in measure.attack.names) if measure.attack else ()
        key = (measure.kind, measure.source, measure.model, configs, config.key)
        if key not in self._memo:
            self._memo[key] = self._measure(measure, configs, config, spec_id)
        return self._memo[key]

    def _measure(self, measure: Measure, attacks: tuple, config: DataConfig, spec_id: str) -> Observation:
        kind, target = measure.kind, measure.model
        record = {"key": measure.key, "kind": kind, "spec": spec_id, "source": measure.source,
                  "target": target, "attack": None, "threat_model": None, "strategy": None,
                  "data": config.key, "k": None, "n": None, "interval": None,
                  "robust_acc": None, "clean_acc": None, "outcomes": None}
        if kind in RATE_KINDS:
            clean = self.clean_correct(target, config)
            if kind == "acc":
                rate = metrics.accuracy(clean)
            else:
                source = measure.source or target
                fooled_any = None
                strategies, threat_models = [], []
                for attack in attacks:
                    adv = self.adversarial(source, attack, config)
                    strategies.append(self._adv[(source, attack, config.key)][1])
                    threat_models.append(attack.build().threat_model())
                    data = self.data(config, self.model(target).info.input_size)
                    adv_correct = metrics.correct(self.model(target), adv, data.labels)
                    fooled = ~adv_correct
                    fooled_any = fooled if fooled_any is None else (fooled_any | fooled)
                rate = metrics.attack_success(clean, ~fooled_any)
                record.update(attack=",".join(a.name for a in attacks) if len(attacks) > 1 else attacks[0].name,
                              threat_model=threat_models[0] if len(threat_models) == 1 else threat_models,
                              strategy=",".join(strategies),
                              robust_acc=float((clean & ~fooled_any).float().mean()),
                              clean_acc=float(clean.float().mean()))
            from .stats import wilson_interval

            record.update(value=rate.value, k=rate.k, n=rate.n,
                          interval=list(wilson_interval(rate.k, rate.n, self.confidence)),
                          outcomes=[None if math.isnan(v) else int(v) for v in rate.outcomes.tolist()])
            observation = Observation(rate.value, rate.outcomes.numpy().astype(float))
        else:
            value = self.model_summary(target)[kind]
            record.update(value=value)
            observation = Observation(float(value), None)
        self.measurements[(measure.key, config.key, attacks)] = record
        return observation

    def model_summary(self, name: str) -> dict:
        """Params, size, GFLOPs, throughput of a model (computed once), for checks and report."""
        if name not in self.model_records:
            model = self.model(name)
            self.model_records[name] = {
                "weight_hash": model.info.weight_hash, "family": model.info.family,
                **metrics.efficiency(model),
                "differentiable": model.info.differentiable, "meta": dict(model.info.meta),
                "build_seconds": model.info.build_seconds, "clean_acc": None,
                "input_size": model.info.input_size,
            }
        return self.model_records[name]

    def _throughput_side_by_side(self, timed: list[Measure], config: DataConfig) -> dict:
        names = list(dict.fromkeys(m.model for m in timed))
        speeds = dict(zip(names, metrics.throughput_side_by_side([self.model(n) for n in names])))
        for name, speed in speeds.items():
            self.model_records[name]["throughput"] = speed
        for m in timed:
            self.measurements[(m.key, config.key, ())].update(value=speeds[m.model])
        return {m: Observation(speeds[m.model], None) for m in timed}

    # -- checks ---------------------------------------------------------------------------------
    def evaluate(self, node, attacks: dict[str, dict], spec_data: dict | None, spec_id: str = "",
                 confidence: float | None = None) -> Verdict:
        from .expr import measures

        observations = {m: self.observe(m, attacks, spec_data, spec_id) for m in measures(node)}
        timed = [m for m in observations if m.kind == "throughput"]
        if len(timed) > 1:   # a comparison of speeds: time the models side by side, now
            observations.update(self._throughput_side_by_side(timed, self.data_config(spec_data)))
        for m in measures(node):   # every model a check touches gets a row in the models table
            for name in filter(None, (m.model, m.source)):
                self.model_summary(name)
        return decide(node, observations, confidence or self.confidence)

    def _compare_attack_kinds(self) -> None:
        """Warn where a black-box attack beat the white-box ones of its budget (per model and data)."""
        groups: dict[tuple, dict] = {}
        for rec in self.measurements.values():
            if rec["kind"] == "asr" and rec["attack"] and "," not in rec["attack"] \
                    and rec.get("strategy") in ("white-box", "black-box"):
                threat = rec.get("threat_model") or {}
                groups.setdefault((rec["target"], rec["data"]), {})[rec["attack"]] = (
                    rec["value"], rec["strategy"] == "white-box", threat.get("norm"), threat.get("eps"))
        for (name, _), results in groups.items():
            if self.model(name).info.differentiable:
                self._warn(sanity.black_box_beats_white_box(results, name), name)

    def run_record_parts(self) -> dict:
        """Measurements, models, artifacts and warnings for the run record (see INTERFACES.md)."""
        self._compare_attack_kinds()
        for name, rec in self.model_records.items():
            for (mname, data_key), clean in self._clean.items():
                if mname == name:
                    rec["clean_acc"] = float(clean.float().mean())
        return {"measurements": list(self.measurements.values()), "models": self.model_records,
                "cache": dict(self.cache_stats),
                "artifacts": dict(self.artifacts), "warnings": list(self.warnings)}


def _adv_cache(root):
    from .advcache import AdvCache
    from .zoo.cache import cache_root

    return AdvCache(Path(root) if root else cache_root() / "adversarial")
