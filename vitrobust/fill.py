"""Filling the cache from a plan, on any executor; the ordinary pytest session then decides.

``vitrobust run`` can make the units a selection needs (:mod:`vitrobust.planner`) before the
deciding session starts, in other processes: a pool of processes on this machine
(:mod:`vitrobust.executor_pool`) or Ray tasks (:mod:`vitrobust.executor_ray`). This module is
what they share:

- :func:`fill_cache`: plan, run the model units (a variant after its base), plan again (now
  every shard's key is known), run the clean and adversarial units still missing, most
  expensive first, and report what happened. The deciding session then finds every model,
  prediction and adversarial set in the cache, so verdicts, the run record, reports and the gate
  are the serial run's code path; only the filling of the cache is spread out.
- :func:`run_unit`: one unit in a worker, made by the :class:`~vitrobust.engine.Engine` the
  deciding session would build (same settings, same shards and seeds), so a worker makes the
  bytes a serial run makes. An adversarial unit is also scored on its targets there, so the
  images never travel.

A unit that fails is reported and left to the deciding session, which makes it itself or
reports the error as a serial run would.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol


@dataclass
class Settings:
    """What a worker needs to build the engine the deciding session builds."""

    cache: str
    zoo: object = None                   # ZooConfig or None
    device: str = "cpu"                  # "cpu" or "cuda"
    precision: str = "fp32"
    skip_bad_images: bool = False
    shard_images: int = 0                # the driver's shard size (key material: every worker uses it)
    imports: list = field(default_factory=list)   # modules registering models outside vitrobust
    paths: list = field(default_factory=list)     # where the driver found them (sys.path entries)


@dataclass
class Summary:
    executor: str
    ran: dict = field(default_factory=lambda: {"model": 0, "clean": 0, "adversarial": 0})
    already_cached: int = 0
    failed: list = field(default_factory=list)       # (unit, error)
    mismatched: list = field(default_factory=list)   # (unit, key the worker made)
    seconds: float = 0.0
    unit_seconds: float = 0.0                        # the workers' seconds, summed
    profile: list = field(default_factory=list)      # per unit, as vitrobust.profile items

    def text(self) -> str:
        name = self.executor
        lines = [f"{name}: {self.ran['model']} model, {self.ran['clean']} clean and {self.ran['adversarial']} "
                 f"adversarial units run, {self.already_cached} already cached, in {self.seconds:.0f} s "
                 f"({self.unit_seconds:.0f} s of work)"]
        lines += [f"{name}: FAILED {u.kind} {u.model} {u.attack}: {e} (the deciding session makes it itself)"
                  for u, e in self.failed]
        lines += [f"{name}: {u.kind} {u.model} {u.attack} was made under key {k[:16]}, the plan expected "
                  f"{u.key.split('/')[-1][:16]} (another environment on the worker?); the deciding session "
                  "makes it itself" for u, k in self.mismatched]
        return "\n".join(lines)


class Backend(Protocol):
    """Where units run. ``run`` yields ``(unit, result dict or the exception it raised)`` for
    every unit, in any order. ``chained`` units are model builds listed base first: a variant
    must start only once its base is done."""

    name: str

    def run(self, settings: Settings, units: list, chained: bool) -> Iterator[tuple]: ...


def fill_cache(pytest_args: list[str], backend: Backend, *, echo=print, planned=None) -> Summary:
    """Run the not-yet-cached units of the checks ``pytest_args`` selects on ``backend``.
    ``planned`` is ``(selected, engine, plan)`` when the caller has planned already."""
    from .planner import plan
    from .selection import select

    start = time.perf_counter()
    if planned is None:
        selected, engine = select(pytest_args)
        first = plan(engine, selected)
    else:
        selected, engine, first = planned
    settings = settings_of(engine)
    summary = Summary(backend.name, already_cached=sum(u.cached is True for u in first.units))
    echo(f"{backend.name}: {len(first.todo('model'))} model, {len(first.todo('clean'))} clean and "
         f"{len(first.todo('adversarial'))} adversarial units to run of {len(first.units)} planned")
    models = first.todo("model")
    _collect(backend.run(settings, models, True), summary)
    again = plan(engine, selected, first) if models else first   # now every set's key is known
    todo = sorted((u for u in again.todo() if u.kind != "model" and u.key), key=_largest_first)
    _collect(backend.run(settings, todo, False), summary)
    summary.seconds = time.perf_counter() - start
    _worker_profile[:] = summary.profile
    echo(summary.text())
    return summary


def _largest_first(unit) -> float:
    """Longest job first balances workers best (an unestimated unit goes first: it is likely
    a model the cost table does not know, such as a 224-pixel one)."""
    return -(unit.cost if unit.cost is not None else float("inf"))


def _collect(results: Iterable[tuple], summary: Summary) -> None:
    for unit, made in results:
        if isinstance(made, BaseException):
            summary.failed.append((unit, one_line(made)))
            continue
        summary.ran[unit.kind] += 1
        summary.unit_seconds += made.get("seconds", 0.0)
        summary.profile.append(profile_item(unit, made.get("seconds", 0.0)))
        if made.get("key") and not unit.key.endswith(made["key"]):
            summary.mismatched.append((unit, made["key"]))


# the run's profile (vitrobust.profile) kind of each unit kind, named as the engine names its phases
_PHASES = {"model": "model", "clean": "scoring", "adversarial": "adversarial"}
_worker_profile: list = []   # what the last fill in this process spent, for the run record


def profile_item(unit, seconds: float) -> dict:
    name = f"{unit.model} {unit.config.name}" if unit.kind == "adversarial" else unit.model
    return {"kind": _PHASES[unit.kind], "name": name, "seconds": seconds, "total": seconds, "count": 1}


def worker_profile() -> list:
    """The profile items of the units the last :func:`fill_cache` of this process ran (the
    run record adds them to the deciding session's: a run's profile says where its time went,
    in whichever process; with several workers the items add up to more than the wall time)."""
    return list(_worker_profile)


def forget_worker_profile() -> None:
    _worker_profile.clear()


def one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc   # a RayTaskError carries the task's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def settings_of(engine) -> Settings:
    from .adversarial import shard_images
    from .zoo.cache import cache_root
    from .zoo.registry import list_models, model_entry

    modules = sorted({model_entry(n).builder.__module__ for n in list_models()} - {"__main__"})
    imports = [m for m in modules if not m.startswith("vitrobust.")]
    paths = [p for p in sys.path if p and any(_provides(p, m) for m in imports)]
    return Settings(cache=str(cache_root()), zoo=engine.zoo, device=engine.device.type,
                    precision=engine.precision, skip_bad_images=engine.skip_bad_images,
                    shard_images=shard_images(), imports=imports, paths=paths)


def _provides(path: str, module: str) -> bool:
    top = module.split(".")[0]
    return os.path.exists(os.path.join(path, top)) or os.path.exists(os.path.join(path, f"{top}.py"))


def work_of(unit) -> dict:
    """What a worker is asked to do, in plain data (the unit's source, attack and slice)."""
    return {"kind": unit.kind, "model": unit.model, "config": unit.config, "slice": unit.slice,
            "key": unit.key, "shard": unit.index, "targets": list(unit.targets)}


# -- in the worker ---------------------------------------------------------------------------------
_ENGINE: tuple = (None, None)   # (settings, engine): a worker process keeps its engine between units


def _engine(settings: Settings):
    """The engine for ``settings``, built once per worker process: its models stay loaded for
    the next unit (a pool worker or a Ray worker runs many)."""
    global _ENGINE
    if _ENGINE[0] == settings:
        return _ENGINE[1]
    import importlib

    from .adversarial import SHARD_IMAGES_ENV

    os.environ["VITROBUST_CACHE"] = settings.cache
    os.environ[SHARD_IMAGES_ENV] = str(settings.shard_images)
    for path in settings.paths:
        if path not in sys.path:
            sys.path.append(path)
    for module in settings.imports:
        importlib.import_module(module)
    from .engine import Engine

    engine = Engine(zoo=settings.zoo, progress=False, device=settings.device,
                    precision=settings.precision, skip_bad_images=settings.skip_bad_images)
    _ENGINE = (settings, engine)
    return engine


def run_unit(settings: Settings, work: dict, parent=None) -> dict:
    """One unit, in a worker: the engine the deciding session would build makes it (and caches
    it). ``parent`` is the parent model's result where the executor passes it (Ray orders its
    tasks that way); it is not used."""
    from .names import ModelName

    start = time.perf_counter()
    engine = _engine(settings)
    if work["kind"] == "model":
        model = engine.model(work["model"])
        return {"weight_hash": model.info.weight_hash, "seconds": time.perf_counter() - start}
    if work["kind"] == "clean":
        shard = engine.clean_shards(work["model"], work["slice"])[work["shard"]]
        engine.clean_predictions(work["model"], work["slice"], shard)
        key = engine.predictions.key(engine.prediction_material(work["model"], shard[2]))
        return {"key": key, "seconds": time.perf_counter() - start}
    source, config, data_slice = ModelName(work["model"]), work["config"], work["slice"]
    shard = engine.adversarial.plan(source, config, data_slice).shards[work["shard"]]
    for target in work["targets"]:   # scored here, where the images are
        engine.adversarial_predictions(source, target, config, data_slice, shard)
    return {"key": shard.key, "seconds": time.perf_counter() - start}


def depth_waves(units: list) -> list[list]:
    """Model units (listed base first) in waves: a wave's units need only earlier waves'."""
    depth: dict[str, int] = {}
    waves: list[list] = []
    for unit in units:
        level = 1 + max((depth.get(n, -1) for n in unit.needs), default=-1)
        depth[unit.model] = level
        while len(waves) <= level:
            waves.append([])
        waves[level].append(unit)
    return waves

