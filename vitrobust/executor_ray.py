"""Fill the shared cache on a Ray cluster; the ordinary pytest session then decides from it.

``vitrobust run --executor ray [--ray-address HOST:PORT]`` plans the selected checks
(:mod:`vitrobust.planner`), runs every unit that is not cached yet as a Ray task, and returns;
the CLI then runs the usual single-process pytest session, which finds every model and
adversarial set in the cache. Verdicts, the run record, reports and the gate are therefore the
serial run's code path; only the filling of the cache is distributed.

- **Order**: model units first (a variant's task waits for its base's: Ray passes the base's
  result as an argument), then the plan is made again, which now knows every shard's key, and
  the clean and adversarial shards still missing run.
- **Same bytes as a serial run**: a task builds an :class:`~vitrobust.engine.Engine` with the
  run's settings and asks it for the model, the clean predictions or the adversarial shard,
  exactly as the deciding session would. Shards and their seeds are the engine's (see the
  planner), so a deterministic attack makes the images a serial run makes.
- **The images never travel**: an adversarial task also scores its shard on every target its
  checks pair with it, into the predictions cache; the deciding session reads the predictions
  and loads no adversarial image. The key a task reports is
  checked against the plan's; a difference (other library versions on a node, other decoded
  pixels) is reported, and the deciding session then makes that set itself.
- **Resources and failures**: a task asks for one CPU, or one GPU when the run's device is CUDA
  (Ray sets each task's ``CUDA_VISIBLE_DEVICES``); the task then runs on ``cuda`` and the
  deciding session must run on CUDA too, since the device type is key material. A task that
  dies with its worker or node is retried (``max_retries``), and so is one that raised an
  ``OSError`` (a shared filesystem's hiccup); any other failure is reported and left to the
  deciding session, which makes the unit itself or reports the error as a serial run would.
- **Where the cache is**: the driver's ``$VITROBUST_CACHE`` is handed to every task. On several
  machines it must be a shared folder (the same path everywhere) or an object store URL
  (``s3://...``, :mod:`vitrobust.objectstore`). Models registered outside vitrobust (a
  conftest's, a plugin's) are imported by module name in every task; they must be importable on
  every node.
- **Local Ray**: without ``--ray-address`` a Ray instance is started on this machine, on the
  loopback interface only and patient with a busy machine's slow starts (:func:`local_ray_env`),
  and stopped at the end.

Ray is optional: ``pip install 'vitrobust[ray]'``.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from .errors import VitrobustError

log = logging.getLogger(__name__)

INSTALL_HINT = "the Ray executor needs Ray: pip install 'vitrobust[ray]' (or: pip install ray)"
MAX_RETRIES = 2   # a task lost with its worker or node is run again this many times
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayExecutorError(VitrobustError):
    """Ray is missing, or the cluster cannot be reached."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayExecutorError(INSTALL_HINT) from None
    return ray


# Ray's raylet gives its agent processes 30 s and a new worker 60 s to register, then fails; on a
# machine whose cores are busy (CI, a shared workstation) their imports take longer. (Its 15 s
# wait for the agent's ports is not configurable: connect() tries a local start twice.)
PATIENT_START = {"RAY_agent_register_timeout_ms": "180000", "RAY_worker_register_timeout_seconds": "180"}


def local_ray_env() -> None:
    """The environment a Ray instance started from this process gets: on loopback only
    (:func:`loopback`), and patient with slow starts (:data:`PATIENT_START`, unless set)."""
    loopback()
    for name, value in PATIENT_START.items():
        os.environ.setdefault(name, value)


def loopback() -> None:
    """Keep a Ray instance started from this process on 127.0.0.1: every server it starts binds
    there, and it advertises that address. Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``: when
    it is off, Ray's node address is the loopback address (it is how Ray keeps single-machine
    instances local on Windows and macOS), and its servers bind to the node address. Without it
    Ray advertises the machine's external address and listens on every interface, and
    ``node_ip_address="127.0.0.1"`` is turned back into the external address. Set in the
    environment (inherited by every Ray process started from here) and in the loaded module."""
    os.environ[LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass
class Settings:
    """What a task needs to build the engine the deciding session builds."""

    cache: str
    zoo: object = None                   # ZooConfig or None
    device: str = "cpu"                  # "cpu" or "cuda": each GPU task sees its own GPU
    precision: str = "fp32"
    skip_bad_images: bool = False
    shard_images: int = 0                # the driver's shard size (key material: every node uses it)
    imports: list = field(default_factory=list)   # modules registering models outside vitrobust
    paths: list = field(default_factory=list)     # where the driver found them (sys.path entries)


@dataclass
class Summary:
    ran: dict = field(default_factory=lambda: {"model": 0, "clean": 0, "adversarial": 0})
    already_cached: int = 0
    failed: list = field(default_factory=list)       # (unit, error)
    mismatched: list = field(default_factory=list)   # (unit, key the task made)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"ray: {self.ran['model']} model, {self.ran['clean']} clean and {self.ran['adversarial']} "
                 "adversarial units run, "
                 f"{self.already_cached} already cached, in {self.seconds:.0f} s"]
        lines += [f"ray: FAILED {u.kind} {u.model} {u.attack}: {e} (the deciding session makes it itself)"
                  for u, e in self.failed]
        lines += [f"ray: {u.kind} {u.model} {u.attack} was made under key {k[:16]}, the plan expected "
                  f"{u.key.split('/')[-1][:16]} (another environment on the node?); the deciding session "
                  "makes it itself" for u, k in self.mismatched]
        return "\n".join(lines)


def fill_cache(pytest_args: list[str], *, address: str | None = None, num_cpus: int | None = None,
               echo=print) -> Summary:
    """Run the not-yet-cached units of the checks ``pytest_args`` selects on Ray (at
    ``address``, or a local instance), and return what happened."""
    ray = import_ray()
    from .planner import plan
    from .selection import select

    start = time.perf_counter()
    selected, engine = select(pytest_args)
    settings = _settings(engine)
    first = plan(engine, selected)
    summary = Summary(already_cached=sum(u.cached is True for u in first.units))
    echo(f"ray: {len(first.todo('model'))} model, {len(first.todo('clean'))} clean and "
         f"{len(first.todo('adversarial'))} adversarial units to run of {len(first.units)} planned")
    started = connect(ray, address, num_cpus=num_cpus)
    try:
        task = _task(ray, settings)
        models = _run_models(ray, task, first.todo("model"), settings, summary)
        again = plan(engine, selected, first) if models else first   # now every set's key is known
        todo = [u for u in again.todo() if u.kind != "model" and u.key]
        _run(ray, [(u, task.remote(settings, _work(u))) for u in todo], summary)
    finally:
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - start
    echo(summary.text())
    return summary


def connect(ray, address: str | None, *, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local instance on loopback. True when
    this call started or connected Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayExecutorError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        return True
    local_ray_env()
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return True
        except Exception as exc:   # noqa: BLE001 (Ray raises a bare Exception here)
            # The raylet gives its agent 15 s (not configurable) to write its ports and aborts
            # after; on a busy machine a first start can miss that, a second finds the imports warm.
            ray.shutdown()
            if attempt == 2:
                raise RayExecutorError(f"a local Ray did not start: {exc}") from None
            log.warning("a local Ray did not start (%s); trying once more", exc)
    return True


def _settings(engine) -> Settings:
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


def _work(unit) -> dict:
    """What a task is asked to do, in plain data (the unit's source, attack and slice)."""
    return {"kind": unit.kind, "model": unit.model, "config": unit.config, "slice": unit.slice,
            "key": unit.key, "shard": unit.index, "targets": list(unit.targets)}


def _task(ray, settings: Settings):
    options = {"max_retries": MAX_RETRIES, "retry_exceptions": [OSError]}
    if settings.device == "cuda":
        options["num_gpus"] = 1
    else:
        options["num_cpus"] = 1
    return ray.remote(**options)(run_unit)


def _run_models(ray, task, units, settings: Settings, summary: Summary) -> int:
    """Model units, each after its parent's (passed as an argument, so Ray orders them)."""
    refs, jobs = {}, []
    for unit in units:   # the planner lists a chain's steps base first
        parent = refs.get(unit.needs[0]) if unit.needs else None
        refs[unit.model] = ref = task.remote(settings, _work(unit), parent)
        jobs.append((unit, ref))
    _run(ray, jobs, summary)
    return len(jobs)


def _run(ray, jobs: list, summary: Summary) -> None:
    for unit, ref in jobs:
        try:
            made = ray.get(ref)
        except Exception as exc:   # a task's error, after its retries: the deciding session retries it
            summary.failed.append((unit, _one_line(exc)))
            continue
        summary.ran[unit.kind] += 1
        if made.get("key") and not unit.key.endswith(made["key"]):
            summary.mismatched.append((unit, made["key"]))


def _one_line(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc   # a RayTaskError carries the task's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def run_unit(settings: Settings, work: dict, parent=None) -> dict:
    """One unit, in a Ray worker: the engine the deciding session would build makes it (and
    caches it). ``parent`` is the parent model task's result: only there to order the tasks."""
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
    from .names import ModelName

    start = time.perf_counter()
    engine = Engine(zoo=settings.zoo, progress=False, device=settings.device,
                    precision=settings.precision, skip_bad_images=settings.skip_bad_images)
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
    return {"key": shard.key, "generated": engine.adv_cache.stats["generated"],
            "scored": engine.predictions.stats["generated"], "seconds": time.perf_counter() - start}
