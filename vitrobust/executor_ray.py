"""Fill the shared cache on a Ray cluster; the ordinary pytest session then decides from it.

``vitrobust run --executor ray [--ray-address HOST:PORT]`` plans the selected checks
(:mod:`vitrobust.planner`), runs every unit that is not cached yet as a Ray task, and returns;
the CLI then runs the usual single-process pytest session, which finds every model and
adversarial set in the cache. Verdicts, the run record, reports and the gate are therefore the
serial run's code path; only the filling of the cache is distributed. The order, the unit code
and the summary are :mod:`vitrobust.fill`'s, shared with the local pool
(:mod:`vitrobust.executor_pool`); this module adds Ray's tasks, resources and connection.

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

from . import fill
from .errors import VitrobustError
from .fill import Settings, Summary, run_unit, work_of

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


class RayBackend:
    """Units as Ray tasks of one CPU (one GPU on CUDA); a variant's build task takes its base's
    result as an argument, so Ray starts it once the base is built."""

    name = "ray"

    def __init__(self, ray):
        self.ray = ray

    def run(self, settings: Settings, units: list, chained: bool):
        task = _task(self.ray, settings)
        refs, jobs = {}, []
        for unit in units:
            parent = refs.get(unit.needs[0]) if chained and unit.needs else None
            refs[unit.model] = ref = task.remote(settings, work_of(unit), parent)
            jobs.append((unit, ref))
        for unit, ref in jobs:
            try:
                yield unit, self.ray.get(ref)
            except Exception as exc:   # a task's error, after its retries: the deciding session retries it
                yield unit, exc


def fill_cache(pytest_args: list[str], *, address: str | None = None, num_cpus: int | None = None,
               echo=print) -> Summary:
    """Run the not-yet-cached units of the checks ``pytest_args`` selects on Ray (at
    ``address``, or a local instance), and return what happened."""
    ray = import_ray()
    from .planner import plan
    from .selection import select

    selected, engine = select(pytest_args)   # a bad selection fails before Ray starts
    planned = (selected, engine, plan(engine, selected))
    started = connect(ray, address, num_cpus=num_cpus)
    try:
        return fill.fill_cache(pytest_args, RayBackend(ray), echo=echo, planned=planned)
    finally:
        if started:
            ray.shutdown()


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


def _task(ray, settings: Settings):
    options = {"max_retries": MAX_RETRIES, "retry_exceptions": [OSError]}
    if settings.device == "cuda":
        options["num_gpus"] = 1
    else:
        options["num_cpus"] = 1
    return ray.remote(**options)(run_unit)
