"""Beginning and finishing a run: the database row, the run record, reports, baselines.

Shared by the pytest plugin and the CLI so both produce the same artifacts. A run is begun
(:func:`begin_run`: a ``running`` row in the results database) when its first check starts, so
a session killed after that leaves a row that reads as ``interrupted``
(:meth:`vitrobust.store.Store.list_runs`); :func:`finish_run` completes that row.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, defaults, faults
from .fileio import write_text_somewhere
from .numerics import numerics
from .record import RunConfig, RunRecord, local_time_iso, new_run_id


@dataclass
class RunOptions:
    """How a run is finished: where reports and the database go, the baseline to save or gate."""

    report_dir: Path
    db: str
    started: str = ""
    save_baseline: str | None = None
    baseline: str | None = None
    margin: float = defaults.MARGIN
    confidence: float = defaults.CONFIDENCE
    data: str | None = None
    zoo: str | None = None
    args: list = field(default_factory=list)
    cwd: str = field(default_factory=os.getcwd)

    @classmethod
    def from_config(cls, config, started: str) -> "RunOptions":
        option = config.getoption
        report_dir = Path(option("vitrobust_report_dir"))
        if not report_dir.is_absolute():
            report_dir = Path(config.rootpath) / report_dir
        return cls(report_dir=report_dir, db=option("vitrobust_db") or str(report_dir / "vitrobust.sqlite"),
                   started=started, save_baseline=option("vitrobust_save_baseline"),
                   baseline=option("vitrobust_baseline"), margin=option("vitrobust_margin"),
                   confidence=option("vitrobust_confidence") or defaults.CONFIDENCE,
                   data=option("vitrobust_data"), zoo=option("vitrobust_zoo"),
                   args=list(config.invocation_params.args))


def versions() -> dict:
    import foolbox
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "foolbox": foolbox.__version__, "vitrobust": __version__}


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def build_run_record(engine, checks: list, options: RunOptions, run_id: str) -> RunRecord:
    from .fill import worker_profile
    from .handoff import add_profiles

    parts = engine.record_parts()
    if worker_profile():   # the units a pool or Ray made before this session (vitrobust.fill)
        parts["profile"] = add_profiles([parts.get("profile", []), worker_profile()])
    return RunRecord(
        run_id=run_id, started=options.started or local_time_iso(), finished=local_time_iso(),
        git_commit=git_commit(options.cwd), versions=versions(),
        config=RunConfig(data=engine.data_source, zoo=options.zoo, max_images=engine.max_images,
                         confidence=options.confidence, args=list(options.args),
                         device=str(engine.device), precision=engine.precision,
                         batch_size=engine.batch_size, seeds=engine.seeds, **numerics()),
        checks=list(checks), **parts)


def save_unfinished(engine, checks: list, options: RunOptions) -> Path:
    """Dump the raw results as JSON when reporting fails, so a long run is never lost: in the
    report folder, or the temp folder when that one refuses the write (full, read-only)."""
    out = Path(f"unfinished-{new_run_id()}.json")
    try:
        record = build_run_record(engine, checks, options, out.stem).to_dict()
    except Exception as exc:   # keep at least the checks, whatever else broke
        from dataclasses import asdict

        record = {"checks": [asdict(c) for c in checks], "error": repr(exc)}
    return write_text_somewhere([options.report_dir, tempfile.gettempdir()], out.name,
                                json.dumps(record, default=str, indent=1))


def begin_run(options: RunOptions, data_source: str | None = None) -> str:
    """Insert this run's ``running`` row (header and process) and return its id."""
    from .store import Store

    with Store(options.db) as store:
        return store.begin_run(RunRecord(run_id=new_run_id(), started=options.started,
                                         git_commit=git_commit(options.cwd), versions=versions(),
                                         config=RunConfig(data=data_source)))


def discard_run(options: RunOptions, run_id: str) -> None:
    """Delete a begun run that has nothing to record (no check built an engine)."""
    from .store import Store

    with Store(options.db) as store:
        store.discard_run(run_id)


def finish_run(engine, checks: list, options: RunOptions, run_id: str | None = None) -> dict:
    """Write the database row and the reports for this run (begun as ``run_id``, or now);
    compare with a baseline if asked.

    Returns {run_id, paths, regressions, text} where text is the terminal summary.
    """
    from .report import terminal_summary, write_reports
    from .store import Store

    run_id = run_id or begin_run(options, engine.data_source)
    store = Store(options.db)
    run = build_run_record(engine, checks, options, run_id)
    started = time.perf_counter()
    store.record(run)
    faults.point("run-recorded")
    paths = write_reports(run, Path(options.report_dir))
    lines = [terminal_summary(run),
             f"  {time.perf_counter() - started:8.1f} s  writing the reports and the database row",
             f"adversarial sets: {run.cache['adversarial_generated']} generated, "
             f"{run.cache['adversarial_reused']} reused from the cache; predictions: "
             f"{run.cache.get('predictions_generated', 0)} made, {run.cache.get('predictions_reused', 0)} reused; "
             f"speeds: {run.cache.get('speeds_timed', 0)} timed, {run.cache.get('speeds_reused', 0)} as this "
             f"machine timed them before (--vitrobust-retime to time anew)"]
    regressions = []
    if options.save_baseline:
        store.save_baseline(options.save_baseline, run_id)
        lines.append(f"saved run {run_id} as baseline {options.save_baseline!r}")
    if options.baseline:
        from .gate import comparability_notes, compare, table

        baseline = store.baseline_run(options.baseline)
        lines += comparability_notes(run, baseline)
        regressions = compare(run, baseline, margin=options.margin, confidence=options.confidence)
        if regressions:
            lines.append(f"REGRESSIONS against baseline {options.baseline!r}:\n{table(regressions)}")
        else:
            lines.append(f"no regressions against baseline {options.baseline!r}")
    report_path = paths.get("html") or next(iter(paths.values()), None)
    lines.append(f"report: {report_path}")
    return {"run_id": run_id, "paths": paths, "regressions": regressions, "text": "\n".join(lines)}
