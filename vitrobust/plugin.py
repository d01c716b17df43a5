"""The pytest plugin: YAML specs become test items, one per check.

Collection: every ``*.yaml`` / ``*.yml`` file in a directory named ``specs`` (or given on the
command line) is a spec file. Each spec becomes a collector named by its id and matrix values
(``quantization[size=tiny]``) and each check an item named by its expanded text, so ``-k``
selects by spec, model, attack or compression.

One :class:`~vitrobust.engine.Engine` per session computes every measurement once; at the end
the run is written as a report (Markdown, JSON, HTML), recorded in the results database and,
when asked, compared with a baseline.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

RUN = pytest.StashKey[dict]()
ENGINE = pytest.StashKey[object]()
ZOO = pytest.StashKey[object]()   # the --vitrobust-zoo config (a ZooConfig) or None, loaded once


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
    group.addoption("--vitrobust-db", metavar="PATH", default=None,
                    help="results database (default: <report-dir>/vitrobust.sqlite)")
    group.addoption("--vitrobust-inconclusive", choices=("fail", "skip", "xfail"), default=None,
                    help="what an inconclusive check does (overrides the specs; default: as each spec says)")
    group.addoption("--vitrobust-confidence", type=float, default=None,
                    help="confidence level of paired tests and intervals (overrides the specs)")
    group.addoption("--vitrobust-save-baseline", metavar="NAME", default=None,
                    help="save this run as the named baseline")
    group.addoption("--vitrobust-baseline", metavar="NAME", default=None,
                    help="compare with the named baseline; regressions fail the session")
    group.addoption("--vitrobust-asr-margin", type=float, default=0.05,
                    help="ASR rise tolerated against the baseline before it is a regression (default 0.05)")
    group.addoption("--vitrobust-max-images", metavar="N", type=_positive_int, default=None,
                    help="use at most N images per spec (a quick smoke run: fewer images, wider "
                         "intervals, more inconclusive verdicts)")
    group.addoption("--vitrobust-no-progress", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def pytest_configure(config):
    config.addinivalue_line("markers", "vitrobust_spec(id): a check collected from a vitrobust spec")
    from .run import local_time_iso

    config.stash[RUN] = {"checks": {}, "started": local_time_iso()}
    config.pluginmanager.register(OutcomeRecorder(config), "vitrobust-outcomes")
    # foolbox imports a deprecated scipy namespace; not the user's problem
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:foolbox.*")
    # ...and its SpatialAttack calls torch.meshgrid without `indexing` (torch then warns)
    config.addinivalue_line("filterwarnings", "ignore:torch.meshgrid. in an upcoming release:UserWarning")


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix in (".yaml", ".yml") and (
            file_path.parent.name == "specs" or _given_on_command_line(parent.config, file_path)):
        return SpecFile.from_parent(parent, path=file_path)
    return None


def _given_on_command_line(config, path: Path) -> bool:
    return any(Path(arg.split("::")[0]).resolve() == path.resolve() for arg in config.args)


def _one_line_errors():
    from .attacks import AttackError
    from .compress import CompressionError
    from .data import DataError
    from .engine import EngineError
    from .expr import ExprError
    from .spec import SpecError
    from .zoo import CheckpointError

    return (AttackError, CompressionError, DataError, EngineError, ExprError, SpecError, CheckpointError)


class SpecFile(pytest.File):
    """A YAML file of one or more specs."""

    def collect(self):
        from .attacks import list_attacks
        from .spec import load_spec_file

        zoo = _zoo_config(self.config)
        aliases = set(zoo.models) if zoo else set()
        specs = load_spec_file(self.path, known_models=lambda name: _known_model(name, aliases),
                               known_attacks=lambda a: a in list_attacks())
        for spec in specs:
            groups: dict[tuple, list] = {}
            for check in spec.checks:
                groups.setdefault(tuple(sorted(check.params.items())), []).append(check)
            for params, checks in groups.items():
                label = ",".join(f"{k}={v}" for k, v in params)
                name = f"{spec.id}[{label}]" if label else spec.id
                yield SpecNode.from_parent(self, name=name, spec=spec, checks=checks)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, _one_line_errors()):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _known_model(name: str, zoo_aliases: set[str]) -> bool:
    """A spec's model name is known if its base is registered (or aliased by a zoo config) and
    every suffix is a known compression."""
    from .compress import CompressionError, parse_suffix
    from .zoo import split_name
    from .zoo.registry import is_registered

    base, suffixes = split_name(name)
    if not (is_registered(base) or base in zoo_aliases):
        return False
    try:
        for suffix in suffixes:
            parse_suffix(suffix)
    except CompressionError:
        return False
    return True


class SpecNode(pytest.Collector):
    """One spec at one point of its matrix."""

    def __init__(self, *, spec, checks, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.checks = spec, checks
        self.add_marker(pytest.mark.vitrobust_spec(spec.id))

    def collect(self):
        for check in self.checks:
            item = CheckItem.from_parent(self, name=check.text, spec=self.spec, check=check)
            if check.xfail:
                # strict: a claim that starts to hold again must be noticed and the xfail removed
                item.add_marker(pytest.mark.xfail(reason=check.xfail, strict=True, raises=CheckFailed))
            yield item


class CheckFailed(AssertionError):
    """A check's verdict was 'fails' (or 'inconclusive' under policy fail)."""


class CheckItem(pytest.Item):
    def __init__(self, *, spec, check, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.check = spec, check

    def runtest(self):
        config = self.config
        engine = session_engine(config)
        confidence = config.getoption("vitrobust_confidence") or self.spec.confidence
        verdict = engine.evaluate(self.check.node, self.spec.attacks, self.spec.data, self.spec.id, confidence)
        policy = (config.getoption("vitrobust_inconclusive") or self.check.inconclusive
                  or self.spec.inconclusive or "fail")
        config.stash[RUN]["checks"][self.nodeid].update(
            status=verdict.status, message=verdict.message, values=dict(verdict.values),
            statistic=verdict.statistic, p_value=verdict.p_value,
            intervals={k: list(v) for k, v in verdict.intervals.items()})
        if verdict.status == "holds":
            return
        if verdict.status == "inconclusive" and policy == "skip":
            pytest.skip(f"inconclusive at confidence {confidence}: {verdict.statistic}")
        if verdict.status == "inconclusive" and policy == "xfail":
            pytest.xfail(f"inconclusive at confidence {confidence}: {verdict.statistic}")
        raise CheckFailed(f"{verdict.status}: {self.check.text}\n{verdict.message}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CheckFailed):
            claim = f"claim: {self.check.claim}\n" if self.check.claim else ""
            return f"{claim}{excinfo.value}"
        if isinstance(excinfo.value, _one_line_errors()):
            return f"{excinfo.value.__class__.__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.check.line, f"{self.spec.id}: {self.check.text}"


def session_engine(config):
    """The session's engine, created on first use (so collection alone never builds models)."""
    if ENGINE not in config.stash:
        from .engine import Engine

        config.stash[ENGINE] = Engine(
            data_source=config.getoption("vitrobust_data"), zoo=_zoo_config(config),
            progress=not config.getoption("vitrobust_no_progress"),
            confidence=config.getoption("vitrobust_confidence") or 0.95,
            max_images=config.getoption("vitrobust_max_images"))
    return config.stash[ENGINE]


def _zoo_config(config):
    """The --vitrobust-zoo config, read once per session (None without the option)."""
    if ZOO not in config.stash:
        path, zoo = config.getoption("vitrobust_zoo"), None
        if path:   # engine imports torch: only when there is a config to read
            from .engine import ZooConfig

            zoo = ZooConfig.load(path)
        config.stash[ZOO] = zoo
    return config.stash[ZOO]


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    _zoo_config(session.config)   # a bad zoo config fails before any spec is collected


class OutcomeRecorder:
    """Keeps each check's pytest outcome (passed, failed, xfailed, ...) in its run record.

    A registered object rather than module hooks: ``pytest_runtest_logreport`` receives only the
    report, and the object carries the config whose stash holds the records.
    """

    def __init__(self, config):
        self.checks = config.stash[RUN]["checks"]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if isinstance(item, CheckItem):
            # the record exists before runtest fills it in, so an error in setup is recorded too
            self.checks.setdefault(item.nodeid, {
                "spec": item.spec.id, "nodeid": item.nodeid, "check": item.check.text,
                "params": dict(item.check.params), "claim": item.check.claim, "status": "error",
                "outcome": None, "xfail_reason": item.check.xfail, "message": "", "values": {},
                "statistic": "", "p_value": None, "intervals": {}})
        yield

    def pytest_runtest_logreport(self, report):
        record = self.checks.get(report.nodeid)
        if record is None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            if hasattr(report, "wasxfail"):
                record["outcome"] = "xfailed" if report.skipped else "xpassed"
            else:
                record["outcome"] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    checks = config.stash[RUN]["checks"]
    if not checks or config.getoption("vitrobust_no_report") or ENGINE not in config.stash:
        return
    from .run import finish_run, save_unfinished

    options = _options(config)
    try:
        summary = finish_run(config.stash[ENGINE], list(checks.values()), options)
    except Exception as exc:   # never lose a run's results to a reporting problem
        path = save_unfinished(config.stash[ENGINE], list(checks.values()), options)
        summary = {"run_id": None, "text": f"reporting failed ({exc.__class__.__name__}: {exc}); "
                                           f"raw results saved to {path}", "regressions": []}
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    config.stash[RUN]["summary"] = summary
    if getattr(config, "cache", None) is not None:   # absent under -p no:cacheprovider
        config.cache.set("vitrobust/last_run", summary.get("run_id"))
    if summary.get("regressions"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _options(config) -> dict:
    report_dir = Path(config.getoption("vitrobust_report_dir"))
    if not report_dir.is_absolute():
        report_dir = Path(config.rootpath) / report_dir
    return {
        "report_dir": report_dir,
        "db": config.getoption("vitrobust_db") or str(report_dir / "vitrobust.sqlite"),
        "save_baseline": config.getoption("vitrobust_save_baseline"),
        "baseline": config.getoption("vitrobust_baseline"),
        "asr_margin": config.getoption("vitrobust_asr_margin"),
        "confidence": config.getoption("vitrobust_confidence") or 0.95,
        "data": config.getoption("vitrobust_data"),
        "zoo": config.getoption("vitrobust_zoo"),
        "args": list(config.invocation_params.args),
        "started": config.stash[RUN]["started"],
        "cwd": os.getcwd(),
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    summary = config.stash[RUN].get("summary")
    if not summary:
        return
    terminalreporter.section("vitrobust")
    terminalreporter.write_line(summary["text"])
