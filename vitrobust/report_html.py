"""The run as one self-contained HTML page: inline CSS, plots as base64 PNG data URIs, no script
and no external resource, so the file can be mailed or archived as is.

Every string that comes from a spec, a zoo config or a model (check text, claims, parameters,
reasons, messages, warnings, names) is HTML-escaped where it is written: a spec is user input and
the page must not run it. Cells read :mod:`vitrobust.report_format`, like the text reports. No
torch.
"""
from __future__ import annotations

import base64
import html
import re

from .plots import Plot
from .record import CheckRecord, RunRecord
from .report_format import (DATA_HEADERS, MODEL_HEADERS, OUTCOME_ORDER, SEED_HEADERS, check_values, config_text,
                            data_rows, interval_label, meas_headers, meas_rows, model_rows, not_reproduced,
                            params_text, seed_rows, statistic, summary_counts, warning_text)

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
.xfailed{background:#9a6700}.xpassed{background:#8250df}.varies{background:#b35900}.skipped,.inconclusive{background:#6b7280}
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
    """An HTML table; cells are escaped except in ``raw_cols``, which the caller escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell if i in raw_cols else _e(cell)}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(text) -> str:
    """The verdict's full message, folded: it repeats the values and statistic shown beside it."""
    return f"<details><summary>details</summary><pre>{_e(text)}</pre></details>" if text else ""


def _values(run: RunRecord, check: CheckRecord) -> str:
    return "<br>".join(f"<code>{_e(k)}</code> = {_e(v)}" for k, v in check_values(run, check))


def spec_anchor(spec) -> str:
    return "spec-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(spec))


def _header(run: RunRecord) -> list[str]:
    return ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>vitrobust report {_e(run.run_id)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<header><h1>vitrobust report <code>{_e(run.run_id)}</code></h1>",
            f'<p class="meta">started {_e(run.started)} · finished {_e(run.finished)} · commit '
            f"<code>{_e(run.git_commit or 'unknown')}</code> · {_e(params_text(run.versions))}</p>",
            f'<p class="meta">config: {_e(config_text(run))}</p></header>']


def _summary(run: RunRecord) -> str:
    counts = summary_counts(run)
    badges = "".join(f"{_badge(o)} {n} " for o, n in sorted(
        counts["outcomes"].items(), key=lambda kv: (OUTCOME_ORDER + (kv[0],)).index(kv[0])))
    return (f'<section id="summary"><h2>Summary</h2><p class="counts">{badges}</p>'
            + _table(("specs", "checks", "holds", "fails", "inconclusive", "varies", "error",
                      "measurements", "models", "warnings"),
                     [(counts["specs"], counts["checks"],
                       *(counts["statuses"].get(s, 0) for s in
                         ("holds", "fails", "inconclusive", "varies", "error")),
                       counts["measurements"], counts["models"], counts["warnings"])])
            + "</section>")


def _spec_section(run: RunRecord, spec: str) -> str:
    checks = run.checks_of(spec)
    parts = [f'<section id="{spec_anchor(spec)}" class="spec" data-spec="{_e(spec)}">'
             f"<h2>Spec <code>{_e(spec)}</code></h2>"]
    parts += [f'<p class="claim">{_e(claim)}</p>'
              for claim in sorted({c.claim for c in checks if c.claim})]
    rows = [(f"<code>{_e(c.check)}</code>", _e(params_text(c.params)), _badge(c.status),
             _badge(c.outcome), _values(run, c), _e(statistic(c)), _details(c.message))
            for c in checks]
    if rows:
        parts.append(_table(("check", "params", "verdict", "outcome",
                             f"measured {interval_label(run)}", "statistic", "message"),
                            rows, raw_cols=range(7)))
    else:
        parts.append("<p>Measurements only.</p>")
    return "".join(parts) + "</section>"


def _not_reproduced(run: RunRecord) -> str:
    failed = not_reproduced(run)
    if not failed:
        body = "<p>Every claim reproduced.</p>"
    else:
        rows = [(_e(c.spec), f"<code>{_e(c.check)}</code>", _e(params_text(c.params)),
                 _e(c.xfail_reason or "no reason given"), _values(run, c), _e(statistic(c)))
                for c in failed]
        body = _table(("spec", "check", "params", "reason", "measured", "statistic"), rows,
                      raw_cols=range(6))
    return f'<section id="not-reproduced"><h2>Claims that did not reproduce</h2>{body}</section>'


def _warnings(run: RunRecord, notes: list[str]) -> str:
    shown = [(w.kind, warning_text(w)) for w in run.warnings] + [("plot", n) for n in notes]
    body = "".join(f'<p class="warning"><b>{_e(k)}</b>: {_e(m)}</p>' for k, m in shown)
    return f'<section id="warnings"><h2>Warnings</h2>{body or "<p>None.</p>"}</section>'


def _plots(plots: list[Plot]) -> str:
    figures = []
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        figures.append(f'<figure id="plot-{_e(plot.name)}"><img alt="{_e(plot.title)}" '
                       f'src="data:image/png;base64,{data}"><figcaption>{_e(plot.title)}'
                       "</figcaption></figure>")
    body = "\n".join(figures) or "<p>No plottable data in this run.</p>"
    return f'<section id="plots"><h2>Plots</h2>{body}</section>'


def html_page(run: RunRecord, plots: list[Plot] | None = None,
              notes: list[str] | None = None) -> str:
    """One self-contained HTML page (inline CSS, base64 images, no script, no external link);
    ``notes`` are one-line problems met while plotting, shown with the warnings."""
    specs = run.spec_ids()
    seeds = seed_rows(run)
    links = [("summary", "Summary")] + [(spec_anchor(s), s) for s in specs] + [
        ("not-reproduced", "Did not reproduce"), *([("seeds", "Seeds")] if seeds else []),
        ("models", "Models"), ("data", "Data"),
        ("measurements", "Measurements"), ("warnings", "Warnings"), ("plots", "Plots")]
    parts = _header(run)
    parts.append("<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links) + "</nav>")
    parts.append(_summary(run))
    parts += [_spec_section(run, spec) for spec in specs]
    parts.append(_not_reproduced(run))
    if seeds:
        parts.append(f'<section id="seeds"><h2>Across {run.config.seeds} training seeds</h2>'
                     + _table(SEED_HEADERS, seeds) + "</section>")
    parts.append('<section id="models"><h2>Models</h2>'
                 + _table(MODEL_HEADERS, model_rows(run)) + "</section>")
    parts.append('<section id="data"><h2>Data</h2>'
                 + _table(DATA_HEADERS, data_rows(run)) + "</section>")
    parts.append('<section id="measurements"><h2>Measurements</h2>'
                 + _table(meas_headers(run), meas_rows(run)) + "</section>")
    parts.append(_warnings(run, notes or []))
    parts.append(_plots(plots or []))
    parts.append('<footer class="meta"><p>Generated by vitrobust; the full run record with every '
                 "per-image outcome is in report.json beside this page.</p></footer></body></html>")
    return "\n".join(parts)
