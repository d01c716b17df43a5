"""Deciding checks from hand-made observations: each rule, the chain logic, and properties."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from vitrobust import measures as registry
from vitrobust.errors import VitrobustError
from vitrobust.expr import measures, parse_check
from vitrobust.measures import MeasureError
from vitrobust.verdict import Observation, Verdict, VerdictError, decide

N = 200


def outcomes(ones: int, n: int = N, nan: int = 0) -> np.ndarray:
    """``ones`` successes first, then failures, then ``nan`` images outside the denominator."""
    return np.array([1.0] * ones + [0.0] * (n - ones - nan) + [np.nan] * nan)


def rate(arr) -> Observation:
    arr = np.asarray(arr, dtype=float)
    return Observation(float(np.nanmean(arr)) if (~np.isnan(arr)).any() else math.nan, arr)


def run(text, confidence=0.95, n_boot=500, **obs) -> Verdict:
    """Observations by model name: asr(<model>, x) / acc(<model>) get obs[model]."""
    node = parse_check(text)
    values = {}
    for m in measures(node):
        o = obs[m.model.replace(":", "_")]
        values[m] = o if isinstance(o, Observation) else rate(o) if hasattr(o, "__len__") else Observation(o)
    return decide(node, values, confidence, n_boot=n_boot)


# ------------------------------------------------------------------------------------------
# rule 1: constants
# ------------------------------------------------------------------------------------------
def test_constants_plain_comparison():
    v = run("size_mb(m_int8) < 0.35 * size_mb(m)", m_int8=0.9, m=3.0)
    assert v.status == "holds" and v.p_value is None
    assert v.values == {"size_mb(m_int8)": 0.9, "size_mb(m)": 3.0, "0.35 * size_mb(m)": pytest.approx(1.05)}
    assert "plain comparison" in v.statistic and v.intervals == {}
    assert run("size_mb(m_int8) < 0.25 * size_mb(m)", m_int8=0.9, m=3.0).status == "fails"
    assert run("gflops(a) == gflops(b)", a=2.0, b=2.0).status == "holds"


def test_constant_division_by_zero_is_an_error():
    with pytest.raises(VerdictError, match="division by zero"):
        run("params(a) / params(b) > 1", a=2.0, b=0.0)


# ------------------------------------------------------------------------------------------
# rule 2: McNemar
# ------------------------------------------------------------------------------------------
def test_mcnemar_holds_and_reports():
    a = outcomes(120)
    b = outcomes(60)          # a succeeds wherever b does: b=60 discordant pairs, c=0
    v = run("asr(q, x) > asr(f, x)", q=a, f=b)
    assert v.status == "holds" and v.p_value < 1e-10
    assert "McNemar exact one-sided" in v.statistic and "b=60 c=0" in v.statistic
    assert v.intervals["asr(q, x)"][0] < 0.6 < v.intervals["asr(q, x)"][1]
    assert v.values["asr(q, x)"] == 0.6
    lines = v.message.splitlines()
    assert len(lines) >= 4
    assert "holds" in lines[0] and "asr(q, x) = 0.6" in v.message and "(120/200)" in v.message


def test_mcnemar_fails_on_reverse_evidence_and_inconclusive_otherwise():
    a, b = outcomes(60), outcomes(120)
    v = run("asr(q, x) > asr(f, x)", q=a, f=b)
    assert v.status == "fails" and "reverse direction p=" in v.statistic
    # 3 vs 1 discordant pairs: no evidence either way
    a, b = outcomes(100), outcomes(100)
    a[100:103] = 1
    b[0] = 0
    assert run("asr(q, x) > asr(f, x)", q=a, f=b).status == "inconclusive"


def test_mcnemar_uses_only_images_in_both_denominators():
    a = outcomes(100)
    b = outcomes(100)
    b[:100] = np.nan          # the images where a succeeded are outside b's denominator
    v = run("asr(q, x) > asr(f, x)", q=a, f=b)
    assert "b=0 c=0 on 100 images" in v.statistic and v.status == "inconclusive"


def test_non_strict_fails_only_on_evidence_against():
    a, b = outcomes(100), outcomes(101)
    assert run("asr(q, x) >= asr(f, x)", q=a, f=b).status == "holds"
    assert run("asr(q, x) >= asr(f, x)", q=outcomes(50), f=outcomes(120)).status == "fails"
    assert run("asr(q, x) <= asr(f, x)", q=outcomes(120), f=outcomes(50)).status == "fails"
    assert run("acc(q) <= acc(f)", q=a, f=a).status == "holds"


def test_equality_two_sided():
    assert run("asr(q, x) == asr(f, x)", q=outcomes(100), f=outcomes(103)).status == "holds"
    assert run("asr(q, x) == asr(f, x)", q=outcomes(50), f=outcomes(120)).status == "fails"
    assert run("asr(q, x) != asr(f, x)", q=outcomes(50), f=outcomes(120)).status == "holds"
    v = run("asr(q, x) != asr(f, x)", q=outcomes(100), f=outcomes(103))
    assert v.status == "inconclusive" and "two-sided" in v.statistic


def test_confidence_changes_the_decision():
    a, b = outcomes(110), outcomes(100)        # b=10, c=0: one-sided p = 2**-10 ~ 0.001
    assert run("asr(q, x) > asr(f, x)", q=a, f=b, confidence=0.99).status == "holds"
    assert run("asr(q, x) > asr(f, x)", q=a, f=b, confidence=0.9999).status == "inconclusive"


# ------------------------------------------------------------------------------------------
# rule 3: rate vs constant (Wilson)
# ------------------------------------------------------------------------------------------
def test_rate_against_constant():
    a = outcomes(150)                              # 0.75, 90% Wilson ~ [0.70, 0.80]
    assert run("asr(q, x) > 0.6", q=a).status == "holds"
    assert run("asr(q, x) > 0.9", q=a).status == "fails"
    assert run("asr(q, x) > 0.74", q=a).status == "inconclusive"
    assert run("0.6 < asr(q, x)", q=a).status == "holds"            # constant on the left
    assert run("asr(q, x) >= 0.74", q=a).status == "holds"
    assert run("asr(q, x) <= 0.6", q=a).status == "fails"
    assert run("acc(q) == 0.75", q=a).status == "holds"
    assert run("acc(q) != 0.5", q=a).status == "holds"
    assert run("acc(q) != 0.75", q=a).status == "inconclusive"
    v = run("asr(q, x) > 0.6", q=a)
    assert "Wilson 90% interval" in v.statistic and v.p_value is None


def test_rate_against_constant_measure():
    node = parse_check("acc(q) > throughput(q) / 1000")
    acc, thr = measures(node)
    v = decide(node, {acc: rate(outcomes(150)), thr: Observation(500.0)})
    assert v.status == "holds" and v.values["throughput(q) / 1000"] == 0.5


# ------------------------------------------------------------------------------------------
# rule 4: bootstrap
# ------------------------------------------------------------------------------------------
def test_margin_uses_bootstrap():
    a, b = outcomes(150), outcomes(100)            # difference 0.25
    v = run("asr(q, x) > asr(f, x) + 0.05", q=a, f=b)
    assert v.status == "holds" and "paired bootstrap" in v.statistic
    lo, hi = v.intervals["asr(q, x) - (asr(f, x) + 0.05)"]
    assert lo > 0 and hi < 0.3
    assert v.values["asr(f, x) + 0.05"] == pytest.approx(0.55)
    assert run("asr(q, x) > asr(f, x) + 0.4", q=a, f=b).status == "fails"
    assert run("asr(q, x) > asr(f, x) + 0.25", q=a, f=b).status == "inconclusive"


def test_ratio_uses_bootstrap_with_own_denominators():
    a = outcomes(80, nan=40)          # 80/160 = 0.5
    b = outcomes(50)                  # 50/200 = 0.25
    v = run("asr(q, x) / asr(f, x) > 1.5", q=a, f=b)
    assert v.values["asr(q, x)"] == 0.5 and v.status == "holds"
    lo, hi = v.intervals["asr(q, x) / asr(f, x) - 1.5"]
    assert lo < 0.5 < hi              # centred near the reported ratio 2.0 minus 1.5


def test_bootstrap_is_deterministic():
    a, b = outcomes(110), outcomes(100)
    v1 = run("asr(q, x) - asr(f, x) > 0.01", q=a, f=b)
    v2 = run("asr(q, x) - asr(f, x) > 0.01", q=a, f=b)
    assert v1.intervals == v2.intervals and v1.status == v2.status


def test_bootstrap_with_empty_denominator_is_inconclusive():
    empty = np.full(N, np.nan)
    v = run("asr(q, x) > asr(f, x) * 2", q=empty, f=outcomes(10))
    assert v.status == "inconclusive" and "no resample" in v.statistic


# ------------------------------------------------------------------------------------------
# chains
# ------------------------------------------------------------------------------------------
def test_chain_needs_every_link():
    hi, mid, lo = outcomes(180), outcomes(100), outcomes(20)
    assert run("asr(a, x) > asr(b, x) > asr(c, x)", a=hi, b=mid, c=lo).status == "holds"
    assert run("asr(a, x) > asr(b, x) > asr(c, x)", a=hi, b=lo, c=mid).status == "fails"
    close = outcomes(101)
    v = run("asr(a, x) > asr(b, x) > asr(c, x)", a=hi, b=mid, c=close)
    assert v.status == "inconclusive" and v.statistic.count("McNemar") == 2


def test_monotonic_equals_chain():
    obs = dict(a=outcomes(180), b=outcomes(100), c=outcomes(95))
    m = run("monotonic(decreasing, asr(a, x), asr(b, x), asr(c, x))", **obs)
    c = run("asr(a, x) > asr(b, x) > asr(c, x)", **obs)
    assert (m.status, m.statistic, m.p_value) == (c.status, c.statistic, c.p_value)
    assert run("monotonic(nonincreasing, asr(a, x), asr(b, x), asr(c, x))", **obs).status == "holds"
    assert run("monotonic(increasing, asr(a, x), asr(b, x), asr(c, x))", **obs).status == "fails"


def test_p_value_is_the_weakest_link():
    v = run("asr(a, x) > asr(b, x) > asr(c, x)", a=outcomes(180), b=outcomes(100), c=outcomes(90))
    assert v.p_value == pytest.approx(0.5 ** 10)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_errors():
    node = parse_check("asr(a, x) > asr(b, x)")
    a, b = measures(node)
    with pytest.raises(VerdictError, match=r"no observation for asr\(b, x\)"):
        decide(node, {a: rate(outcomes(10))})
    with pytest.raises(VerdictError, match="share one image indexing"):
        decide(node, {a: rate(outcomes(10)), b: rate(outcomes(10, n=20))})
    with pytest.raises(MeasureError, match="1.0, 0.0 or NaN"):
        Observation(0.5, np.array([0.5, 1.0]))
    with pytest.raises(MeasureError, match="1-D"):
        Observation(0.5, np.ones((2, 2)))
    with pytest.raises(VerdictError, match="confidence"):
        decide(node, {a: rate(outcomes(10)), b: rate(outcomes(10))}, confidence=1.2)
    with pytest.raises(VerdictError, match="expected an Observation"):
        decide(node, {a: 0.3, b: 0.2})


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
outcome_arrays = st.integers(10, 120).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from([0.0, 1.0, math.nan]), min_size=n, max_size=n),
    st.lists(st.sampled_from([0.0, 1.0, math.nan]), min_size=n, max_size=n)))
FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
OPPOSITE = {"holds": "fails", "fails": "holds", "inconclusive": "inconclusive"}


@settings(max_examples=150, deadline=None)
@given(outcome_arrays, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
def test_mirrored_link_has_same_status(arrays, op):
    a, b = map(np.array, arrays)
    left = run(f"asr(p, x) {op} asr(q, x)", p=a, q=b, n_boot=100)
    right = run(f"asr(q, x) {FLIP[op]} asr(p, x)", p=a, q=b, n_boot=100)
    assert left.status == right.status


@settings(max_examples=150, deadline=None)
@given(outcome_arrays)
def test_swapping_sides_of_strict_comparison_flips_holds_and_fails(arrays):
    a, b = map(np.array, arrays)
    forward = run("asr(p, x) > asr(q, x)", p=a, q=b).status
    backward = run("asr(q, x) > asr(p, x)", p=a, q=b).status
    assert backward == OPPOSITE[forward]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, math.nan]), min_size=1, max_size=150),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_identical_outcomes_never_hold_for_strict(arr, confidence):
    a = np.array(arr)
    assert run("asr(p, x) > asr(q, x)", p=a, q=a.copy(), confidence=confidence).status != "holds"
    assert run("asr(p, x) < asr(q, x)", p=a, q=a.copy(), confidence=confidence).status != "holds"
    assume((~np.isnan(a)).any())
    # through the bootstrap (a zero margin) identical outcomes are a measured tie: never "holds"
    assert run("asr(p, x) > asr(q, x) + 0", p=a, q=a.copy(), n_boot=50).status != "holds"
    assert run("asr(p, x) >= asr(q, x)", p=a, q=a.copy()).status == "holds"


@settings(max_examples=60, deadline=None)
@given(st.integers(100, 400), st.floats(0.0, 0.3), st.floats(0.35, 0.6), st.integers(0, 10_000))
def test_planted_large_difference_holds(n, base, gap, seed):
    rng = np.random.default_rng(seed)
    low = (rng.random(n) < base).astype(float)
    high = np.maximum(low, (rng.random(n) < gap).astype(float))   # every low success stays one
    assume(np.sum(high) - np.sum(low) >= 30)
    assert run("asr(p, x) > asr(q, x)", p=high, q=low).status == "holds"
    assert run("asr(p, x) < asr(q, x)", p=high, q=low).status == "fails"
    assert run("asr(p, x) > asr(q, x) + 0.01", p=high, q=low, n_boot=300).status == "holds"
    assert run("asr(p, x) <= asr(q, x)", p=high, q=low).status == "fails"


def test_one_sided_decisions_use_a_1_minus_2alpha_interval():
    # 150/200: the 95% Wilson interval starts at 0.686, the 90% one at 0.696. A one-sided claim at
    # confidence 0.95 is decided with the 90% interval (error rate alpha on its one side).
    a = outcomes(150)
    assert run("asr(q, x) > 0.69", q=a).status == "holds"
    assert run("asr(q, x) > 0.69", q=a, confidence=0.975).status == "inconclusive"
    # a two-sided claim uses the 95% interval: 0.69 lies inside it
    assert run("asr(q, x) != 0.69", q=a).status == "inconclusive"


def test_observation_lives_with_the_measures():
    assert Observation is registry.Observation
    assert issubclass(VerdictError, VitrobustError) and issubclass(MeasureError, VitrobustError)


def test_robust_acc_is_decided_like_any_rate():
    node = parse_check("robust_acc(a, x) < robust_acc(b, x)")
    a, b = measures(node)
    assert decide(node, {a: rate(outcomes(60)), b: rate(outcomes(120))}).status == "holds"
    assert decide(node, {a: rate(outcomes(120)), b: rate(outcomes(60))}).status == "fails"


SPEC_SIDE = ("defaults", "errors", "expr", "exprparse", "exprtree", "measures", "names", "record",
             "spec", "spec_attacks", "spec_checks", "spec_fields", "spec_model", "stats", "verdict",
             "yamllines")


def test_spec_side_does_not_import_torch():
    code = (f"import sys\nfor m in {SPEC_SIDE!r}: __import__('vitrobust.' + m)\n"
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
