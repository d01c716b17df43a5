"""Finishing a run: assemble the run record, write reports, record it, apply baselines.

Shared by the pytest plugin and the CLI so both produce the same artifacts.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, defaults
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
    parts = engine.record_parts()
    return RunRecord(
        run_id=run_id, started=options.started or local_time_iso(), finished=local_time_iso(),
        git_commit=git_commit(options.cwd), versions=versions(),
        config=RunConfig(data=engine.data_source, zoo=options.zoo, max_images=engine.max_images,
                         confidence=options.confidence, args=list(options.args),
                         device=str(engine.device), precision=engine.precision,
                         batch_size=engine.batch_size, seeds=engine.seeds),
        checks=list(checks), **parts)


def save_unfinished(engine, checks: list, options: RunOptions) -> Path:
    """Dump the raw results as JSON when reporting fails, so a long run is never lost."""
    out = Path(options.report_dir) / f"unfinished-{new_run_id()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        record = build_run_record(engine, checks, options, out.stem).to_dict()
    except Exception as exc:   # keep at least the checks, whatever else broke
        from dataclasses import asdict

        record = {"checks": [asdict(c) for c in checks], "error": repr(exc)}
    out.write_text(json.dumps(record, default=str, indent=1))
    return out


def finish_run(engine, checks: list, options: RunOptions) -> dict:
    """Write reports and the database row for this run; compare with a baseline if asked.

    Returns {run_id, paths, regressions, text} where text is the terminal summary.
    """
    from .report import terminal_summary, write_reports
    from .store import Store

    store = Store(options.db)
    run_id = store.begin_run(RunRecord(run_id=new_run_id(), started=options.started,
                                       git_commit=git_commit(options.cwd), versions=versions(),
                                       config=RunConfig(data=engine.data_source)))
    run = build_run_record(engine, checks, options, run_id)
    started = time.perf_counter()
    store.record(run)
    paths = write_reports(run, Path(options.report_dir))
    lines = [terminal_summary(run),
             f"  {time.perf_counter() - started:8.1f} s  writing the reports and the database row",
             f"adversarial sets: {run.cache['adversarial_generated']} generated, "
             f"{run.cache['adversarial_reused']} reused from the cache"]
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
