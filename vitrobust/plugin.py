"""The pytest plugin: YAML specs become test items, one per check.

Collection: every ``*.yaml`` / ``*.yml`` file in a directory named ``specs`` (or given on the
command line) is a spec file. Each spec becomes a collector named by its id and matrix values
(``quantization[size=tiny]``) and each check an item named by its expanded text, so ``-k``
selects by spec, model, attack or compression.

The session's state lives in one plugin object, :class:`VitrobustSession`, registered in
``pytest_configure`` (the idiom of pytest's own ``stepwise`` and ``cacheprovider``): the zoo
config, the :class:`~vitrobust.engine.Engine` that computes every measurement once, the check
records, and the run: its ``running`` row in the results database when the first check starts
(so a killed session leaves a row that reads as ``interrupted``), and at the end its reports,
the complete row and the baseline gate.

Under pytest-xdist (``-n N``) :mod:`vitrobust.plugin_xdist` joins it: workers hand their results
to the controller, which finishes one run with all of them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from . import defaults, faults, plugin_pool
from .executor_pool import parse_jobs

PLUGIN_NAME = "vitrobust-session"


def pytest_addoption(parser):
    group = parser.getgroup("vitrobust", "vitrobust: adversarial robustness specs")
    group.addoption("--vitrobust-data", metavar="SOURCE", default=None,
                    help="data source for every spec: 'digits' (embedded default) or an ImageFolder path")
    group.addoption("--vitrobust-zoo", metavar="FILE", default=None,
                    help="zoo config YAML: point spec model names at other architectures/checkpoints")
    group.addoption("--vitrobust-report-dir", metavar="DIR", default="reports",
                    help="where reports/<run-id>/ and the 'latest' pointer are written (default: reports)")
    group.addoption("--vitrobust-no-report", action="store_true",
                    help="do not write reports or record the run in the database")
    group.addoption("--vitrobust-db", metavar="PATH|URL", default=None,
                    help="results database: an SQLite path (default: <report-dir>/vitrobust.sqlite) "
                         "or a postgresql://user:password@host:port/dbname URL")
    group.addoption("--vitrobust-inconclusive", choices=defaults.INCONCLUSIVE_POLICIES, default=None,
                    help="what an inconclusive check does (overrides the specs; default: as each spec says)")
    group.addoption("--vitrobust-confidence", type=float, default=None,
                    help="confidence level of paired tests and intervals (overrides the specs)")
    group.addoption("--vitrobust-save-baseline", metavar="NAME", default=None,
                    help="save this run as the named baseline")
    group.addoption("--vitrobust-baseline", metavar="NAME", default=None,
                    help="compare with the named baseline; regressions fail the session")
    group.addoption("--vitrobust-margin", "--vitrobust-asr-margin", dest="vitrobust_margin",
                    type=float, default=defaults.MARGIN,
                    help="how far a rate may move the worse way against the baseline before it is a "
                         f"regression: an ASR rise, an accuracy drop (default {defaults.MARGIN}; "
                         "--vitrobust-asr-margin is the old name)")
    group.addoption("--vitrobust-max-images", metavar="N", type=_positive_int, default=None,
                    help="use at most N images per spec (a quick smoke run: fewer images, wider "
                         "intervals, more inconclusive verdicts)")
    group.addoption("--vitrobust-no-progress", action="store_true", help="no progress bars")
    group.addoption("--vitrobust-device", metavar="DEVICE", default=None,
                    help="where models, attacks and training run: auto (CUDA when present), cpu, cuda, "
                         "cuda:N (default: $VITROBUST_DEVICE, else auto); dynamic INT8 always runs on the CPU")
    group.addoption("--vitrobust-precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="autocast precision of model calls on that device (default fp32: no autocast)")
    group.addoption("--vitrobust-seeds", metavar="K", type=_positive_int, default=1,
                    help="decide every check across K independently trained builds of its models "
                         "(seed replicas: deit_tiny, deit_tiny@s1, ...; replicas other than the shipped "
                         "zoo train on first use); verdicts become holds / fails / inconclusive across "
                         "seeds, or varies with the training seed (default 1: the default zoo alone)")
    group.addoption("--vitrobust-jobs", metavar="N|auto", type=parse_jobs, default="1",
                    help="make the models, predictions and adversarial sets the selected checks need on "
                         "this many local processes before they run; auto: one per core when there is a "
                         "minute of work or more (vitrobust run's default); 1 (default): no pool")
    group.addoption("--vitrobust-retime", action="store_true",
                    help="time every throughput the run needs anew, replacing this machine's stored "
                         "timings (default: each model, and each speed comparison as a group, is timed "
                         "once per machine, torch version and thread count, then read back)")
    group.addoption("--vitrobust-skip-bad-images", action="store_true",
                    help="skip unreadable images of a data folder (listed and counted in the report) "
                         "instead of stopping at the first")


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config):
    # a wrapper runs before xdist's tryfirst hook turns "-n without --dist" into --dist load
    if config.pluginmanager.hasplugin("xdist"):
        from .plugin_xdist import default_to_loadgroup

        default_to_loadgroup(config.option)
    return (yield)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def pytest_configure(config):
    config.addinivalue_line("markers", "vitrobust_spec(id): a check collected from a vitrobust spec")
    # foolbox imports a deprecated scipy namespace; not the user's problem
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:foolbox.*")
    # ...and its SpatialAttack calls torch.meshgrid without `indexing` (torch then warns)
    config.addinivalue_line("filterwarnings", "ignore:torch.meshgrid. in an upcoming release:UserWarning")
    session = VitrobustSession(config)
    if config.pluginmanager.hasplugin("xdist"):
        from .plugin_xdist import configure

        configure(config, session)   # first: a worker takes its GPU before anything starts CUDA
    _check_device(config)
    config.pluginmanager.register(session, PLUGIN_NAME)
    if plugin_pool.wanted(config):
        config.pluginmanager.register(plugin_pool.PoolFill(config), plugin_pool.NAME)


def _check_device(config) -> None:
    """A bad --vitrobust-device / $VITROBUST_DEVICE, or CUDA asked for where there is none, is a
    one-line usage error before anything is collected. ``auto`` and ``cpu`` need no torch here."""
    from .device import DeviceError, requested_device, resolve_device

    try:
        if requested_device(config.getoption("vitrobust_device")).startswith("cuda"):
            resolve_device(config.getoption("vitrobust_device"))
    except DeviceError as exc:
        raise pytest.UsageError(str(exc)) from None


def session_of(config) -> "VitrobustSession":
    return config.pluginmanager.get_plugin(PLUGIN_NAME)


class VitrobustSession:
    """Everything one pytest session knows about its specs and their results."""

    def __init__(self, config):
        from .record import local_time_iso

        self.config = config
        self.started = local_time_iso()
        self.checks: dict[str, object] = {}     # nodeid -> CheckRecord, in run order
        self.summary: dict | None = None
        self.run_id: str | None = None   # the database's running row, once the first check starts
        self._begun = False
        self._engine = None
        self._zoo = None
        self._zoo_loaded = False
        self.engine_options: dict = {}   # Engine keywords over the options' (an xdist worker's)
        # where the finished run's results come from: this process's checks, or (pytest-xdist)
        # every worker's, merged by the controller; a worker finishes no run
        self.results = self._own_results

    # -- what the session builds on first use -----------------------------------------------
    @property
    def zoo(self):
        """The --vitrobust-zoo config, read once (None without the option)."""
        if not self._zoo_loaded:
            path = self.config.getoption("vitrobust_zoo")
            if path:
                from .zoo.config import ZooConfig

                self._zoo = ZooConfig.load(path)
            self._zoo_loaded = True
        return self._zoo

    @property
    def engine(self):
        """The session's engine, created on first use (collection alone never builds models)."""
        if self._engine is None:
            from .engine import Engine

            option = self.config.getoption
            self._engine = Engine(**{
                "data_source": option("vitrobust_data"), "zoo": self.zoo,
                "progress": not option("vitrobust_no_progress"),
                "confidence": option("vitrobust_confidence") or defaults.CONFIDENCE,
                "max_images": option("vitrobust_max_images"), "device": option("vitrobust_device"),
                "precision": option("vitrobust_precision"),
                "skip_bad_images": option("vitrobust_skip_bad_images"), "seeds": option("vitrobust_seeds"),
                "retime": option("vitrobust_retime"), **self.engine_options})
        return self._engine

    @property
    def built_engine(self):
        """The engine if a check has built it, else None (never builds one)."""
        return self._engine

    # -- collection ---------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session):
        self.zoo   # a bad zoo config fails before any spec is collected

    def pytest_collect_file(self, file_path: Path, parent):
        if file_path.suffix in (".yaml", ".yml") and (
                file_path.parent.name == "specs" or _given_on_command_line(self.config, file_path)):
            from .collect import SpecFile

            return SpecFile.from_parent(parent, path=file_path)
        return None

    # -- running ------------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        from .collect import CheckItem
        from .record import CheckRecord

        if isinstance(item, CheckItem):
            # the record exists before runtest fills it in, so an error in setup is recorded too
            check = item.check
            one_build = self.config.getoption("vitrobust_seeds") == 1
            self.checks.setdefault(item.nodeid, CheckRecord(
                spec=item.spec.id, nodeid=item.nodeid, check=check.text, params=dict(check.params),
                claim=check.claim, xfail_reason=check.expected_not_to_pass(one_build)))
        yield
        faults.point("check-done")

    def pytest_runtest_logreport(self, report):
        if not self._begun and "vitrobust_spec" in report.keywords:
            self._begin_run()
        record = self.checks.get(report.nodeid)
        if record is None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            if hasattr(report, "wasxfail"):
                record.outcome = "xfailed" if report.skipped else "xpassed"
            else:
                record.outcome = report.outcome

    def _begin_run(self) -> None:
        """The run's ``running`` row, at the first check's first report (a worker of
        pytest-xdist begins nothing: its controller sees the reports too, and records the run).
        A database that cannot be used is not the checks' problem: the session goes on and the
        same error ends it, with the results saved (``pytest_sessionfinish``)."""
        self._begun = True
        if hasattr(self.config, "workerinput") or self.config.getoption("vitrobust_no_report"):
            return
        from .run import RunOptions, begin_run

        data = self.config.getoption("vitrobust_data") or (self.zoo and self.zoo.data) or defaults.DATA_SOURCE
        try:
            self.run_id = begin_run(RunOptions.from_config(self.config, self.started), data)
        except Exception:   # noqa: BLE001 - reported at the end, where the results are saved
            return
        faults.point("run-begun")

    # -- the end ------------------------------------------------------------------------------
    def _own_results(self):
        """(engine, check records) of this process, or None when no check built an engine."""
        if not self.checks or self._engine is None:
            return None
        return self._engine, list(self.checks.values())

    def pytest_sessionfinish(self, session, exitstatus):
        if self.config.getoption("vitrobust_no_report"):
            return
        from .run import RunOptions, discard_run, finish_run, save_unfinished

        options = RunOptions.from_config(self.config, self.started)
        results = self.results()
        if results is None:
            if self.run_id is not None:   # begun, yet no check built an engine: nothing to record
                try:
                    discard_run(options, self.run_id)
                except Exception:   # noqa: BLE001 - the row then reads as interrupted; nothing is lost
                    pass
            return
        engine, checks = results
        try:
            self.summary = finish_run(engine, checks, options, self.run_id)
        except Exception as exc:   # whatever broke reporting, the results are saved and the session fails
            path = save_unfinished(engine, checks, options)
            self.summary = {"run_id": None, "regressions": [],
                            "text": f"reporting failed ({exc.__class__.__name__}: {exc}); "
                                    f"raw results saved to {path}"}
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        if self.summary.get("regressions"):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.summary:
            terminalreporter.section("vitrobust")
            terminalreporter.write_line(self.summary["text"])


def _given_on_command_line(config, path: Path) -> bool:
    return any(Path(arg.split("::")[0]).resolve() == path.resolve() for arg in config.args)

