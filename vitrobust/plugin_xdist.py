"""pytest-xdist support: ``pytest specs -n N`` makes one run, as a serial session would.

Registered by :mod:`vitrobust.plugin` only when xdist is active (xdist stays optional). Under
``-n N`` the controller collects nothing and runs nothing; N worker processes each run a share
of the checks with their own engine. So that the run is still one run:

- **Workers decide, the controller finishes.** A worker writes no report and no database row:
  it hands its check records and its part of the run record to the controller through
  ``config.workeroutput`` (:mod:`vitrobust.handoff`). The controller merges them (checks in
  collection order, each model and measurement once), then records, reports and gates exactly as
  a serial session does, so the summary prints there, a regression fails the session and a
  saved baseline holds every check.
- **One source model per worker.** Under ``--dist loadgroup`` (which ``-n`` defaults to here)
  checks are sent to workers in groups, one per source model (:func:`check_group`), so a
  model's adversarial sets are made where its checks run.
- **Timings with nothing beside them.** Workers share a readers-writer lock
  (:mod:`vitrobust.barrier`): a check that names a throughput runs alone, with every other
  worker paused between checks; the models table's throughputs are not timed on workers at all
  but by the controller, one model after another, once the workers are gone.
- **One GPU per worker.** Worker ``gw<i>`` sees GPU ``i mod n`` of the visible ones
  (``CUDA_VISIBLE_DEVICES``), unless the device is pinned (``cpu``, ``cuda:N``).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import warnings
from types import SimpleNamespace

import pytest

from .barrier import LOCKS, Barrier
from .handoff import KEY, add_profiles, merge, pack, unpack, uses_of
from .record import RunWarning

TIMED_KINDS = ("throughput",)   # measures that time the machine: their checks run alone
INPUT = "vitrobust"             # the key of a worker's workerinput that holds what the controller sends


# -- defaults and groups ----------------------------------------------------------------------------
def default_to_loadgroup(option) -> bool:
    """``-n`` without a ``--dist`` of the user's means ``--dist loadgroup`` (xdist's own default
    is ``load``, which scatters one model's checks over every worker). Called before xdist reads
    the options (its tryfirst ``pytest_cmdline_main``), while ``dist`` is still unset ("no")."""
    if getattr(option, "numprocesses", None) and getattr(option, "dist", "no") == "no" \
            and not getattr(option, "distload", False):
        option.dist = "loadgroup"
        return True
    return False


def asks_for_workers(args: list[str]) -> bool:
    """Does a pytest command line ask for xdist workers (``-n 2``, ``-nauto``, ``--numprocesses=4``)?"""
    return any(a in ("-n", "--numprocesses") or a.startswith("--numprocesses=")
               or (a.startswith("-n") and not a.startswith("--") and len(a) > 2) for a in args)


def names_dist(args: list[str]) -> bool:
    """Does it choose a distribution mode itself (``--dist X``, ``--dist=X``, ``-d``)?"""
    return any(a == "--dist" or a.startswith("--dist=") or a in ("-d", "--distload") for a in args)


def check_group(check) -> str:
    """The group a check is scheduled in: its source model, the model whose adversarial sets it
    needs first (for ``transfer(a -> b, x)`` that is ``a``), else the first model it names.

    Per source model rather than per spec: the same source is attacked by several specs (sanity,
    pruning and quantization all attack ``deit_tiny``), and on one worker its sets, clean
    predictions and weights are made and held once; a model's checks from every spec keep one
    worker busy while other models' groups balance across the rest. A check that needs a second
    source reads its sets from the shared cache, which makes each set once across processes.
    Replicas (``--vitrobust-seeds``) are named in the check by their replica-0 name, so all the
    builds of a check's models go to one worker too.
    """
    from .expr import measures

    named = measures(check.node)
    attacked = [m.source or m.model for m in named if m.attack is not None]
    models = attacked or [m.model for m in named if m.model]
    return str(models[0]) if models else "vitrobust"


def group_of_nodeid(nodeid: str) -> str | None:
    """The group of a spec check from its node id alone (``specs/x.yaml::spec[..]::<check>``),
    as the controller, which collects nothing, sees it; None for any other test."""
    from .expr import ExprError, parse_check

    path, _, rest = nodeid.partition("::")
    if not path.endswith((".yaml", ".yml")) or "::" not in rest:
        return None
    try:
        return check_group(SimpleNamespace(node=parse_check(rest.rsplit("::", 1)[1])))
    except ExprError:
        return None


def make_scheduler(config, log):
    """xdist's loadgroup scheduler, with spec checks grouped by :func:`group_of_nodeid`.

    Not xdist's ``xdist_group`` marker: that mechanism appends ``@group`` to node ids on the
    workers, which pytest 9.2's structured node ids ignore (pytest-dev/pytest-xdist#1386: on
    the pytest this project runs, it silently groups nothing), and which would also put the
    suffix into the run record's node ids. The scheduler reads the group from the check text in
    the node id instead; other tests keep xdist's own grouping.
    """
    from xdist.scheduler import LoadGroupScheduling

    class CheckGroupScheduling(LoadGroupScheduling):
        _groups: dict[str, str | None] = {}

        def _split_scope(self, nodeid: str) -> str:
            if nodeid not in self._groups:
                self._groups[nodeid] = group_of_nodeid(nodeid)
            group = self._groups[nodeid]
            return group if group is not None else super()._split_scope(nodeid)

    return CheckGroupScheduling(config, log)


def times_the_machine(check) -> bool:
    from .expr import measures

    return any(m.kind in TIMED_KINDS for m in measures(check.node))


# -- one GPU per worker ---------------------------------------------------------------------------
def pins_device(requested: str) -> bool:
    """``cpu`` and ``cuda:N`` name the device; ``auto`` and ``cuda`` leave the GPU to choose."""
    return requested == "cpu" or requested.startswith("cuda:")


def visible_gpus(environ, count: int) -> list[str]:
    """The GPUs processes here may use: ``CUDA_VISIBLE_DEVICES`` as given (indices, UUIDs or MIG
    names; empty: none), else ``count`` of them by index."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(count)]


def gpu_for_worker(worker_id: str, visible: list[str]) -> str | None:
    """Worker ``gw<i>`` takes ``visible[i mod n]``; None with no GPU or an id not of that form."""
    match = re.fullmatch(r"gw(\d+)", worker_id or "")
    if not visible or match is None:
        return None
    return visible[int(match.group(1)) % len(visible)]


def _gpus_for_workers(config) -> list[str]:
    """On the controller: the GPUs to spread the workers over (none if the device is pinned)."""
    from .device import requested_device

    if pins_device(requested_device(config.getoption("vitrobust_device"))):
        return []
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return visible_gpus(os.environ, 0)
    import torch   # counts through NVML where it can; the controller runs no model meanwhile

    return visible_gpus(os.environ, torch.cuda.device_count())


def _take_gpu(worker_id: str, visible: list[str]) -> None:
    """Point this worker at its GPU. CUDA reads the variable once, when it starts, so it is set
    in ``pytest_configure``, before any model is built."""
    gpu = gpu_for_worker(worker_id, visible)
    if gpu is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        warnings.warn(f"vitrobust: CUDA started in worker {worker_id} before it could be given GPU {gpu}; "
                      "it keeps the default GPU", stacklevel=1)
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu


# -- the plugins -------------------------------------------------------------------------------------
def configure(config, session) -> None:
    """Register the worker's or the controller's part (nothing when not distributing)."""
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(Worker(config, session), "vitrobust-xdist-worker")
    elif config.getoption("dist", "no") != "no" and config.getoption("tx") \
            and not config.getoption("collectonly"):
        config.pluginmanager.register(Controller(config, session), "vitrobust-xdist-controller")


class Worker:
    """A worker: runs its checks under the barrier, then hands its results over."""

    def __init__(self, config, session):
        self.config, self.session = config, session
        given = config.workerinput.get(INPUT, {})
        self.id = config.workerinput.get("workerid", "gw0")
        _take_gpu(self.id, given.get("gpus", []))
        self.barrier = None
        if given.get("barrier"):
            self.barrier = Barrier(given["barrier"])
        session.results = lambda: None   # the controller finishes the run, with every worker's
        # speeds wait for the controller's serial step; progress bars of N workers would interleave
        session.engine_options.update(defer_timings=True, progress=False)
        self.index: dict[str, int] = {}   # node id -> place in the collection (a serial run's order)
        self.uses: list = []                # (place, what the check read): see handoff.uses_of

    def pytest_collection_finish(self, session):
        self.index = {item.nodeid: i for i, item in enumerate(session.items)}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        check = getattr(item, "check", None)
        alone = check is not None and hasattr(check, "node") and times_the_machine(check)
        if self.barrier is None:
            yield
        else:
            with self.barrier.held(exclusive=alone):
                yield
        engine = self.session.built_engine
        if check is not None and engine is not None:
            try:
                self.uses.append((self.index.get(item.nodeid, 0), uses_of(check, item.spec.data, engine)))
            except Exception:   # noqa: BLE001 - bookkeeping for the record's order; the check is decided
                pass

    def pytest_sessionfinish(self, session):
        """Pack the results into ``workeroutput`` (xdist sends it when this hook returns)."""
        checks = [(self.index.get(nodeid, 0), nodeid, record) for nodeid, record in self.session.checks.items()]
        engine = None if self.config.getoption("vitrobust_no_report") else self.session.built_engine
        if self.barrier is None:
            text = pack(self.id, checks, engine, self.uses)
        else:
            with self.barrier.held():   # record_parts still computes (in-effect warnings)
                text = pack(self.id, checks, engine, self.uses)
            self.barrier.close()
        self.config.workeroutput[KEY] = text


class Controller:
    """The controller: gathers the workers' results and makes them the session's run."""

    def __init__(self, config, session):
        self.config, self.session = config, session
        self.results: list = []
        self.reported: set[str] = set()   # checks the workers reported, as node ids ran
        self.folder = None   # the barrier's lock files, made when the first worker starts
        self._gpus = None
        session.results = self.merged_results

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        if self._gpus is None:
            self._gpus = _gpus_for_workers(self.config)
            self.folder = tempfile.mkdtemp(prefix="vitrobust-xdist-")
        node.workerinput[INPUT] = {"barrier": self.folder, "gpus": self._gpus}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config, log):
        if config.getoption("dist") == "loadgroup":
            return make_scheduler(config, log)
        return None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        text = getattr(node, "workeroutput", {}).get(KEY)
        if text:
            self.results.append(unpack(text))

    def pytest_runtest_logreport(self, report):
        if "vitrobust_spec" in report.keywords:
            self.reported.add(report.nodeid)

    def merged_results(self):
        """(the merged run, its checks) for :func:`vitrobust.run.finish_run`, after the serial
        timing step; None when no worker ran a check."""
        merged = merge(self.results)
        if merged is None:
            return None
        warnings_ = merged.parts["warnings"]
        lost = sorted(self.reported - set(merged.run_nodeids))
        if lost:
            warnings_.append(RunWarning("worker-lost", f"{len(lost)} check(s) ran on a pytest-xdist worker that "
                                                      f"ended without handing over its results (crashed?), "
                                                      f"so this record lacks them, e.g. {lost[0]}"))
        warnings_ += self._time_untimed(merged)
        workers = len(self.results)
        timing = "with every other worker paused" if LOCKS else "while other workers ran (no fcntl here)"
        warnings_.append(RunWarning("parallel-run", f"decided on {workers} pytest-xdist workers: checks that name a "
                                                    f"throughput ran {timing}; the models table's throughputs were "
                                                    "timed afterwards, one model at a time; build seconds are wall "
                                                    "times while the workers ran"))
        return merged, merged.checks

    def _time_untimed(self, merged) -> list[RunWarning]:
        """The serial timing step: the workers are gone, so nothing competes with these."""
        out = []
        engine = None
        for name, record in merged.parts["models"].items():
            if record.throughput is not None:
                continue
            try:
                engine = engine or self.session.engine
                timed = engine.model_summary(name, timed=True)
            except Exception as exc:   # noqa: BLE001 - a speed is not worth losing the run over
                out.append(RunWarning("timing-failed", f"{name}: not timed after the workers "
                                                      f"({exc.__class__.__name__}: {exc})", name))
                continue
            record.throughput, record.throughput_batch = timed.throughput, timed.throughput_batch
        if engine is not None and "profile" in merged.parts and hasattr(engine, "profile"):
            merged.parts["profile"] = add_profiles([merged.parts["profile"], engine.profile.items()])
        if engine is not None and hasattr(engine, "timings"):   # the speeds timed (or read) here
            cache = merged.parts.setdefault("cache", {})
            for name, count in engine.timings.counts().items():
                cache[name] = cache.get(name, 0) + count
        return out

    def pytest_unconfigure(self):
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
