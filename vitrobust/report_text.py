"""The run as plain text: the terminal summary pytest prints, and the Markdown report.

Both read the same cells (:mod:`vitrobust.report_format`) as the HTML page, so a value, an
interval or a verdict reads the same everywhere. No torch.
"""
from __future__ import annotations

from tabulate import tabulate

from .profile import by_kind, summary_lines
from .record import RunRecord
from .report_format import (DATA_HEADERS, MODEL_HEADERS, SEED_HEADERS, data_rows, check_values, meas_headers,
                            meas_rows, model_rows, not_reproduced, numerics_text, outcome_line, params_text,
                            seed_rows, statistic, summary_counts, interval_label, warning_text)


def terminal_summary(run: RunRecord) -> str:
    """Plain-text tables of checks and measurements, for pytest's terminal summary."""
    counts = summary_counts(run)
    lines = [f"vitrobust run {run.run_id}: {outcome_line(counts)} "
             f"({counts['checks']} checks, {counts['measurements']} measurements, "
             f"{counts['models']} models)", f"numerics: {numerics_text(run)}"]
    if run.checks:
        rows = [(c.spec, c.check, params_text(c.params), c.status, c.outcome,
                 "\n".join(f"{k} = {v}" for k, v in check_values(run, c)), statistic(c))
                for c in run.checks]
        lines += ["", tabulate(rows, headers=("spec", "check", "params", "verdict", "outcome",
                                              f"values {interval_label(run)}", "statistic"))]
    keep = (0, 1, 2, 5)   # measurement, spec, value, strategy: the terminal is narrow
    rows = [tuple(r[i] for i in keep) for r in meas_rows(run)]
    if rows:
        headers = meas_headers(run)
        lines += ["", tabulate(rows, headers=[headers[i] for i in keep])]
    for c in not_reproduced(run):
        lines.append(f"did not reproduce: {c.spec}: {c.check} "
                     f"[{params_text(c.params)}]: {c.xfail_reason or ''}")
    for w in run.warnings:
        lines.append(f"warning ({w.kind}): {warning_text(w)}")
    return "\n".join(lines + summary_lines(run.profile))


def markdown(run: RunRecord, plot_files: dict[str, str] | None = None) -> str:
    """The report as GitHub Markdown; ``plot_files`` maps plot titles to relative PNG paths."""
    counts = summary_counts(run)
    out = [f"# vitrobust report `{run.run_id}`", "",
           f"Started {run.started}, finished {run.finished}, "
           f"commit `{run.git_commit or 'unknown'}`. {params_text(run.versions)}", "",
           f"Numerics: {numerics_text(run)}.", "",
           "## Summary", "",
           f"**{outcome_line(counts)}** — {counts['checks']} checks in {counts['specs']} specs, "
           f"{counts['measurements']} measurements, {counts['models']} models, "
           f"{counts['warnings']} warnings.", ""]
    for spec in run.spec_ids():
        checks = run.checks_of(spec)
        out += [f"## Spec `{spec}`", ""]
        claims = sorted({c.claim for c in checks if c.claim})
        out += [f"> {claim}" for claim in claims] + ([""] if claims else [])
        if checks:
            rows = [(f"`{c.check}`", params_text(c.params), c.status, c.outcome,
                     "<br>".join(f"{k} = {v}" for k, v in check_values(run, c)), statistic(c))
                    for c in checks]
            out += [tabulate(rows, headers=("check", "params", "verdict", "outcome",
                                            f"values {interval_label(run)}", "statistic"),
                             tablefmt="github"), ""]
        else:
            out += ["(measurements only)", ""]
    out += ["## Claims that did not reproduce", ""]
    failed = not_reproduced(run)
    for c in failed:
        values = "; ".join(f"{k} = {v}" for k, v in check_values(run, c))
        out.append(f"- **{c.spec}** `{c.check}` ({params_text(c.params)}): "
                   f"{c.xfail_reason or 'no reason given'} — {values}; {statistic(c)}")
    out += (["Every claim reproduced."] if not failed else []) + [""]
    seeds = seed_rows(run)
    if seeds:
        out += [f"## Across {run.config.seeds} training seeds", "",
                tabulate(seeds, headers=SEED_HEADERS, tablefmt="github", disable_numparse=True), ""]
    out += ["## Models", "", tabulate(model_rows(run), headers=MODEL_HEADERS, tablefmt="github"),
            "", "## Data", "", tabulate(data_rows(run), headers=DATA_HEADERS, tablefmt="github"),
            "", "## Measurements", "",
            tabulate(meas_rows(run), headers=meas_headers(run), tablefmt="github"), "",
            "## Warnings", ""]
    out += [f"- **{w.kind}**: {warning_text(w)}" for w in run.warnings]
    out += (["None."] if not run.warnings else []) + [""]
    if run.profile:   # own seconds: nested phases are not counted twice (vitrobust.profile)
        out += ["## Where the time went", "",
                tabulate([(kind, f"{s:.1f}") for kind, s in by_kind(run.profile).items()],
                         headers=("phase", "seconds"), tablefmt="github"), "",
                tabulate([(i["kind"], i["name"], f"{i['seconds']:.1f}", f"{i['total']:.1f}", i["count"])
                          for i in run.profile[:15]],
                         headers=("phase", "what", "own s", "with nested s", "times"), tablefmt="github"), ""]
    if plot_files:
        out += ["## Plots", ""] + [f"![{t}]({p})" for t, p in plot_files.items()] + [""]
    return "\n".join(out)
