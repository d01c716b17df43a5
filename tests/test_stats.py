"""Statistics against scipy's reference implementations, plus hand-checked values."""
import math
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binomtest, chi2_contingency

from vitrobust.stats import (
    StatsError, discordant_pairs, mcnemar_exact, mcnemar_one_sided, paired_bootstrap,
    replica_heterogeneity, stratified_mcnemar_one_sided, wilson_interval,
)


# ------------------------------------------------------------------------------------------
# Wilson
# ------------------------------------------------------------------------------------------
def test_wilson_known_value():
    # 31 of 40 at 95%, by the textbook form (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    lo, hi = wilson_interval(31, 40)
    assert lo == pytest.approx(0.624969, abs=1e-6) and hi == pytest.approx(0.876839, abs=1e-6)
    assert type(lo) is float and type(hi) is float


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0 < hi < 0.35
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and 0.65 < lo < 1
    with pytest.raises(StatsError):
        wilson_interval(5, 4)
    with pytest.raises(StatsError):
        wilson_interval(-1, 4)
    with pytest.raises(StatsError):
        wilson_interval(1, 4, confidence=1.0)


def test_wilson_narrows_with_confidence_and_n():
    assert np.subtract(*wilson_interval(40, 100, 0.99)[::-1]) > np.subtract(*wilson_interval(40, 100, 0.9)[::-1])
    assert np.subtract(*wilson_interval(400, 1000)[::-1]) < np.subtract(*wilson_interval(40, 100)[::-1])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_matches_scipy(kn, confidence):
    k, n = kn
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(max(0.0, ref.low), abs=1e-12)
    assert hi == pytest.approx(min(1.0, ref.high), abs=1e-12)
    assert lo <= k / n <= hi


# ------------------------------------------------------------------------------------------
# McNemar (exact)
# ------------------------------------------------------------------------------------------
def test_mcnemar_known_values():
    # b=31, c=9: P(X >= 31 | X ~ Bin(40, 1/2)), summed exactly
    tail = float(sum(Fraction(comb(40, k), 2 ** 40) for k in range(31, 41)))
    assert mcnemar_one_sided(31, 9) == pytest.approx(tail, rel=1e-12)
    assert mcnemar_exact(31, 9) == pytest.approx(2 * tail, rel=1e-12)
    assert mcnemar_one_sided(0, 0) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_one_sided(0, 10) == 1.0
    assert mcnemar_one_sided(10, 0) == pytest.approx(0.5 ** 10)
    with pytest.raises(StatsError):
        mcnemar_exact(-1, 3)


counts = st.tuples(st.integers(0, 300), st.integers(0, 300)).filter(lambda bc: sum(bc) > 0)


@settings(max_examples=300, deadline=None)
@given(counts)
def test_mcnemar_matches_scipy_binomtest(bc):
    b, c = bc
    assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-300)
    assert mcnemar_one_sided(b, c) == pytest.approx(
        binomtest(b, b + c, 0.5, alternative="greater").pvalue, rel=1e-9, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(counts)
def test_mcnemar_one_sided_properties(bc):
    b, c = bc
    one, other = mcnemar_one_sided(b, c), mcnemar_one_sided(c, b)
    assert 0 <= one <= 1 and 0 <= other <= 1
    # the two one-sided tails overlap only at the observed value: they sum to 1 + P(X = b)
    assert one + other >= 1 - 1e-12
    # a two-sided p is twice the smaller tail (capped at 1)
    assert mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * min(one, other)), rel=1e-9, abs=1e-300)
    # one more success for the first rate only ever strengthens H1
    assert mcnemar_one_sided(b + 1, c) <= one + 1e-15


def test_discordant_pairs_ignore_nan():
    first = np.array([1, 1, 0, 0, np.nan, 1, 1])
    second = np.array([0, 1, 1, 0, 1, np.nan, 0])
    assert discordant_pairs(first, second) == (2, 1, 5)
    with pytest.raises(StatsError):
        discordant_pairs([1, 0], [1, 0, 1])


# ------------------------------------------------------------------------------------------
# bootstrap
# ------------------------------------------------------------------------------------------
def test_bootstrap_covers_the_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    x = rng.random(500) < 0.3
    lo, hi = paired_bootstrap(lambda s: s.mean(), x.astype(float), n_boot=1000)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 500), rel=0.2)
    assert paired_bootstrap(lambda s: s.mean(), x.astype(float), n_boot=1000) == (lo, hi)


def test_bootstrap_with_indices_keeps_pairs():
    a = np.array([1.0] * 50 + [0.0] * 50)
    b = a.copy()                 # identical paired outcomes: every resampled difference is 0
    assert paired_bootstrap(lambda i: a[i].mean() - b[i].mean(), 100, n_boot=200) == (0.0, 0.0)


def test_bootstrap_degenerate():
    assert all(math.isnan(v) for v in paired_bootstrap(lambda s: s.mean(), np.array([]), n_boot=10))
    assert all(math.isnan(v) for v in paired_bootstrap(lambda i: math.nan, 10, n_boot=10))


@settings(max_examples=30, deadline=None)
@given(st.integers(20, 200), st.floats(0.1, 0.9), st.integers(0, 10_000))
def test_bootstrap_interval_brackets_point_estimate(n, p, seed):
    x = (np.random.default_rng(seed).random(n) < p).astype(float)
    lo, hi = paired_bootstrap(lambda s: s.mean(), x, n_boot=300, seed=seed)
    assert lo <= hi
    assert lo - 1e-12 <= x.mean() <= hi + 1e-12 or x.std() == 0


# --- across replicas: checked against scipy's own tests, computed independently ------------

replica_pairs = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(replica_pairs)
def test_stratified_mcnemar_is_scipys_binomial_test_on_the_pooled_discordant_pairs(pairs):
    b, n = sum(p[0] for p in pairs), sum(p[0] + p[1] for p in pairs)
    expected = 1.0 if n == 0 else binomtest(b, n, 0.5, alternative="greater").pvalue
    assert stratified_mcnemar_one_sided(pairs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(replica_pairs)
def test_heterogeneity_is_scipys_chi_square_test_of_the_informative_replicas(pairs):
    table = [p for p in pairs if sum(p) > 0]
    cols = [sum(p[0] for p in table), sum(p[1] for p in table)]
    if len(table) < 2 or min(cols) == 0:
        assert replica_heterogeneity(pairs) == 1.0
    else:
        expected = chi2_contingency(table, correction=False).pvalue
        assert replica_heterogeneity(pairs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_fixed_tables_agreeing_and_disagreeing_replicas():
    # three seeds that agree (b >> c each): combined evidence is stronger than any one seed
    agree = [(12, 3), (11, 4), (13, 2)]
    assert stratified_mcnemar_one_sided(agree) < min(mcnemar_one_sided(b, c) for b, c in agree)
    assert replica_heterogeneity(agree) > 0.5
    # two seeds that point opposite ways: the pooled test sees nothing, heterogeneity sees it
    disagree = [(20, 0), (0, 20)]
    assert stratified_mcnemar_one_sided(disagree) == pytest.approx(binomtest(20, 40, 0.5, alternative="greater").pvalue)
    assert replica_heterogeneity(disagree) < 1e-8
    with pytest.raises(StatsError):
        stratified_mcnemar_one_sided([])
    with pytest.raises(StatsError):
        replica_heterogeneity([(-1, 2)])
