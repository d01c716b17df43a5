"""The release gate: compare a run against a named baseline and list what regressed.

A regression is one of:

- a check that held in the baseline (outcome ``passed`` or status ``holds``) and now fails
  (status ``fails``/``error`` or outcome ``failed``);
- a rate measurement (same spec and key) that moved the worse way by more than ``margin``.
  Which measurements are compared, and which way is worse, is each measure's own declaration in
  the registry (:mod:`vitrobust.measures`: ``rate`` and ``worse``), so a new measure is gated
  without an edit here: ``asr`` and ``transfer`` regress when they rise, ``acc`` and
  ``robust_acc`` when they drop. When both runs hold per-image outcomes over the same images
  (same ``data`` string, same length) the move must also be significant by the exact one-sided
  McNemar test on the discordant images (McNemar 1947) at ``1 - confidence``: a move beyond the
  margin that a few flipped images explain is noise, not a regression. Otherwise the raw
  difference is held against the margin and both intervals are shown;
- a clean-accuracy drop of more than ``margin`` in the models table, for models no ``acc``
  measurement already covers.

``gate_main(argv)`` is ``vitrobust gate --baseline NAME [--run RUN_ID|latest] [--db PATH]
[--margin 0.05] [--confidence 0.95]``: exit 1 with a table when anything regressed, 0 when
nothing did, 2 with a one-line error for an unknown baseline, run or database. No torch.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from tabulate import tabulate

from .defaults import CONFIDENCE, MARGIN
from .measures import is_measure, measure_kind
from .numerics import FIELDS as NUMERICS
from .record import CheckRecord, MeasurementRecord, RunRecord
from .report_format import interval_of
from .stats import mcnemar_one_sided
from .store import DEFAULT_DB, Store, StoreError

HEADERS = ("key", "baseline", "current", "delta", "p", "reason")
CLEAN_ACC_KIND = "acc"   # the measure whose targets the models-table comparison skips


@dataclass(frozen=True)
class Regression:
    """One thing that got worse; print a list of them with :func:`table`."""

    key: str
    baseline: str
    current: str
    delta: float | None
    p: float | None
    reason: str
    kind: str = ""
    spec: str | None = None


def table(regressions: list[Regression], tablefmt: str = "simple") -> str:
    """The regressions as a table with :data:`HEADERS`: the one way every caller prints them."""
    rows = []
    for r in regressions:
        rows.append((r.key if not r.spec else f"{r.spec}: {r.key}", r.baseline, r.current,
                     "" if r.delta is None else f"{r.delta:+.3f}",
                     "" if r.p is None else f"{r.p:.3g}", r.reason))
    # disable_numparse: tabulate would read "+0.130" as 0.13 and drop the sign.
    return tabulate(rows, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True)


# -- checks -----------------------------------------------------------------------------------
def _holds(check: CheckRecord) -> bool:
    return check.outcome == "passed" or (check.status == "holds"
                                         and check.outcome in (None, "passed"))


def _fails(check: CheckRecord) -> bool:
    return check.status in ("fails", "error") or check.outcome == "failed"


def _check_id(check: CheckRecord):
    return check.nodeid or (check.spec, check.check, tuple(sorted(check.params.items())))


def _compare_checks(current: RunRecord, baseline: RunRecord) -> list[Regression]:
    now = {_check_id(c): c for c in current.checks}
    out = []
    for old in baseline.checks:
        new = now.get(_check_id(old))
        if new is None or not _holds(old) or not _fails(new):
            continue
        params = ", ".join(f"{k}={v}" for k, v in new.params.items())
        out.append(Regression(
            (new.check or str(_check_id(new))) + (f" [{params}]" if params else ""),
            f"{old.status}/{old.outcome}", f"{new.status}/{new.outcome}",
            None, new.p_value, "check held in the baseline and now fails",
            kind="check", spec=new.spec))
    return out


# -- rates ------------------------------------------------------------------------------------
def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def gated_kinds(run: RunRecord) -> set[str]:
    """The measurement kinds of ``run`` the gate compares: registered rates with a worse way."""
    return {m.kind for m in run.measurements
            if is_measure(m.kind) and measure_kind(m.kind).rate
            and measure_kind(m.kind).worse is not None}


def _shown(meas: MeasurementRecord, run: RunRecord) -> str:
    """``0.412 [0.35, 0.48] n=180``: the value with its interval as recorded (or Wilson from k
    and n at the measurement's confidence) and its denominator."""
    text = f"{meas.value:.3f}"
    ci = interval_of(meas, run.config.confidence)
    if ci is not None:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    if meas.n:
        text += f" n={meas.n}"
    return text


def _paired(base: MeasurementRecord, cur: MeasurementRecord):
    """Per-image outcome pairs when both runs scored the same images, else None."""
    a, b = base.outcomes, cur.outcomes
    if not a or not b or len(a) != len(b) or base.data != cur.data:
        return None
    return [(x, y) for x, y in zip(a, b) if x is not None and y is not None]


def _compare_rate(base: MeasurementRecord, cur: MeasurementRecord, runs, margin: float,
                  confidence: float) -> Regression | None:
    worse_is_higher = measure_kind(cur.kind).worse == "higher"
    delta = cur.value - base.value
    worsening = delta if worse_is_higher else -delta
    if worsening <= margin:
        return None
    pairs = _paired(base, cur)
    what = "rose" if worse_is_higher else "dropped"
    if pairs is not None:
        # b: images that moved the worse way (attack now succeeds / now wrong), c: the reverse.
        worse, better = ((0, 1), (1, 0)) if worse_is_higher else ((1, 0), (0, 1))
        b = sum(1 for pair in pairs if pair == worse)
        c = sum(1 for pair in pairs if pair == better)
        p = mcnemar_one_sided(b, c)
        if p >= 1 - confidence:
            return None
        reason = (f"{what} by more than {margin:g}; paired McNemar b={b} c={c} "
                  f"p<{1 - confidence:g}")
    else:
        p = None
        reason = f"{what} by more than {margin:g} (unpaired: raw difference, intervals)"
    base_run, cur_run = runs
    return Regression(cur.key, _shown(base, base_run), _shown(cur, cur_run), delta, p, reason,
                      kind=cur.kind, spec=cur.spec)


def _index(run: RunRecord, kinds) -> dict:
    out = {}
    for m in run.measurements:
        if m.kind in kinds and _number(m.value):
            out.setdefault((m.spec, m.key), m)
    return out


def compare(current: RunRecord, baseline: RunRecord, margin: float = MARGIN,
            confidence: float = CONFIDENCE) -> list[Regression]:
    """Everything that regressed from ``baseline`` to ``current``."""
    out = _compare_checks(current, baseline)
    kinds = gated_kinds(current)
    old = _index(baseline, kinds)
    for ident, cur in _index(current, kinds).items():
        if ident in old and old[ident].kind == cur.kind:
            reg = _compare_rate(old[ident], cur, (baseline, current), margin, confidence)
            if reg is not None:
                out.append(reg)
    # Clean accuracy from the models table, for models no acc measurement already compared.
    covered = {m.target for m in _index(current, (CLEAN_ACC_KIND,)).values()}
    for name, info in current.models.items():
        before = baseline.models[name].clean_acc if name in baseline.models else None
        now = info.clean_acc
        if name in covered or not (_number(before) and _number(now)):
            continue
        if before - now > margin:
            out.append(Regression(f"clean_acc({name})", f"{before:.3f}", f"{now:.3f}",
                                  now - before, None,
                                  f"clean accuracy dropped by more than {margin:g}",
                                  kind="clean_acc"))
    return out


COMPARABLE_CONFIG = ("data", "zoo", "max_images", "device", "precision", "batch_size", "seeds")


def numerics_differences(current: RunRecord, baseline: RunRecord) -> list[str]:
    """``torch 2.3.0 there, 2.4.1 here`` for the torch version and each numerics field
    (:mod:`vitrobust.numerics`) both runs recorded and that differ; a record from before the
    field existed (None) is not a difference."""
    pairs = [("torch", (baseline.versions or {}).get("torch"), (current.versions or {}).get("torch"))]
    pairs += [(key, getattr(baseline.config, key), getattr(current.config, key)) for key in NUMERICS]
    return [f"{key} {old} there, {new} here" for key, old, new in pairs
            if old is not None and new is not None and old != new]


def comparability_notes(current: RunRecord, baseline: RunRecord) -> list[str]:
    """What the reader should know before the verdict: settings that differ between the two
    runs (a capped smoke run, another data source or zoo: still compared, unpaired where the
    images differ, but not like for like), torch numerics that differ (one line: another torch,
    thread count, CPU capability, deterministic-algorithms flag or matmul precision), and
    measurement kinds the gate cannot judge because no registered measure declares them."""
    notes = [f"note: {key} differs from the baseline ({getattr(baseline.config, key)!r} there, "
             f"{getattr(current.config, key)!r} here); its measurements are not like for like"
             for key in COMPARABLE_CONFIG
             if getattr(current.config, key) != getattr(baseline.config, key)]
    differ = numerics_differences(current, baseline)
    if differ:
        notes.append(f"note: torch numerics differ from the baseline ({'; '.join(differ)}): the same "
                     "seed need not give bitwise the same images, so a small move may be rounding, "
                     "not a regression")
    unknown = sorted({m.kind for m in current.measurements if not is_measure(m.kind)})
    if unknown:
        notes.append(f"note: measurement kind(s) {', '.join(map(repr, unknown))} are not "
                     "registered measures; the gate does not compare them")
    return notes


def gate_main(argv: list[str] | None = None) -> int:
    """``vitrobust gate``: 1 if anything regressed against the baseline, 0 if not, 2 on error."""
    parser = argparse.ArgumentParser(
        prog="vitrobust gate", description="Compare a recorded run against a named baseline.")
    parser.add_argument("--baseline", required=True, help="baseline name (see store)")
    parser.add_argument("--run", default="latest", help="run id, or 'latest' (default)")
    parser.add_argument("--db", default=str(DEFAULT_DB),
                        help=f"results database: an SQLite path ({DEFAULT_DB}) or a postgresql:// URL")
    parser.add_argument("--margin", "--asr-margin", dest="margin", type=float, default=MARGIN,
                        help="largest tolerated move of a rate the worse way (an ASR rise, "
                             f"an accuracy drop); default {MARGIN}")
    parser.add_argument("--confidence", type=float, default=CONFIDENCE,
                        help="confidence of the paired test (alpha = 1 - confidence)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # argparse already printed its one-line usage error
        return int(exc.code or 0) and 2
    if not 0 < args.confidence < 1 or args.margin < 0:
        print("vitrobust gate: error: need 0 < --confidence < 1 and --margin >= 0",
              file=sys.stderr)
        return 2
    try:
        with Store(args.db, create=False) as store:
            base = store.baseline_run(args.baseline)
            if args.run == "latest":
                cur = store.latest_run()
                if cur is None:
                    raise StoreError(f"no complete run in {store.where}")
            else:
                cur = store.load_run(args.run)
    except StoreError as exc:
        print(f"vitrobust gate: error: {exc}", file=sys.stderr)
        return 2
    found = compare(cur, base, margin=args.margin, confidence=args.confidence)
    for note in comparability_notes(cur, base):
        print(note)
    head = f"run {cur.run_id} against baseline {args.baseline!r} (run {base.run_id})"
    if found:
        print(table(found))
        print(f"{len(found)} regression(s): {head}")
        return 1
    print(f"no regressions: {head}, margin {args.margin:g}, confidence {args.confidence:g}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(gate_main())
