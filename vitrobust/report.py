"""Writing a run's reports to disk: ``write_reports(run, out_dir)`` is the one entry point.

It writes ``out_dir/<run_id>/`` with ``report.json`` (exactly :meth:`RunRecord.to_dict`, every
measurement and per-image outcome; :meth:`RunRecord.from_dict` reads it back), ``report.md``
(:mod:`vitrobust.report_text`), ``report.html`` (:mod:`vitrobust.report_html`) and
``plots/*.png`` (:mod:`vitrobust.plots`), then points ``out_dir/latest`` at the run (a relative
symlink, or a text file holding the run id where symlinks are not available). Each file is
written under a temporary name and renamed, so a crash never leaves half a report.

``terminal_summary``, ``markdown`` and ``html_page`` are importable from here too. A plain dict
(the record of vitrobust 0.1) is read with ``RunRecord.from_dict`` first. No torch.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from . import faults
from .errors import VitrobustError
from .fileio import atomic_write, atomic_write_text
from .plots import make_plots
from .record import RunRecord
from .report_html import html_page
from .report_text import markdown, terminal_summary

__all__ = ["ReportError", "write_reports", "update_latest", "resolve_latest", "report_json",
           "terminal_summary", "markdown", "html_page"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ReportError(VitrobustError):
    """A run record that cannot be reported (e.g. no usable run id); one line."""


def _jsonable(obj):
    """NaN and infinities become null, so report.json is strict JSON; numpy values become lists
    and plain numbers."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def report_json(run: RunRecord) -> str:
    """``run.to_dict()`` as strict JSON (NaN as null): the text of ``report.json``."""
    return json.dumps(_jsonable(run.to_dict()), indent=1, default=str)


def update_latest(out_dir: Path, run_id: str) -> Path:
    """Point ``out_dir/latest`` at ``run_id``: a relative symlink, else a text file."""
    link = out_dir / "latest"
    tmp = out_dir / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(run_id, tmp, target_is_directory=True)
        os.replace(tmp, link)   # atomic: readers see the old or the new run, never neither
    except (OSError, NotImplementedError):
        if tmp.is_symlink():
            tmp.unlink()
        if link.is_symlink():
            link.unlink()
        link.write_text(run_id + "\n", encoding="utf-8")
    return link


def resolve_latest(out_dir: str | os.PathLike) -> Path | None:
    """The report folder ``out_dir/latest`` points at (symlink or text file), or None."""
    link = Path(out_dir) / "latest"
    if link.is_symlink() or link.is_dir():
        return link.resolve()
    if link.is_file():
        return Path(out_dir) / link.read_text(encoding="utf-8").strip()
    return None


def write_reports(run: RunRecord, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every report of ``run`` under ``out_dir/<run_id>/``; returns ``{kind: path}``.

    Kinds: ``md``, ``json``, ``html``, ``latest`` and ``png:<plot name>`` per plot.
    """
    run_id = str(run.run_id or "")
    if not _SAFE_ID.match(run_id):
        raise ReportError(f"run id {run_id!r} is not usable as a folder name")
    out_dir = Path(out_dir)
    folder = out_dir / run_id
    plots, notes = make_plots(run)
    paths: dict[str, Path] = {}
    plot_files = {}
    for plot in plots:
        path = folder / "plots" / f"{plot.name}.png"
        paths[f"png:{plot.name}"] = atomic_write(path, lambda tmp, png=plot.png: tmp.write_bytes(png))
        plot_files[plot.title] = f"plots/{plot.name}.png"
        faults.point("report-file")
    paths["json"] = atomic_write_text(folder / "report.json", report_json(run))
    faults.point("report-file")
    paths["md"] = atomic_write_text(folder / "report.md", markdown(run, plot_files))
    faults.point("report-file")
    paths["html"] = atomic_write_text(folder / "report.html", html_page(run, plots, notes))
    faults.point("report-file")
    paths["latest"] = update_latest(out_dir, run_id)
    return paths
