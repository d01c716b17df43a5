"""``vitrobust diff A B``: do two runs give the same verdicts and the same non-timing numbers?

A and B are ``report.json`` files (or folders holding one). Verdicts are compared per check
(node id): status and pytest outcome. Numbers are compared per measurement (spec, key, data
slice): value, k, n, interval and per-image outcomes, and per model: weight hash, parameters,
size, GFLOPs and clean accuracy. Timings (throughput, build seconds, start and finish) are left
out: they measure the machine's moment, not the models. Floats agree within ``tolerance``
(float32 means and float64 ratios of the same counts differ in the eighth digit).

Used to show that a refactor moved nothing; exit 1 and one line per difference otherwise. No torch.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .record import RunRecord

TIMING = {"throughput", "build_seconds", "throughput_batch"}
CHECK_FIELDS = ("status", "outcome")
MEASUREMENT_FIELDS = ("value", "k", "n", "interval", "outcomes", "robust_acc", "clean_acc")
MODEL_FIELDS = ("weight_hash", "params", "size_mb", "gflops", "clean_acc")


def load(path: str | Path) -> RunRecord:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    return RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))


def same(a, b, tolerance: float) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    return a == b


def diff_runs(a: RunRecord, b: RunRecord, tolerance: float = 1e-6) -> tuple[list[str], dict]:
    """(one line per difference, counts of what was compared)."""
    out: list[str] = []
    counts = {"checks": 0, "measurements": 0, "models": 0}
    checks_b = {c.nodeid: c for c in b.checks}
    for c in a.checks:
        other = checks_b.pop(c.nodeid, None)
        if other is None:
            out.append(f"check only in A: {c.nodeid}")
            continue
        counts["checks"] += 1
        for name in CHECK_FIELDS:
            if getattr(c, name) != getattr(other, name):
                out.append(f"check {c.nodeid}: {name} {getattr(c, name)!r} -> {getattr(other, name)!r}")
    out += [f"check only in B: {nodeid}" for nodeid in checks_b]

    def ident(m):
        return (m.spec, m.key, m.data)

    meas_b = {ident(m): m for m in b.measurements}
    for m in a.measurements:
        other = meas_b.pop(ident(m), None)
        if other is None:
            out.append(f"measurement only in A: {m.key} ({m.spec}, {m.data})")
            continue
        if m.kind in TIMING:
            continue
        counts["measurements"] += 1
        for name in MEASUREMENT_FIELDS:
            if not same(getattr(m, name), getattr(other, name), tolerance):
                out.append(f"measurement {m.key} ({m.spec}): {name} {_short(getattr(m, name))} -> "
                           f"{_short(getattr(other, name))}")
    out += [f"measurement only in B: {m.key} ({m.spec}, {m.data})" for m in meas_b.values()]

    for name, model in a.models.items():
        other = b.models.get(name)
        if other is None:
            out.append(f"model only in A: {name}")
            continue
        counts["models"] += 1
        for f in MODEL_FIELDS:
            if not same(getattr(model, f), getattr(other, f), tolerance):
                out.append(f"model {name}: {f} {getattr(model, f)!r} -> {getattr(other, f)!r}")
    out += [f"model only in B: {name}" for name in b.models if name not in a.models]
    return out, counts


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: vitrobust diff A B   (report.json files or report folders)", file=sys.stderr)
        return 2
    try:
        a, b = (load(p) for p in argv)
    except OSError as exc:
        print(f"vitrobust diff: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:   # not JSON, or not a run record
        print(f"vitrobust diff: not a report.json ({exc.__class__.__name__}: {exc})".splitlines()[0], file=sys.stderr)
        return 2
    differences, counts = diff_runs(a, b)
    for line in differences:
        print(line)
    what = f"{counts['checks']} checks, {counts['measurements']} measurements, {counts['models']} models"
    print(f"{len(differences)} difference(s) in {what} (timings left out)" if differences
          else f"same verdicts and numbers: {what} (timings left out)")
    return 1 if differences else 0
