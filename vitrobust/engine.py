"""The engine: turns the measures a check names into numbers, computing each one once.

It joins the torch side (zoo, compress, attacks, metrics) with the spec side (expr, verdict,
measures):

- models are built once per session (``zoo.load_model`` trains and caches on first use);
- adversarial images are made once per (source model, threat model, strategy, data shard) and
  kept on disk (:mod:`vitrobust.adversarial`), so every target, check and session reuses them;
- every model's predictions, on a clean slice and on each adversarial shard, are made once and
  kept on disk too (:mod:`vitrobust.predcache`): a warm run reads predictions, and loads no
  adversarial images at all;
- each measure is computed by its registered function (:mod:`vitrobust.measures`), memoized,
  and recorded as a :class:`~vitrobust.record.MeasurementRecord` for the run record.

Devices (:mod:`vitrobust.device`): models are placed on the run's device (a pinned model, INT8,
stays on the CPU and its wrapper moves tensors), attacks run there, data stays on the CPU and
moves one batch at a time, and every model call runs under the run's precision (autocast; fp32
is no autocast at all). A CUDA out-of-memory halves the batch and retries, filing a RunWarning;
the smaller batch then stays for that model.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import defaults, metrics, sanity, timings
from .adversarial import AdversarialSets, AttackConfig, shard_images, shard_ranges
from .advcache import AdvCache
from .objectstore import as_root
from .predcache import PredCache
from .data import load_dataset
from .dataslice import DataSlice
from .device import (autocast, check_precision, halving, home_device, place, resolve_device,
                     set_training_device)
from .errors import VitrobustError
from .expr import measures as measures_of
from .measures import Observation, measure_kind
from .names import ModelName
from .profile import Profile
from .replicate import decide_across, replica_node
from .scope import Scope
from .record import DataRecord, MeasurementRecord, ModelRecord, RunWarning
from .stats import wilson_interval
from .verdict import Verdict, decide
from .zoo import load_model
from .zoo.cache import cache_root
from .zoo.checkpoints import check_class_count
from .zoo.config import ZooConfig
from .zoo.wrapper import ModelWrapper

DETERMINISM_PROBE = 8   # images run twice through every model to catch nondeterminism
SCORE_BATCH = 256       # images per model call when scoring (halved on CUDA out-of-memory)
LARGE_INPUT_BATCH = 64  # ... and at most this many above 64x64 inputs


class EngineError(VitrobustError):
    """A request the engine cannot satisfy (a model that does not build, ...); one line."""


class Engine:
    """Session-wide measurement cache. One per pytest session or CLI run."""

    def __init__(self, *, data_source: str | None = None, zoo: ZooConfig | None = None,
                 adv_cache_dir: str | Path | None = None, progress: bool = True,
                 confidence: float = defaults.CONFIDENCE, max_images: int | None = None,
                 device: str | None = None, precision: str | None = None,
                 batch_size: int = SCORE_BATCH, skip_bad_images: bool = False, seeds: int = 1,
                 defer_timings: bool = False, retime: bool = False):
        self.zoo = zoo or ZooConfig()
        # device None: $VITROBUST_DEVICE, else auto. Training follows it: load_model takes no
        # device, so zoo.train.fit reads the process-wide setting made here.
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.batch_size = int(batch_size)
        set_training_device(self.device)
        self._batches: dict[str, int] = {}   # per model: the scoring batch after OOM halvings
        self.max_images = max_images   # caps every spec's image count (a quick smoke run)
        self.skip_bad_images = skip_bad_images   # skip (and record) unreadable folder images
        self.seeds = int(seeds)   # training-seed replicas every check is decided across
        # leave the models table's speeds to a later serial step (a pytest-xdist worker: timed
        # while other workers compute, a speed measures them); a check that names a speed still
        # has it timed when it asks (model_summary)
        self.defer_timings = defer_timings
        self.data_source = data_source or self.zoo.data or defaults.DATA_SOURCE
        self.progress = progress
        self.confidence = confidence
        self.adv_cache = AdvCache(as_root(adv_cache_dir) if adv_cache_dir else cache_root() / "adversarial")
        # beside the adversarial sets: a test's own adversarial folder gets its own predictions
        self.predictions = PredCache(as_root(adv_cache_dir) / "predictions" if adv_cache_dir
                                     else cache_root() / "predictions")
        # speeds are timed once per machine; retime: time them anew (vitrobust.timings)
        self.timings = timings.TimingCache(as_root(adv_cache_dir) / "timings" if adv_cache_dir
                                           else cache_root() / "timings", retime=retime)
        self.adversarial = AdversarialSets(self.adv_cache, self.model, self.data, self._warn,
                                           device=self.device, precision=self.precision)
        self._models: dict[ModelName, ModelWrapper] = {}
        self._data: dict[tuple, object] = {}
        self.data_records: dict[str, DataRecord] = {}
        self._clean: dict[tuple, np.ndarray] = {}
        self._fooled: dict[tuple, np.ndarray] = {}
        self._memo: dict[tuple, Observation] = {}
        self.measurements: dict[tuple, MeasurementRecord] = {}
        self.model_records: dict[str, ModelRecord] = {}
        self.artifacts: dict[str, str] = {}
        self.warnings: list[RunWarning] = []
        self.profile = Profile()   # where the time went (vitrobust.profile)

    # -- building blocks ----------------------------------------------------------------------
    def model(self, name: str) -> ModelWrapper:
        name = ModelName(name)
        if name not in self._models:
            with self.profile.phase("model", str(name)):
                self._models[name] = self._build(name)
        return self._models[name]

    def _build(self, name: ModelName) -> ModelWrapper:
        """Load (or train) ``name``, place it on the device and probe its determinism."""
        arch, checkpoint = self.zoo.resolve(name)
        try:
            model = load_model(arch, checkpoint=checkpoint, progress=self.progress)
        except VitrobustError as exc:   # name the model, unless the message already does
            message = str(exc) if str(exc).startswith(f"{name}:") else f"model {str(name)!r}: {exc}"
            raise EngineError(message) from None
        if model.info.surrogate is not None and name.parent is not None:
            # the surrogate is the parent *as the spec names it*, so a zoo config's alias
            # (and its checkpoint) also reaches the straight-through and transfer strategies
            model.info.surrogate = str(name.parent)
        model = place(model, self.device)
        size = model.info.input_size
        generator = torch.Generator(device="cpu").manual_seed(0)
        probe = torch.rand(DETERMINISM_PROBE, 3, size, size, generator=generator, device="cpu")
        probe = probe.to(home_device(model))
        with self.autocast():   # fewer images on CUDA out-of-memory: it is a probe, not a result
            self._warn(halving(lambda n: sanity.determinism_warning(model, probe[:n]),
                               DETERMINISM_PROBE)[0], name)
        return model

    def autocast(self):
        """The run's precision for model calls (fp32: no autocast at all)."""
        return autocast(self.device, self.precision)

    def prediction_material(self, name: str, inputs: dict) -> dict:
        """The predictions cache's key material for ``name`` on ``inputs``."""
        return PredCache.material(self.model(name), inputs, self.device.type, self.precision)

    def _predictions(self, name: str, inputs: dict, images) -> torch.Tensor:
        """``name``'s predicted class per image of ``inputs`` (the predictions cache's key for
        the images; ``images()`` gives them, called only when the entry is not cached)."""
        return self.predictions.get_or_create(self.prediction_material(name, inputs),
                                              lambda: self._predict(name, images()))

    def _predict(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """Batches move to the model's device one at a time; a CUDA out-of-memory halves the
        batch (for this model from then on) and retries."""
        model = self.model(name)
        with self.profile.phase("scoring", str(name)), self.autocast():
            predicted, self._batches[name] = halving(
                lambda batch: model.predict(images, batch),
                self._batches.get(name, self._first_batch(model)), self._halved(name, "scoring"))
        return predicted

    def _first_batch(self, model: ModelWrapper) -> int:
        """The scoring batch: ``batch_size``, but at most ``LARGE_INPUT_BATCH`` above 64x64 (a
        batch of 256 DeiT activations at 224 holds ~0.75 GB of host memory for DeiT-Ti alone)."""
        if model.info.input_size > 64:
            return min(self.batch_size, LARGE_INPUT_BATCH)
        return self.batch_size

    def _halved(self, name: str, doing: str):
        """What an out-of-memory halving files: a RunWarning naming the model and both batches."""
        def warn(old: int, new: int) -> None:
            self._warn([{"kind": "out-of-memory", "message": f"{name}: CUDA out of memory {doing} at "
                                                             f"batch {old}; retried at batch {new}"}], name)
        return warn

    def _warn(self, warnings: list[dict], model: str) -> None:
        for w in warnings:
            warning = RunWarning(w["kind"], w["message"], str(model))
            if warning not in self.warnings:
                self.warnings.append(warning)

    def data(self, data_slice: DataSlice, image_size: int):
        key = (data_slice.source, data_slice.split, data_slice.limit, image_size)
        if key not in self._data:
            self._data[key] = data = load_dataset(
                data_slice.source, data_slice.split, data_slice.limit, image_size=image_size,
                skip_bad=self.skip_bad_images, progress=self.progress)
            if data_slice.key not in self.data_records:
                self.data_records[data_slice.key] = DataRecord(
                    data_slice.key, data_slice.source, data_slice.split, data_slice.limit, len(data),
                    len(set(data.labels.tolist())), data.num_classes, data.fingerprint,
                    list(data.ids), list(data.skipped))
                if data.skipped:
                    self.warnings.append(RunWarning("skipped-images", f"{data_slice.key}: skipped "
                                                    f"{len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]}"))
        return self._data[key]

    def data_slice(self, spec_data: dict | None) -> DataSlice:
        """The spec's slice; the run's data source (command line / zoo config) wins over the spec's."""
        source = self.zoo.data or (spec_data or {}).get("source") or self.data_source
        if self.data_source != defaults.DATA_SOURCE:
            source = self.data_source
        return DataSlice.for_spec(spec_data, source=source, max_images=self.max_images)

    def clean_correct(self, name: str, data_slice: DataSlice) -> np.ndarray:
        """Per image: is ``name`` right on the clean image?"""
        key = (ModelName(name), data_slice.key)
        if key not in self._clean:
            labels = self.data(data_slice, self.model(name).info.input_size).labels
            predicted = torch.cat([self.clean_predictions(name, data_slice, shard)
                                   for shard in self.clean_shards(name, data_slice)])
            self._clean[key] = (predicted == labels).numpy()
        return self._clean[key]

    def clean_shards(self, name: str, data_slice: DataSlice) -> list[tuple[int, int, dict]]:
        """``(start, stop, inputs)`` of each shard of the clean slice as ``name`` sees it (its
        image size): the shards of the adversarial sets, and the predictions cache's inputs."""
        model = self.model(name)
        data = self.data(data_slice, model.info.input_size)
        check_class_count(model, data.num_classes, data_slice.source)
        inputs = {"clean": data.fingerprint, "data_key": data_slice.key, "image_size": model.info.input_size}
        ranges = shard_ranges(len(data), shard_images())
        if len(ranges) == 1:   # the whole slice
            return [(0, len(data), inputs)]
        return [(a, b, {**inputs, "shard": [a, b]}) for a, b in ranges]

    def clean_predictions(self, name: str, data_slice: DataSlice, shard: tuple) -> torch.Tensor:
        """``name``'s predictions on one clean shard (cached)."""
        start, stop, inputs = shard
        data = self.data(data_slice, self.model(name).info.input_size)
        return self._predictions(name, inputs, lambda: data.pixels[start:stop])

    def adversarial_predictions(self, source: str, target: str, attack: AttackConfig,
                                data_slice: DataSlice, shard) -> torch.Tensor:
        """``target``'s predictions on one adversarial shard (cached); the shard's images are
        made or read only when they are not."""
        return self._predictions(target, {"adversarial": shard.key},
                                 lambda: self._shard_images(source, attack, data_slice, shard))

    def fooled(self, source: str, target: str, attack: AttackConfig, data_slice: DataSlice) -> np.ndarray:
        """Per image: does the input ``attack`` made on ``source`` make ``target`` misclassify?"""
        key = (ModelName(source), ModelName(target), attack, data_slice.key)
        if key not in self._fooled:
            plan = self.adversarial.plan(ModelName(source), attack, data_slice)
            if plan.universal:   # the perturbation's .npy, for the report
                adv = self.adversarial_set(source, attack, data_slice)
                self.artifacts[f"uap:{source}:{attack.name}-{adv.key[:8]}"] = adv.delta_path
            labels = self.data(data_slice, self.model(target).info.input_size).labels
            predicted = torch.cat([self.adversarial_predictions(source, target, attack, data_slice, shard)
                                   for shard in plan.shards])
            self._fooled[key] = (predicted != labels).numpy()
        return self._fooled[key]

    def adversarial_set(self, source: str, attack: AttackConfig, data_slice: DataSlice):
        """The adversarial set ``attack`` makes on ``source``, whole (cached; timed when made)."""
        with self.profile.phase("adversarial", f"{source} {attack.name}"):
            return self.adversarial.get(ModelName(source), attack, data_slice)

    def _shard_images(self, source: str, attack: AttackConfig, data_slice: DataSlice, shard) -> torch.Tensor:
        """One shard's adversarial images (cached; timed when made)."""
        with self.profile.phase("adversarial", f"{source} {attack.name}"):
            return self.adversarial.shard(ModelName(source), attack, data_slice, shard)["adv"]

    def model_summary(self, name: str, timed: bool | None = None) -> ModelRecord:
        """Params, size, GFLOPs, throughput of a model (computed once), for checks and report.

        ``timed``: have the throughput now if it is not yet (default: unless the engine defers
        timings, which leaves it None for a later serial step). Timed once per machine
        (:mod:`vitrobust.timings`), then read from the timing cache."""
        timed = not self.defer_timings if timed is None else timed
        if name not in self.model_records:
            model = self.model(name)
            info = model.info
            with self.profile.phase("summary", str(name)):
                efficiency = metrics.efficiency(model, timed=False)
            self.model_records[name] = ModelRecord(
                name=str(name), weight_hash=info.weight_hash, family=info.family,
                device=str(home_device(model)), **efficiency, differentiable=info.differentiable,
                input_size=info.input_size, build_seconds=info.build_seconds, meta=dict(info.meta))
        record = self.model_records[name]
        if timed and record.throughput is None:   # summarized untimed before: timed now
            [record.throughput], [record.throughput_batch] = self._speeds([name], [record.throughput_batch],
                                                                          timings.TABLE)
        return record

    def _speeds(self, names: list[str], batches: list[int], procedure: str) -> tuple[list[float], list[int]]:
        """(throughputs, batch sizes used) of ``names``: from the timing cache, or timed now
        alone (``TABLE``, halving the batch on CUDA out-of-memory) or side by side."""
        models = [self.model(n) for n in names]

        def time():
            with self.profile.phase("timing", " vs ".join(map(str, names))), self.autocast():
                if procedure == timings.SIDE_BY_SIDE:
                    return metrics.throughput_side_by_side(models, batch_sizes=batches), batches
                speed, batch = halving(lambda b: metrics.throughput(models[0], batch_size=b), batches[0],
                                       self._halved(names[0], "timing throughput"))
                return [speed], [batch]

        material = self.timings.material(models, batches, procedure, self.device, self.precision)
        timing = self.timings.get_or_time(material, time)
        return timing["throughputs"], timing["batches"]

    # -- measurements ---------------------------------------------------------------------------
    def observe(self, measure, attacks: dict[str, dict], spec_data: dict | None, spec_id: str = "",
                confidence: float | None = None) -> Observation:
        """The observation for one measure of a check, memoized for the session."""
        data_slice = self.data_slice(spec_data)
        scope = Scope(self, attacks, data_slice)
        configs = scope.configs(measure)
        key = (measure.kind, measure.source, measure.model, configs, data_slice.key)
        if key not in self._memo:
            observation = measure_kind(measure.kind).compute(scope, measure)
            if not isinstance(observation, Observation):
                observation = Observation(float(observation), None)
            self._memo[key] = observation
            self._record(measure, observation, scope, configs, spec_id, confidence or self.confidence)
        return self._memo[key]

    def _record(self, measure, observation: Observation, scope: Scope, configs: tuple,
                spec_id: str, confidence: float) -> None:
        record = MeasurementRecord(key=measure.key, kind=measure.kind, value=observation.value,
                                   spec=spec_id, source=measure.source, target=measure.model,
                                   data=scope.data_slice.key)
        if configs:
            source = measure.source or measure.model
            sets = [self.adversarial.plan(ModelName(source), c, scope.data_slice) for c in configs]
            clean = scope.clean_correct(measure.model)
            fooled = scope.fooled(source, measure.model, measure.attack.names)
            threat_models = [s.threat_model for s in sets]
            record.alias = measure.attack.text
            record.attack = ",".join(c.name for c in configs)
            record.threat_model = threat_models[0] if len(threat_models) == 1 else threat_models
            record.strategy = ",".join(s.strategy for s in sets)
            record.robust_acc = float((clean & ~fooled).mean())
            record.clean_acc = float(clean.mean())
        if observation.outcomes is not None:
            k, n = observation.counts
            record.k, record.n, record.confidence = k, n, confidence
            record.interval = list(wilson_interval(k, n, confidence))
            record.outcomes = [None if math.isnan(v) else int(v) for v in observation.outcomes.tolist()]
        self.measurements[(measure.key, scope.data_slice.key, configs)] = record

    def _throughput_side_by_side(self, timed: list, spec_data: dict | None) -> None:
        """Time the models of a speed comparison in alternation, before the check observes
        them (so none is timed alone first, only to be timed again), and make every place that
        already holds their throughput (an earlier check's memo and measurement records) agree."""
        data_slice = self.data_slice(spec_data)
        names = list(dict.fromkeys(m.model for m in timed))
        batches = [self.model_summary(n, timed=False).throughput_batch for n in names]
        speeds = dict(zip(names, self._speeds(names, batches, timings.SIDE_BY_SIDE)[0]))
        for name, speed in speeds.items():
            self.model_records[name].throughput = speed
        for key, observation in self._memo.items():
            if key[0] == "throughput" and key[2] in speeds:
                observation.value = speeds[key[2]]
        for m in timed:
            if (m.key, data_slice.key, ()) in self.measurements:
                self.measurements[(m.key, data_slice.key, ())].value = speeds[m.model]

    # -- checks ---------------------------------------------------------------------------------
    def evaluate(self, node, attacks: dict[str, dict], spec_data: dict | None, spec_id: str = "",
                 confidence: float | None = None, label: str = "") -> Verdict:
        """The verdict of a parsed check. With the engine's ``seeds`` > 1 it is measured on that
        many seed replicas of its models and decided across them (:mod:`vitrobust.replicate`).
        ``label`` names the check in the run's time profile (its text, as the spec wrote it)."""
        confidence = confidence or self.confidence
        with self.profile.phase("check", ": ".join(filter(None, (spec_id, label or type(node).__name__)))):
            return self._evaluate(node, attacks, spec_data, spec_id, confidence)

    def _evaluate(self, node, attacks: dict[str, dict], spec_data: dict | None, spec_id: str,
                  confidence: float) -> Verdict:
        if self.seeds > 1:
            per_replica = [self.observations(replica_node(node, s), attacks, spec_data, spec_id, confidence)
                           for s in range(self.seeds)]
            return decide_across(node, per_replica, confidence)
        return decide(node, self.observations(node, attacks, spec_data, spec_id, confidence), confidence)

    def observations(self, node, attacks: dict[str, dict], spec_data: dict | None, spec_id: str,
                     confidence: float) -> dict:
        """Every measure of ``node``, observed (memoized), and each model's row of the models table."""
        named = measures_of(node)
        timed = [m for m in named if m.kind == "throughput"]
        if len(timed) > 1:   # a comparison of speeds: time the models side by side, first
            self._throughput_side_by_side(timed, spec_data)
        observations = {m: self.observe(m, attacks, spec_data, spec_id, confidence) for m in named}
        for m in named:   # every model a check touches gets a row in the models table
            for name in filter(None, (m.model, m.source)):
                self.model_summary(name)
        return observations

    def record_parts(self) -> dict:
        """Models, measurements, artifacts, warnings and cache counts for the run record."""
        self._compare_attack_kinds()
        self._check_compressions_in_effect()
        for name, _, acc in self.clean_accuracies():   # the last slice a model was scored on
            if name in self.model_records:
                self.model_records[name].clean_acc = acc
        for name, record in self.model_records.items():   # measures add to meta (keep_ratio)
            record.meta = dict(self._models[ModelName(name)].info.meta)
        stats, predictions = self.adv_cache.stats, self.predictions.stats
        return {"models": dict(self.model_records), "measurements": list(self.measurements.values()),
                "artifacts": dict(self.artifacts), "warnings": list(self.warnings),
                "data": dict(self.data_records), "profile": self.profile.items(),
                "cache": {"adversarial_generated": stats["generated"],
                          "adversarial_reused": stats["reused"],
                          "predictions_generated": predictions["generated"],
                          "predictions_reused": predictions["reused"], **self.timings.counts()}}

    def clean_accuracies(self) -> list[tuple[str, str, float]]:
        """(model, data slice, clean accuracy) in the order the session first scored them; the
        models table shows a model's last (pytest-xdist merges its workers' runs by this order)."""
        return [(str(name), key, float(clean.mean())) for (name, key), clean in self._clean.items()]

    def _check_compressions_in_effect(self) -> None:
        """Warn where a compression is not in effect (INT8 without quantized layers, pruning that
        keeps every token, ...). At the end of the run, against the parent where the session
        built it, so no model is built only for this."""
        from .in_effect import in_effect_warnings

        for name, model in list(self._models.items()):
            if name.suffixes:
                self._warn(in_effect_warnings(model, self._models.get(name.parent)), name)

    def _compare_attack_kinds(self) -> None:
        """Warn where a black-box attack beat the white-box ones of its budget (per model and
        slice). Grouped by the spec's alias: ``pgd`` and ``pgd_4`` are two attacks."""
        groups: dict[tuple, dict] = {}
        for rec in self.measurements.values():
            if rec.kind == "asr" and rec.alias and "," not in rec.attack \
                    and rec.strategy in ("white-box", "black-box"):
                threat = rec.threat_model or {}
                groups.setdefault((rec.target, rec.data), {})[rec.alias] = (
                    rec.value, rec.strategy == "white-box", threat.get("norm"), threat.get("eps"))
        for (name, _), results in groups.items():
            if self.model(name).info.differentiable:
                self._warn(sanity.black_box_beats_white_box(results, name), name)
