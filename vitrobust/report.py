"""Reports of a run record: terminal summary, Markdown, JSON, one self-contained HTML page, PNGs.

``write_reports(run, out_dir)`` writes ``out_dir/<run_id>/`` with ``report.md``, ``report.json``
(the whole run record, every measurement and per-image outcome), ``report.html`` (inline CSS,
plots embedded as base64 PNG data URIs, no script and no external resource, so the file can be
mailed or archived as is) and ``plots/*.png``, then points ``out_dir/latest`` at the run (a
relative symlink, or a text file holding the run id where symlinks are not available).

Every measured value is shown with its Wilson interval (Wilson 1927) and its denominator, and
every check with its verdict, pytest outcome and test statistic. Consumes only the JSON-able run
record of ``shared/INTERFACES.md``; no torch.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from .plots import Plot, make_plots
from .stats import wilson_interval

OUTCOME_ORDER = ("passed", "failed", "xfailed", "xpassed", "skipped", "error")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ReportError(ValueError):
    """A run record that cannot be reported (e.g. no usable run id); one line."""


# -- formatting -------------------------------------------------------------------------------
def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1e3:
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def interval_of(meas: dict, confidence: float = 0.95):
    """The measurement's interval, or its Wilson interval from k and n, or None."""
    if meas.get("interval"):
        return tuple(meas["interval"])
    if meas.get("k") is not None and meas.get("n"):
        return wilson_interval(int(meas["k"]), int(meas["n"]), confidence)
    return None


def measured(meas: dict, confidence: float = 0.95) -> str:
    """``0.412 [0.345, 0.481] (80/195)``."""
    text = fmt(meas.get("value"))
    ci = interval_of(meas, confidence)
    if ci is not None:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if meas.get("n") is not None:
        text += f" ({meas.get('k')}/{meas['n']})"
    return text


def params_text(params) -> str:
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def _confidence(run) -> float:
    return float((run.get("config") or {}).get("confidence") or 0.95)


def _index(run):
    by_spec, by_key = {}, {}
    for m in run.get("measurements") or []:
        by_spec.setdefault((m.get("spec"), m.get("key")), m)
        by_key.setdefault(m.get("key"), m)
    return by_spec, by_key


def check_values(run: dict, check: dict) -> list[tuple[str, str]]:
    """``[(measure key, value with interval)]`` for the values a check compared."""
    by_spec, by_key = _index(run)
    conf = _confidence(run)
    out = []
    for key, value in (check.get("values") or {}).items():
        meas = by_spec.get((check.get("spec"), key)) or by_key.get(key)
        out.append((key, measured(meas, conf) if meas else fmt(value)))
    return out


def _statistic(check) -> str:
    stat = check.get("statistic") or ""
    p = check.get("p_value")
    if p is not None and "p=" not in stat:
        stat = f"{stat} p={p:.3g}".strip()
    return stat


def summary_counts(run: dict) -> dict:
    checks = run.get("checks") or []
    outcomes = Counter(c.get("outcome") or "unknown" for c in checks)
    statuses = Counter(c.get("status") or "unknown" for c in checks)
    return {"checks": len(checks), "outcomes": dict(outcomes), "statuses": dict(statuses),
            "specs": len({c.get("spec") for c in checks}
                         | {m.get("spec") for m in run.get("measurements") or [] if m.get("spec")}),
            "measurements": len(run.get("measurements") or []),
            "models": len(run.get("models") or {}), "warnings": len(run.get("warnings") or [])}


def _outcome_line(counts) -> str:
    outcomes = counts["outcomes"]
    order = [o for o in OUTCOME_ORDER if o in outcomes] + sorted(set(outcomes) - set(OUTCOME_ORDER))
    return ", ".join(f"{outcomes[o]} {o}" for o in order) or "no checks"


def specs_of(run: dict) -> list[str]:
    """Spec ids in first-seen order (checks first, then measurement-only specs)."""
    seen = {}
    for item in (run.get("checks") or []) + (run.get("measurements") or []):
        if item.get("spec") is not None:
            seen.setdefault(item["spec"], None)
    return list(seen)


def not_reproduced(run: dict) -> list[dict]:
    return [c for c in run.get("checks") or [] if c.get("outcome") == "xfailed"]


def _model_rows(run):
    rows = []
    for name, info in (run.get("models") or {}).items():
        meta = info.get("meta") or {}
        rows.append((name, fmt(info.get("params")), fmt(info.get("size_mb")),
                     fmt(info.get("gflops")), fmt(info.get("throughput")),
                     fmt(info.get("clean_acc")), params_text(meta)))
    return rows


MODEL_HEADERS = ("model", "params", "size MB", "GFLOPs", "throughput img/s", "clean acc", "meta")
MEAS_HEADERS = ("measurement", "spec", "value [interval] (k/n)", "robust acc", "clean acc",
                "strategy", "data")


def _meas_rows(run):
    conf = _confidence(run)
    return [(m.get("key"), m.get("spec") or "", measured(m, conf), fmt(m.get("robust_acc")),
             fmt(m.get("clean_acc")), m.get("strategy") or "", m.get("data") or "")
            for m in run.get("measurements") or []]


# -- terminal ---------------------------------------------------------------------------------
def terminal_summary(run: dict) -> str:
    """Plain-text tables of checks and measurements, for pytest's terminal summary."""
    counts = summary_counts(run)
    lines = [f"vitrobust run {run.get('run_id')}: {_outcome_line(counts)} "
             f"({counts['checks']} checks, {counts['measurements']} measurements, "
             f"{counts['models']} models)"]
    checks = run.get("checks") or []
    if checks:
        rows = [(c.get("spec"), c.get("check"), params_text(c.get("params")), c.get("status"),
                 c.get("outcome"), "\n".join(f"{k} = {v}" for k, v in check_values(run, c)),
                 _statistic(c)) for c in checks]
        lines += ["", tabulate(rows, headers=("spec", "check", "params", "verdict", "outcome",
                                              "values [interval] (k/n)", "statistic"))]
    rows = [r[:4] + r[5:6] for r in _meas_rows(run)]
    if rows:
        lines += ["", tabulate(rows, headers=MEAS_HEADERS[:4] + MEAS_HEADERS[5:6])]
    for c in not_reproduced(run):
        lines.append(f"did not reproduce: {c.get('spec')}: {c.get('check')} "
                     f"[{params_text(c.get('params'))}]: {c.get('xfail_reason') or ''}")
    for w in run.get("warnings") or []:
        lines.append(f"warning ({w.get('kind')}): {w.get('message')}")
    return "\n".join(lines)


# -- Markdown ---------------------------------------------------------------------------------
def markdown(run: dict, plot_files: dict[str, str] | None = None) -> str:
    """The report as GitHub Markdown; ``plot_files`` maps plot titles to relative PNG paths."""
    counts = summary_counts(run)
    versions = params_text(run.get("versions"))
    out = [f"# vitrobust report `{run.get('run_id')}`", "",
           f"Started {run.get('started')}, finished {run.get('finished')}, "
           f"commit `{run.get('git_commit') or 'unknown'}`. {versions}", "",
           "## Summary", "",
           f"**{_outcome_line(counts)}** — {counts['checks']} checks in {counts['specs']} specs, "
           f"{counts['measurements']} measurements, {counts['models']} models, "
           f"{counts['warnings']} warnings.", ""]
    for spec in specs_of(run):
        checks = [c for c in run.get("checks") or [] if c.get("spec") == spec]
        out += [f"## Spec `{spec}`", ""]
        claims = sorted({c.get("claim") for c in checks if c.get("claim")})
        out += [f"> {claim}" for claim in claims] + ([""] if claims else [])
        if checks:
            rows = [(f"`{c.get('check')}`", params_text(c.get("params")), c.get("status"),
                     c.get("outcome"), "<br>".join(f"{k} = {v}" for k, v in check_values(run, c)),
                     _statistic(c)) for c in checks]
            out += [tabulate(rows, headers=("check", "params", "verdict", "outcome",
                                            "values [interval] (k/n)", "statistic"),
                             tablefmt="github"), ""]
        else:
            out += ["(measurements only)", ""]
    out += ["## Claims that did not reproduce", ""]
    failed = not_reproduced(run)
    for c in failed:
        values = "; ".join(f"{k} = {v}" for k, v in check_values(run, c))
        out.append(f"- **{c.get('spec')}** `{c.get('check')}` ({params_text(c.get('params'))}): "
                   f"{c.get('xfail_reason') or 'no reason given'} — {values}; {_statistic(c)}")
    out += (["Every claim reproduced."] if not failed else []) + [""]
    out += ["## Models", "", tabulate(_model_rows(run), headers=MODEL_HEADERS, tablefmt="github"),
            "", "## Measurements", "",
            tabulate(_meas_rows(run), headers=MEAS_HEADERS, tablefmt="github"), "",
            "## Warnings", ""]
    out += [f"- **{w.get('kind')}**: {w.get('message')}" for w in run.get("warnings") or []]
    out += (["None."] if not run.get("warnings") else []) + [""]
    if plot_files:
        out += ["## Plots", ""] + [f"![{t}]({p})" for t, p in plot_files.items()] + [""]
    return "\n".join(out)


# -- HTML -------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1200px;
 padding:1rem 2rem;color:#1d2430;background:#fff;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e3e7ee;padding-bottom:.2rem;margin-top:2rem}
code{background:#f2f4f8;padding:0 .25rem;border-radius:3px;font-size:.92em}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d9dee7;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f4f8}tr:nth-child(even) td{background:#fafbfc}
.meta{color:#5a6476;font-size:.9rem}nav a{margin-right:1rem}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:.8rem;font-size:.85rem;
 font-weight:600;color:#fff;background:#6b7280}
.passed,.holds{background:#1a7f37}.failed,.fails,.error{background:#cf222e}
.xfailed{background:#9a6700}.xpassed{background:#8250df}.skipped,.inconclusive{background:#6b7280}
.counts .badge{font-size:1rem;margin-right:.4rem}
.claim{color:#5a6476;font-style:italic;margin:.2rem 0}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #e3e7ee}figcaption{font-size:.85rem;color:#5a6476}
.warning{background:#fff8c5;border-left:4px solid #9a6700;padding:.3rem .6rem;margin:.3rem 0}
details pre{white-space:pre-wrap;font-size:.8rem;margin:.3rem 0}summary{cursor:pointer;color:#5a6476}
"""


def _e(text) -> str:
    return html.escape("" if text is None else str(text))


def _badge(word) -> str:
    word = word or "unknown"
    cls = word if re.fullmatch(r"[a-z]+", word) else "unknown"
    return f'<span class="badge {cls}">{_e(word)}</span>'


def _table(headers, rows, raw_cols=()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell if i in raw_cols else _e(cell)}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(text) -> str:
    """The verdict's full message, folded: it repeats the values and statistic shown beside it."""
    return f"<details><summary>details</summary><pre>{_e(text)}</pre></details>" if text else ""


def spec_anchor(spec) -> str:
    return "spec-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(spec))


def html_page(run: dict, plots: list[Plot] | None = None, notes: list[str] | None = None) -> str:
    """One self-contained HTML page (inline CSS, base64 images, no script, no external link)."""
    counts = summary_counts(run)
    specs = specs_of(run)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>vitrobust report {_e(run.get('run_id'))}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<header><h1>vitrobust report <code>{_e(run.get('run_id'))}</code></h1>",
             f"<p class=\"meta\">started {_e(run.get('started'))} · finished "
             f"{_e(run.get('finished'))} · commit <code>{_e(run.get('git_commit') or 'unknown')}"
             f"</code> · {_e(params_text(run.get('versions')))}</p>",
             f"<p class=\"meta\">config: {_e(params_text(run.get('config')))}</p></header>"]
    links = [("summary", "Summary")] + [(spec_anchor(s), s) for s in specs] + [
        ("not-reproduced", "Did not reproduce"), ("models", "Models"),
        ("measurements", "Measurements"), ("warnings", "Warnings"), ("plots", "Plots")]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links) + "</nav>")

    badges = "".join(f"{_badge(o)} {n} " for o, n in sorted(
        counts["outcomes"].items(), key=lambda kv: (OUTCOME_ORDER + (kv[0],)).index(kv[0])))
    parts.append(f'<section id="summary"><h2>Summary</h2><p class="counts">{badges}</p>')
    parts.append(_table(("specs", "checks", "holds", "fails", "inconclusive", "error",
                         "measurements", "models", "warnings"),
                        [(counts["specs"], counts["checks"],
                          *(counts["statuses"].get(s, 0) for s in
                            ("holds", "fails", "inconclusive", "error")),
                          counts["measurements"], counts["models"], counts["warnings"])]))
    parts.append("</section>")

    for spec in specs:
        checks = [c for c in run.get("checks") or [] if c.get("spec") == spec]
        parts.append(f'<section id="{spec_anchor(spec)}" class="spec" data-spec="{_e(spec)}">'
                     f"<h2>Spec <code>{_e(spec)}</code></h2>")
        for claim in sorted({c.get("claim") for c in checks if c.get("claim")}):
            parts.append(f'<p class="claim">{_e(claim)}</p>')
        rows = [(f"<code>{_e(c.get('check'))}</code>", _e(params_text(c.get("params"))),
                 _badge(c.get("status")), _badge(c.get("outcome")),
                 "<br>".join(f"<code>{_e(k)}</code> = {_e(v)}" for k, v in check_values(run, c)),
                 _e(_statistic(c)), _details(c.get("message")))
                for c in checks]
        if rows:
            parts.append(_table(("check", "params", "verdict", "outcome",
                                 "measured [Wilson interval] (k/n)", "statistic", "message"),
                                rows, raw_cols=range(7)))
        else:
            parts.append("<p>Measurements only.</p>")
        parts.append("</section>")

    parts.append('<section id="not-reproduced"><h2>Claims that did not reproduce</h2>')
    failed = not_reproduced(run)
    if failed:
        rows = [(_e(c.get("spec")), f"<code>{_e(c.get('check'))}</code>",
                 _e(params_text(c.get("params"))), _e(c.get("xfail_reason") or "no reason given"),
                 "<br>".join(f"<code>{_e(k)}</code> = {_e(v)}" for k, v in check_values(run, c)),
                 _e(_statistic(c))) for c in failed]
        parts.append(_table(("spec", "check", "params", "reason", "measured", "statistic"),
                            rows, raw_cols=range(6)))
    else:
        parts.append("<p>Every claim reproduced.</p>")
    parts.append("</section>")

    parts.append('<section id="models"><h2>Models</h2>'
                 + _table(MODEL_HEADERS, _model_rows(run)) + "</section>")
    parts.append('<section id="measurements"><h2>Measurements</h2>'
                 + _table(MEAS_HEADERS, _meas_rows(run)) + "</section>")
    parts.append('<section id="warnings"><h2>Warnings</h2>')
    warnings = [(w.get("kind"), w.get("message")) for w in run.get("warnings") or []]
    warnings += [("plot", note) for note in notes or []]
    parts += [f'<p class="warning"><b>{_e(k)}</b>: {_e(m)}</p>' for k, m in warnings]
    parts.append("<p>None.</p>" if not warnings else "")
    parts.append("</section>")

    parts.append('<section id="plots"><h2>Plots</h2>')
    for plot in plots or []:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f'<figure id="plot-{_e(plot.name)}"><img alt="{_e(plot.title)}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{_e(plot.title)}'
                     f"</figcaption></figure>")
    if not plots:
        parts.append("<p>No plottable data in this run.</p>")
    parts.append("</section><footer class=\"meta\"><p>Generated by vitrobust; the full run "
                 "record with every per-image outcome is in report.json beside this page.</p>"
                 "</footer></body></html>")
    return "\n".join(parts)


# -- files ------------------------------------------------------------------------------------
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


def write_reports(run: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every report of ``run`` under ``out_dir/<run_id>/``; returns ``{kind: path}``.

    Kinds: ``md``, ``json``, ``html``, ``latest`` and ``png:<plot name>`` per plot.
    """
    run_id = str(run.get("run_id") or "")
    if not _SAFE_ID.match(run_id):
        raise ReportError(f"run id {run_id!r} is not usable as a folder name")
    out_dir = Path(out_dir)
    folder = out_dir / run_id
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    plots, notes = make_plots(run)
    paths: dict[str, Path] = {}
    plot_files = {}
    for plot in plots:
        path = folder / "plots" / f"{plot.name}.png"
        path.write_bytes(plot.png)
        paths[f"png:{plot.name}"] = path
        plot_files[plot.title] = f"plots/{plot.name}.png"
    paths["json"] = folder / "report.json"
    paths["json"].write_text(json.dumps(_jsonable(run), indent=1, default=str), encoding="utf-8")
    paths["md"] = folder / "report.md"
    paths["md"].write_text(markdown(run, plot_files), encoding="utf-8")
    paths["html"] = folder / "report.html"
    paths["html"].write_text(html_page(run, plots, notes), encoding="utf-8")
    paths["latest"] = update_latest(out_dir, run_id)
    return paths
