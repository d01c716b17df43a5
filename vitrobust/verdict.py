"""Decide a parsed check from measured observations, with paired statistics (no torch).

A check is a chain of comparisons (``a > b >= c``; ``monotonic(...)`` is a chain of consecutive
links). The chain **holds** iff every link holds, **fails** if any link fails, and is
**inconclusive** otherwise. Requiring every link to hold at level alpha is an
intersection-union test, so no multiplicity correction is needed for "holds".

One link ``L op R`` is decided by the first rule that applies (alpha = 1 - confidence):

1. *No outcomes anywhere* (sizes, FLOPs, throughput, parameter counts): a plain comparison of
   the values; holds or fails, never inconclusive.
2. *L and R each one rate measure with outcomes* (``asr(a, x) > asr(b, x)``): exact McNemar on
   the images in both denominators (b = L succeeded and R did not, c = the reverse).

   - ``>`` / ``<`` (strict): holds if the one-sided test in the claimed direction has p < alpha;
     fails if the one-sided test in the *reverse* direction has p < alpha; inconclusive otherwise.
     Identical outcomes (b = c = 0) are therefore never "holds".
   - ``>=`` / ``<=`` (non-strict): holds unless the reverse one-sided test is significant, i.e.
     the link fails only on significant evidence against it, and is never inconclusive.
   - ``==``: two-sided test; fails if p < alpha, holds otherwise (absence of evidence of a
     difference -- not an equivalence test). ``!=``: holds if two-sided p < alpha, else
     inconclusive.
3. *One side a single rate measure, the other without outcomes* (``asr(a, x) > 0.3``): the
   Wilson interval of the rate against the constant.
4. *Anything else with rates* (margins ``asr(a,x) > asr(b,x) + 0.05``, ratios, sums): a paired
   percentile bootstrap over images of ``L - R``. Every resample draws one set of image indices
   for all measures (keeping the pairing); each rate keeps its own denominator (its non-NaN
   images), so the interval is centred on the reported values.

Rules 3 and 4 compare an interval with a threshold using the same conventions as rule 2: for
``>`` the link holds if the whole interval is above, fails if it is wholly at or below, else
inconclusive; for ``>=`` it fails only if the whole interval is below; ``==`` fails if the
threshold is outside; ``!=`` holds if it is outside. For the one-sided operators the decision
interval has level ``1 - 2 alpha``, so each one-sided decision has error rate alpha like the
one-sided McNemar test; ``==``/``!=`` use level ``1 - alpha``. The intervals *reported* for every
rate measure are Wilson intervals at ``confidence``.

Observations (:class:`vitrobust.measures.Observation`): a rate measure carries ``outcomes``, a
float array over the images of the data slice: 1.0 = success, 0.0 = not, NaN = not in the
denominator (e.g. for ``asr``, the target misclassifies that image clean). All rate
observations of one check share one image indexing. Which rule applies is decided by whether an
observation *has* outcomes: a rate observation without outcomes is treated like a constant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from .errors import VitrobustError
from .exprtree import BinOp, ExprError, Measure, Number, compare, evaluate, links, measures, unparse
from .measures import Observation   # re-exported: it lives with the measures that make it
from .stats import discordant_pairs, mcnemar_exact, mcnemar_one_sided, paired_bootstrap, wilson_interval

__all__ = ["Observation", "Verdict", "VerdictError", "decide", "STATUSES"]

STATUSES = ("holds", "fails", "inconclusive")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


class VerdictError(VitrobustError):
    """Observations that cannot decide a check (missing measure, mismatched image counts)."""


@dataclass
class Verdict:
    status: str                       # holds | fails | inconclusive
    statistic: str                    # e.g. "McNemar exact one-sided ...: b=31 c=9 p=0.00034"
    p_value: Optional[float]          # the largest p-value among the links' tests (weakest link)
    intervals: dict = field(default_factory=dict)   # key -> (lo, hi)
    values: dict = field(default_factory=dict)      # measure key / side text -> value
    message: str = ""
    # across seed replicas only (vitrobust.replicate): each replica's verdict, and the
    # heterogeneity p-value of each paired link
    replicas: list = field(default_factory=list)
    heterogeneity: dict = field(default_factory=dict)


@dataclass
class _Link:
    status: str
    statistic: str
    p_value: Optional[float]
    lines: list


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.4g}"


def _interval_status(lo: float, hi: float, op: str, c: float) -> str:
    """Status of ``X op c`` given an interval [lo, hi] for X (see the module doc)."""
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if op == ">":
        return "holds" if lo > c else "fails" if hi <= c else "inconclusive"
    if op == "<":
        return "holds" if hi < c else "fails" if lo >= c else "inconclusive"
    if op == ">=":
        return "fails" if hi < c else "holds"
    if op == "<=":
        return "fails" if lo > c else "holds"
    if op == "==":
        return "holds" if lo <= c <= hi else "fails"
    if op == "!=":
        return "holds" if (c < lo or c > hi) else "fails" if lo == hi == c else "inconclusive"
    raise VerdictError(f"unknown comparison {op!r}")


def _decision_level(op: str, confidence: float) -> float:
    return confidence if op in ("==", "!=") else 1 - 2 * (1 - confidence)


class _Decider:
    def __init__(self, node, observations: Mapping, confidence: float, n_boot: int, seed: int):
        if not 0.5 < confidence < 1:
            raise VerdictError(f"confidence must be in (0.5, 1), got {confidence}")
        self.node, self.confidence, self.alpha = node, confidence, 1 - confidence
        self.n_boot, self.seed = n_boot, seed
        self.obs, self.intervals, self.values = {}, {}, {}
        length = None
        for m in measures(node):
            if m not in observations:
                raise VerdictError(f"no observation for {m.key}")
            o = observations[m]
            if not isinstance(o, Observation):
                raise VerdictError(f"{m.key}: expected an Observation, got {type(o).__name__}")
            self.obs[m] = o
            self.values[m.key] = float(o.value)
            if o.outcomes is not None:
                if length is not None and len(o.outcomes) != length:
                    raise VerdictError(f"{m.key}: {len(o.outcomes)} outcomes, but other measures of "
                                       f"this check have {length}: rates must share one image indexing")
                length = len(o.outcomes)
                self.intervals[m.key] = wilson_interval(*o.counts, confidence)

    # -- helpers --
    def rated(self, side) -> list:
        """Measures under ``side`` whose observations have outcomes."""
        return [m for m in measures(side) if self.obs[m].outcomes is not None]

    def point(self, side) -> float:
        try:
            return evaluate(side, {m: o.value for m, o in self.obs.items()})
        except ExprError:
            return math.nan

    def measure_line(self, m: Measure) -> str:
        o = self.obs[m]
        text = f"{m.key} = {_fmt(o.value)}"
        if o.outcomes is not None:
            k, n = o.counts
            lo, hi = self.intervals[m.key]
            text += f"  {self.confidence:.0%} CI [{_fmt(lo)}, {_fmt(hi)}]  ({k}/{n})"
        return text

    def describe(self, side, label: str) -> list:
        if isinstance(side, Measure):
            return [f"{label} {self.measure_line(side)}"]
        if isinstance(side, Number):
            return [f"{label} {unparse(side)}"]
        return ([f"{label} {unparse(side)} = {_fmt(self.values.get(unparse(side)))}"]
                + [f"{'':{len(label) + 3}}{self.measure_line(m)}" for m in measures(side)])

    # -- one link --
    def link(self, left, op, right) -> _Link:
        lv, rv = self.point(left), self.point(right)
        self.values[unparse(left)], self.values[unparse(right)] = lv, rv
        head = f"{unparse(left)} {op} {unparse(right)}"
        lrate, rrate = self.rated(left), self.rated(right)
        if not lrate and not rrate:
            result = self.plain(left, op, right, lv, rv)
        elif (isinstance(left, Measure) and isinstance(right, Measure) and lrate and rrate):
            result = self.mcnemar(left, op, right)
        elif isinstance(left, Measure) and lrate and not rrate:
            result = self.wilson(left, op, right, rv)
        elif isinstance(right, Measure) and rrate and not lrate:
            result = self.wilson(right, _FLIP[op], left, lv)
        else:
            result = self.bootstrap(left, op, right, lrate + [m for m in rrate if m not in lrate])
        result.lines = ([f"{head}  ->  {result.status}"] + ["  " + s for s in self.describe(left, "left ")]
                        + ["  " + s for s in self.describe(right, "right")] + ["  " + result.statistic])
        return result

    def plain(self, left, op, right, lv, rv) -> _Link:
        if math.isnan(lv) or math.isnan(rv):
            bad = unparse(left) if math.isnan(lv) else unparse(right)
            raise VerdictError(f"cannot evaluate {bad} (division by zero)")
        status = "holds" if compare(lv, op, rv) else "fails"
        return _Link(status, f"plain comparison: {_fmt(lv)} {op} {_fmt(rv)} is "
                             f"{'true' if status == 'holds' else 'false'}", None, [])

    def mcnemar(self, left: Measure, op: str, right: Measure) -> _Link:
        b, c, n = discordant_pairs(self.obs[left].outcomes, self.obs[right].outcomes)
        a = self.alpha
        p_gt, p_lt = mcnemar_one_sided(b, c), mcnemar_one_sided(c, b)
        if op in (">", "<"):
            p_for, p_against = (p_gt, p_lt) if op == ">" else (p_lt, p_gt)
            status = "holds" if p_for < a else "fails" if p_against < a else "inconclusive"
            p, test = p_for, f"one-sided, H1: left {op} right"
        elif op in (">=", "<="):
            p = p_lt if op == ">=" else p_gt
            status = "fails" if p < a else "holds"
            test = f"one-sided against the claim, H1: left {_FLIP[op][0]} right"
        else:
            p = mcnemar_exact(b, c)
            if op == "==":
                status = "fails" if p < a else "holds"
            else:
                status = "holds" if p < a else "inconclusive"
            test = "two-sided"
        stat = (f"McNemar exact {test}: b={b} c={c} on {n} images in both denominators, "
                f"p={_fmt(p)} (alpha={_fmt(a)})")
        if op in (">", "<") and status == "fails":
            stat += f"; reverse direction p={_fmt(p_against)}"
        return _Link(status, stat, p, [])

    def wilson(self, rate: Measure, op: str, other, other_value: float) -> _Link:
        """``rate op other``, ``other`` without outcomes (the link may have been flipped)."""
        if math.isnan(other_value):
            raise VerdictError(f"cannot evaluate {unparse(other)} (division by zero)")
        level = _decision_level(op, self.confidence)
        k, n = self.obs[rate].counts
        lo, hi = wilson_interval(k, n, level)
        status = _interval_status(lo, hi, op, other_value)
        stat = (f"Wilson {level:.0%} interval of {rate.key}: [{_fmt(lo)}, {_fmt(hi)}] ({k}/{n}) "
                f"vs {_fmt(other_value)}")
        return _Link(status, stat, None, [])

    def bootstrap(self, left, op, right, rated: list) -> _Link:
        diff = BinOp("-", left, right)
        constants = {m: o.value for m, o in self.obs.items() if o.outcomes is None}
        # Zero-filled outcomes and denominators: a resampled rate is sum(o[idx]) / sum(valid[idx]).
        arrays = {m: (np.nan_to_num(self.obs[m].outcomes, nan=0.0), (~np.isnan(self.obs[m].outcomes)).astype(float))
                  for m in rated}
        any_valid = np.zeros(len(next(iter(arrays.values()))[1]), dtype=bool)
        for _, valid in arrays.values():
            any_valid |= valid > 0
        keep = np.flatnonzero(any_valid)        # images in no denominator carry no information
        arrays = {m: (o[keep], v[keep]) for m, (o, v) in arrays.items()}

        def statistic(idx):
            vals = dict(constants)
            for m, (o, v) in arrays.items():
                den = v[idx].sum()
                if den == 0:
                    return math.nan
                vals[m] = o[idx].sum() / den
            try:
                return evaluate(diff, vals)
            except ExprError:
                return math.nan

        level = _decision_level(op, self.confidence)
        lo, hi = paired_bootstrap(statistic, len(keep), n_boot=self.n_boot, confidence=level, seed=self.seed)
        status = _interval_status(lo, hi, op, 0.0)
        key = unparse(diff)
        self.intervals[key] = (lo, hi)
        self.values[key] = self.point(diff)
        stat = (f"paired bootstrap ({self.n_boot} resamples of {len(keep)} images): {level:.0%} interval "
                f"of left - right = [{_fmt(lo)}, {_fmt(hi)}] vs 0")
        if math.isnan(lo):
            stat += " (no resample had a defined value)"
        return _Link(status, stat, None, [])

    # -- the whole check --
    def run(self) -> Verdict:
        results = [self.link(l, op, r) for l, op, r in links(self.node)]
        statuses = [r.status for r in results]
        status = ("holds" if all(s == "holds" for s in statuses) else
                  "fails" if "fails" in statuses else "inconclusive")
        ps = [r.p_value for r in results if r.p_value is not None]
        lines = [f"{unparse(self.node)}  ->  {status} (confidence {self.confidence:g})"]
        for r in results:
            lines += ["  " + s for s in r.lines]
        return Verdict(status=status, statistic="; ".join(r.statistic for r in results),
                       p_value=max(ps) if ps else None, intervals=dict(self.intervals),
                       values=dict(self.values), message="\n".join(lines))


def decide(node, observations: Mapping, confidence: float = 0.95, *, n_boot: int = 2000,
           seed: int = 0) -> Verdict:
    """Decide a parsed check (:func:`vitrobust.expr.parse_check`) from ``observations``
    (``Measure -> Observation``) at ``confidence`` (alpha = 1 - confidence). Deterministic:
    the bootstrap uses ``seed``. See the module docstring for the rules."""
    return _Decider(node, observations, confidence, n_boot, seed).run()
