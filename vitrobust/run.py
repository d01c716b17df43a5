"""Finishing a run: assemble the run record, write reports, record it, apply baselines.

Shared by the pytest plugin and the CLI so both produce the same artifacts.
"""
from __future__ import annotations

import datetime as dt
import platform
import secrets
import subprocess
from pathlib import Path

from . import __version__


def local_time_iso() -> str:
    """Local time to the second, as the run record's ``started`` / ``finished`` carry it (the store
    stamps its own rows in UTC)."""
    return dt.datetime.now().isoformat(timespec="seconds")


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


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


def build_run_record(engine, checks: list[dict], options: dict, run_id: str, started: str) -> dict:
    parts = engine.run_record_parts()
    return {
        "run_id": run_id, "started": started,
        "finished": local_time_iso(),
        "git_commit": git_commit(options.get("cwd")), "versions": versions(),
        "config": {"data": engine.data_source, "zoo": options.get("zoo"),
                   "max_images": getattr(engine, "max_images", None),
                   "confidence": options.get("confidence", 0.95), "args": options.get("args", [])},
        "models": parts["models"], "measurements": parts["measurements"], "checks": checks,
        "artifacts": parts["artifacts"], "warnings": parts["warnings"], "cache": parts["cache"],
    }


def save_unfinished(engine, checks: list[dict], options: dict) -> Path:
    """Dump the raw results as JSON when reporting fails, so a long run is never lost."""
    import json

    out = Path(options["report_dir"]) / f"unfinished-{new_run_id()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        parts = engine.run_record_parts()
    except Exception as exc:  # keep at least the checks
        parts = {"error": repr(exc)}
    out.write_text(json.dumps({"checks": checks, **parts}, default=str, indent=1))
    return out


def finish_run(engine, checks: list[dict], options: dict) -> dict:
    """Write reports and the database row for this run; compare with a baseline if asked.

    Returns {run_id, report paths, regressions, text} where text is the terminal summary.
    """
    from .report import terminal_summary, write_reports
    from .store import Store

    started = options.get("started") or local_time_iso()
    store = Store(options["db"])
    run_id = store.begin_run({"started": started, "git_commit": git_commit(options.get("cwd")),
                              "versions": versions(), "config": {"data": engine.data_source}})
    run = build_run_record(engine, checks, options, run_id, started)
    store.record(run)
    paths = write_reports(run, Path(options["report_dir"]))
    stats = run.get("cache") or {"adversarial_generated": 0, "adversarial_reused": 0}
    lines = [terminal_summary(run),
             f"adversarial sets: {stats['adversarial_generated']} generated, "
             f"{stats['adversarial_reused']} reused from the cache"]
    regressions = []
    if options.get("save_baseline"):
        store.save_baseline(options["save_baseline"], run_id)
        lines.append(f"saved run {run_id} as baseline {options['save_baseline']!r}")
    if options.get("baseline"):
        from tabulate import tabulate

        from .gate import comparability_notes, compare

        baseline = store.baseline_run(options["baseline"])
        lines += comparability_notes(run, baseline)
        regressions = compare(run, baseline, asr_margin=options.get("asr_margin", 0.05),
                              confidence=options.get("confidence", 0.95))
        if regressions:
            rows = [r.row() if hasattr(r, "row") else r for r in regressions]
            lines.append(f"REGRESSIONS against baseline {options['baseline']!r}:\n"
                         + tabulate(rows, headers="keys" if rows and isinstance(rows[0], dict) else ()))
        else:
            lines.append(f"no regressions against baseline {options['baseline']!r}")
    report_path = paths.get("html") or next(iter(paths.values()), None)
    lines.append(f"report: {report_path}")
    return {"run_id": run_id, "paths": paths, "regressions": regressions, "text": "\n".join(lines)}
