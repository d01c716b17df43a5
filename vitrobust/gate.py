"""The release gate: compare a run against a named baseline and list what regressed.

A regression is one of:

- a check that held in the baseline (outcome ``passed`` or status ``holds``) and now fails
  (status ``fails``/``error`` or outcome ``failed``);
- an ASR or transfer measurement (same spec and key) whose value rose by more than
  ``asr_margin``. When both runs hold per-image outcomes over the same images (same ``data``
  string, same length) the rise must also be significant by the exact one-sided McNemar test on
  the discordant images (McNemar 1947) at ``1 - confidence``: an increase beyond the margin that
  a few flipped images explain is noise, not a regression. Otherwise the raw difference is held
  against the margin and both Wilson intervals are shown;
- a clean-accuracy drop of more than ``asr_margin`` (``acc`` measurements, paired the same way,
  and the models table's ``clean_acc`` for models no ``acc`` measurement covers).

``gate_main(argv)`` is ``vitrobust gate --baseline NAME [--run RUN_ID|latest] [--db PATH]
[--asr-margin 0.05] [--confidence 0.95]``: exit 1 with a table when anything regressed, 0 when
nothing did, 2 with a one-line error for an unknown baseline, run or database. No torch.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from tabulate import tabulate

from .stats import mcnemar_one_sided, wilson_interval
from .store import DEFAULT_DB, Store, StoreError

HEADERS = ("key", "baseline", "current", "delta", "p", "reason")
RATE_KINDS = ("asr", "transfer")


@dataclass(frozen=True)
class Regression:
    key: str
    baseline: str
    current: str
    delta: float | None
    p: float | None
    reason: str
    kind: str = ""
    spec: str | None = None

    def as_row(self) -> tuple:
        delta = "" if self.delta is None else f"{self.delta:+.3f}"
        p = "" if self.p is None else f"{self.p:.3g}"
        key = self.key if not self.spec else f"{self.spec}: {self.key}"
        return (key, self.baseline, self.current, delta, p, self.reason)


def _holds(check: dict) -> bool:
    return check.get("outcome") == "passed" or (
        check.get("status") == "holds" and check.get("outcome") in (None, "passed"))


def _fails(check: dict) -> bool:
    return check.get("status") in ("fails", "error") or check.get("outcome") == "failed"


def _check_id(check: dict):
    return check.get("nodeid") or (check.get("spec"), check.get("check"),
                                   tuple(sorted((check.get("params") or {}).items())))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shown(meas: dict, confidence: float) -> str:
    """``0.412 [0.35, 0.48] n=180``: the value with its Wilson interval where k and n are known."""
    text = f"{meas['value']:.3f}"
    if meas.get("k") is not None and meas.get("n"):
        lo, hi = wilson_interval(int(meas["k"]), int(meas["n"]), confidence)
        text += f" [{lo:.2f}, {hi:.2f}] n={meas['n']}"
    elif meas.get("interval"):
        lo, hi = meas["interval"]
        text += f" [{lo:.2f}, {hi:.2f}]"
    return text


def _paired(base: dict, cur: dict):
    """Per-image outcome pairs when both runs scored the same images, else None."""
    a, b = base.get("outcomes"), cur.get("outcomes")
    if not a or not b or len(a) != len(b) or base.get("data") != cur.get("data"):
        return None
    return [(x, y) for x, y in zip(a, b) if x is not None and y is not None]


def _compare_checks(current, baseline) -> list[Regression]:
    now = {_check_id(c): c for c in current.get("checks") or []}
    out = []
    for old in baseline.get("checks") or []:
        new = now.get(_check_id(old))
        if new is None or not _holds(old) or not _fails(new):
            continue
        params = ", ".join(f"{k}={v}" for k, v in (new.get("params") or {}).items())
        key = new.get("check") or str(_check_id(new))
        out.append(Regression(
            key + (f" [{params}]" if params else ""),
            f"{old.get('status')}/{old.get('outcome')}", f"{new.get('status')}/{new.get('outcome')}",
            None, new.get("p_value"), "check held in the baseline and now fails",
            kind="check", spec=new.get("spec")))
    return out


def _compare_rate(base, cur, margin, confidence, worse_is_higher: bool) -> Regression | None:
    delta = cur["value"] - base["value"]
    worsening = delta if worse_is_higher else -delta
    if worsening <= margin:
        return None
    pairs = _paired(base, cur)
    what = "rose" if worse_is_higher else "dropped"
    if pairs is not None:
        # b: images that got worse (attack now succeeds / now misclassified), c: the reverse.
        if worse_is_higher:
            b = sum(1 for old, new in pairs if new == 1 and old == 0)
            c = sum(1 for old, new in pairs if new == 0 and old == 1)
        else:
            b = sum(1 for old, new in pairs if old == 1 and new == 0)
            c = sum(1 for old, new in pairs if old == 0 and new == 1)
        p = mcnemar_one_sided(b, c)
        if p >= 1 - confidence:
            return None
        reason = (f"{what} by more than {margin:g}; paired McNemar b={b} c={c} "
                  f"p<{1 - confidence:g}")
    else:
        p = None
        reason = f"{what} by more than {margin:g} (unpaired: raw difference, Wilson intervals)"
    return Regression(cur["key"], _shown(base, confidence), _shown(cur, confidence), delta, p,
                      reason, kind=cur.get("kind", ""), spec=cur.get("spec"))


def _index(run, kinds):
    out = {}
    for m in run.get("measurements") or []:
        if m.get("kind") in kinds and _number(m.get("value")):
            out.setdefault((m.get("spec"), m["key"]), m)
    return out


def compare(current: dict, baseline: dict, asr_margin: float = 0.05,
            confidence: float = 0.95) -> list[Regression]:
    """Everything that regressed from ``baseline`` to ``current`` (two run records)."""
    out = _compare_checks(current, baseline)
    for kinds, worse_is_higher in ((RATE_KINDS, True), (("acc",), False)):
        old = _index(baseline, kinds)
        for ident, cur in _index(current, kinds).items():
            if ident in old:
                reg = _compare_rate(old[ident], cur, asr_margin, confidence, worse_is_higher)
                if reg is not None:
                    out.append(reg)
    # Clean accuracy from the models table, for models no acc measurement already compared.
    covered = {m.get("target") for m in _index(current, ("acc",)).values()}
    old_models = baseline.get("models") or {}
    for name, info in (current.get("models") or {}).items():
        before = (old_models.get(name) or {}).get("clean_acc")
        now = info.get("clean_acc")
        if name in covered or not (_number(before) and _number(now)):
            continue
        if before - now > asr_margin:
            out.append(Regression(f"clean_acc({name})", f"{before:.3f}", f"{now:.3f}",
                                  now - before, None,
                                  f"clean accuracy dropped by more than {asr_margin:g}",
                                  kind="clean_acc"))
    return out


COMPARABLE_CONFIG = ("data", "zoo", "max_images")


def comparability_notes(current: dict, baseline: dict) -> list[str]:
    """Settings that differ between the two runs, so their measurements are not like for like.

    A capped smoke run (``max_images``), another data source or another zoo still gets compared
    (rates are compared unpaired where the image sets differ), but the reader should know.
    """
    cur, base = current.get("config") or {}, baseline.get("config") or {}
    return [f"note: {key} differs from the baseline ({base.get(key)!r} there, {cur.get(key)!r} here); "
            f"its measurements are not like for like"
            for key in COMPARABLE_CONFIG if cur.get(key) != base.get(key)]


def table(regressions: list[Regression], tablefmt: str = "simple") -> str:
    return tabulate([r.as_row() for r in regressions], headers=HEADERS, tablefmt=tablefmt)


def gate_main(argv: list[str] | None = None) -> int:
    """``vitrobust gate``: 1 if anything regressed against the baseline, 0 if not, 2 on error."""
    parser = argparse.ArgumentParser(
        prog="vitrobust gate", description="Compare a recorded run against a named baseline.")
    parser.add_argument("--baseline", required=True, help="baseline name (see store)")
    parser.add_argument("--run", default="latest", help="run id, or 'latest' (default)")
    parser.add_argument("--db", default=str(DEFAULT_DB), help=f"results database ({DEFAULT_DB})")
    parser.add_argument("--asr-margin", type=float, default=0.05,
                        help="largest tolerated rise of an ASR (or drop of accuracy)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence of the paired test (alpha = 1 - confidence)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # argparse already printed its one-line usage error
        return int(exc.code or 0) and 2
    if not 0 < args.confidence < 1 or args.asr_margin < 0:
        print("vitrobust gate: error: need 0 < --confidence < 1 and --asr-margin >= 0",
              file=sys.stderr)
        return 2
    try:
        with Store(args.db, create=False) as store:
            base = store.baseline_run(args.baseline)
            if args.run == "latest":
                cur = store.latest_run()
                if cur is None:
                    raise StoreError(f"no complete run in {args.db}")
            else:
                cur = store.load_run(args.run)
    except StoreError as exc:
        print(f"vitrobust gate: error: {exc}", file=sys.stderr)
        return 2
    found = compare(cur, base, asr_margin=args.asr_margin, confidence=args.confidence)
    for note in comparability_notes(cur, base):
        print(note)
    head = f"run {cur['run_id']} against baseline {args.baseline!r} (run {base['run_id']})"
    if found:
        print(table(found))
        print(f"{len(found)} regression(s): {head}")
        return 1
    print(f"no regressions: {head}, margin {args.asr_margin:g}, confidence {args.confidence:g}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(gate_main())
