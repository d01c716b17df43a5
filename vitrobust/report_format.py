"""What every report shows, as text cells: one place decides how a number, an interval, a check's
values or a warning reads, so the terminal, Markdown, HTML and the gate never disagree.

Intervals are shown as recorded: a measurement's ``interval`` is at its ``confidence``, a check's
``intervals`` at the check's. Only where a rate has counts but no recorded interval is a Wilson
interval (Wilson 1927) computed, at the measurement's confidence, else the run's. An interval at
another confidence than the run's says so (``at 90%``). Reads :class:`vitrobust.record.RunRecord`;
no torch.
"""
from __future__ import annotations

import math
from collections import Counter

from .record import CheckRecord, MeasurementRecord, RunRecord, RunWarning
from .stats import wilson_interval

OUTCOME_ORDER = ("passed", "failed", "xfailed", "xpassed", "skipped", "error")
MODEL_HEADERS = ("model", "device", "params", "size MB", "GFLOPs", "throughput img/s", "clean acc", "meta")


def fmt(value) -> str:
    """A number as a table shows it: thousands separated, three decimals, tiny ones in g."""
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


def percent(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def interval_of(meas: MeasurementRecord, run_confidence: float):
    """``(lo, hi)``: the recorded interval, else Wilson from k and n at the measurement's
    confidence (the run's when it has none), else None."""
    if meas.interval:
        return tuple(meas.interval)
    if meas.k is not None and meas.n:
        return wilson_interval(int(meas.k), int(meas.n), meas.confidence or run_confidence)
    return None


def measured(meas: MeasurementRecord, run_confidence: float, *, interval=None,
             confidence: float | None = None) -> str:
    """``0.412 [0.345, 0.481] (80/195)``; ``interval`` at ``confidence`` overrides the
    measurement's own (a check's interval for this value)."""
    ci = tuple(interval) if interval else interval_of(meas, run_confidence)
    conf = (confidence if interval else meas.confidence) or run_confidence
    text = fmt(meas.value)
    if ci is not None:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if meas.n is not None:
        text += f" ({meas.k}/{meas.n})"
    if ci is not None and not math.isclose(conf, run_confidence):
        text += f" at {percent(conf)}"
    return text


def interval_label(run: RunRecord) -> str:
    """``[95% interval] (k/n)``: what follows a value, at the run's confidence."""
    return f"[{percent(run.config.confidence)} interval] (k/n)"


def params_text(params) -> str:
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def config_text(run: RunRecord) -> str:
    c = run.config
    return params_text({"data": c.data, "zoo": c.zoo, "max_images": c.max_images,
                        "confidence": c.confidence, "device": c.device, "precision": c.precision,
                        "batch_size": c.batch_size, "args": " ".join(map(str, c.args))})


def numerics_text(run: RunRecord) -> str:
    """``torch 2.4.1, cpu fp32, 8 threads, AVX2, deterministic algorithms off, matmul highest``:
    what bitwise reproduction needs (vitrobust.numerics), for the reports' headers. The parts
    an older record lacks are left out."""
    c = run.config
    parts = [f"torch {(run.versions or {}).get('torch', 'unknown')}", f"{c.device} {c.precision}"]
    if c.threads is not None:
        parts.append(f"{c.threads} threads")
    if c.cpu_capability:
        parts.append(str(c.cpu_capability))
    if c.deterministic is not None:
        parts.append(f"deterministic algorithms {'on' if c.deterministic else 'off'}")
    if c.matmul_precision:
        parts.append(f"matmul {c.matmul_precision}")
    return ", ".join(parts)


def check_values(run: RunRecord, check: CheckRecord) -> list[tuple[str, str]]:
    """``[(measure key, value with interval)]`` for the values a check compared."""
    by_spec, by_key = {}, {}
    for m in run.measurements:
        by_spec.setdefault((m.spec, m.key), m)
        by_key.setdefault(m.key, m)
    conf = run.config.confidence
    out = []
    for key, value in check.values.items():
        meas = by_spec.get((check.spec, key)) or by_key.get(key)
        interval = check.intervals.get(key)
        if meas is not None:
            out.append((key, measured(meas, conf, interval=interval, confidence=check.confidence)))
        elif interval:
            out.append((key, f"{fmt(value)} [{interval[0]:.3f}, {interval[1]:.3f}]"))
        else:
            out.append((key, fmt(value)))
    return out


def statistic(check: CheckRecord) -> str:
    stat = check.statistic or ""
    if check.p_value is not None and "p=" not in stat:
        stat = f"{stat} p={check.p_value:.3g}".strip()
    return stat


def summary_counts(run: RunRecord) -> dict:
    return {"checks": len(run.checks),
            "outcomes": dict(Counter(c.outcome or "unknown" for c in run.checks)),
            "statuses": dict(Counter(c.status or "unknown" for c in run.checks)),
            "specs": len(run.spec_ids()), "measurements": len(run.measurements),
            "models": len(run.models), "warnings": len(run.warnings)}


def outcome_line(counts: dict) -> str:
    outcomes = counts["outcomes"]
    order = [o for o in OUTCOME_ORDER if o in outcomes] + sorted(set(outcomes) - set(OUTCOME_ORDER))
    return ", ".join(f"{outcomes[o]} {o}" for o in order) or "no checks"


def not_reproduced(run: RunRecord) -> list[CheckRecord]:
    """Checks marked xfail that failed as expected: the paper claims this zoo did not reproduce."""
    return [c for c in run.checks if c.outcome == "xfailed"]


def warning_text(w: RunWarning) -> str:
    """The message, led by the model it concerns unless the message already names it."""
    return f"{w.model}: {w.message}" if w.model and w.model not in w.message else w.message


def model_rows(run: RunRecord) -> list[tuple]:
    return [(name, m.device or run.config.device, fmt(m.params), fmt(m.size_mb), fmt(m.gflops),
             fmt(m.throughput), fmt(m.clean_acc), params_text(m.meta)) for name, m in run.models.items()]


DATA_HEADERS = ("data slice", "images", "classes", "skipped (unreadable)", "fingerprint")


def data_rows(run: RunRecord) -> list[tuple]:
    """One row per data slice; the image ids themselves are in report.json."""
    return [(key, d.images, f"{d.classes} of {d.num_classes}", len(d.skipped), d.fingerprint)
            for key, d in run.data.items()]


def meas_headers(run: RunRecord) -> tuple:
    return ("measurement", "spec", f"value {interval_label(run)}", "robust acc", "clean acc", "strategy", "data")


def meas_rows(run: RunRecord) -> list[tuple]:
    conf = run.config.confidence
    return [(m.key, m.spec or "", measured(m, conf), fmt(m.robust_acc), fmt(m.clean_acc),
             m.strategy or "", m.data or "") for m in run.measurements]


SEED_HEADERS = ("spec", "check", "params", "across seeds", "per seed", "effect per seed (left - right)",
                "heterogeneity p")


def seed_rows(run: RunRecord) -> list[tuple]:
    """One row per check decided across seed replicas (``--vitrobust-seeds K``): the combined
    verdict, each seed's, each seed's left - right per link, and the homogeneity p-values."""
    rows = []
    for c in run.checks:
        if not c.replicas:
            continue
        effects = "; ".join(", ".join("" if e is None else f"{e:+.3f}" for e in r.get("effects") or [])
                            for r in c.replicas)
        rows.append((c.spec, c.check, params_text(c.params), c.status,
                     "/".join(r["status"] for r in c.replicas), effects,
                     ", ".join(f"{p:.3g}" for p in c.heterogeneity.values())))
    return rows
