"""Statistics for paired robustness comparisons (numpy/scipy only, no torch).

- :func:`wilson_interval`: the Wilson score interval of a binomial proportion (Wilson 1927;
  Newcombe 1998, method 3) -- the interval reported beside every ASR and accuracy.
- :func:`mcnemar_exact` / :func:`mcnemar_one_sided`: McNemar's test for two paired rates
  (McNemar 1947) in its *exact* form: conditional on the ``b + c`` discordant images, ``b`` is
  Binomial(b + c, 1/2) under the null. The exact form is used for every count (not only small
  ones, where the chi-square approximation is poor): the binomial tail is cheap to compute.
- :func:`paired_bootstrap`: a percentile bootstrap over images (Efron & Tibshirani 1993), for
  statistics that are not a difference of two rates (margins, ratios, sums of several rates).
- :func:`stratified_mcnemar_one_sided` / :func:`replica_heterogeneity`: the same comparison
  over K independently trained replicas (training seeds). Combined: the exact Mantel-Haenszel
  test for matched pairs, stratified by replica. Disagreement: a chi-square test of whether the
  replicas' discordance splits ``b / (b + c)`` differ. These are the building blocks for
  deciding a claim across seeds; the zoo does not build replicas yet.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np
from scipy.stats import binom, chi2, norm

from .errors import VitrobustError

__all__ = ["wilson_interval", "mcnemar_exact", "mcnemar_one_sided", "discordant_pairs",
           "paired_bootstrap", "stratified_mcnemar_one_sided", "replica_heterogeneity", "StatsError"]


class StatsError(VitrobustError):
    """Bad input to a statistic (negative counts, k > n, confidence outside (0, 1))."""


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise StatsError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


def _check_count(name: str, value) -> int:
    if value < 0 or int(value) != value:
        raise StatsError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple:
    """Two-sided Wilson score interval for ``k`` successes in ``n`` trials.

    ``n == 0`` (no image in the denominator) gives the uninformative ``(0.0, 1.0)``. The bounds
    are exactly 0 at ``k == 0`` and exactly 1 at ``k == n``, like scipy's
    ``binomtest(k, n).proportion_ci(method='wilson')``.
    """
    k, n = _check_count("k", k), _check_count("n", n)
    if k > n:
        raise StatsError(f"k ({k}) must not exceed n ({n})")
    z = norm.ppf(0.5 + 0.5 * _check_confidence(confidence))
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 2 * (n + z * z)
    center = (2 * n * p + z * z) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z * z)
    lo = 0.0 if k == 0 else max(0.0, center - delta)
    hi = 1.0 if k == n else min(1.0, center + delta)
    return (float(lo), float(hi))


def mcnemar_one_sided(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value for H1: the first rate exceeds the second.

    ``b``: discordant images where the first succeeded and the second did not; ``c``: the
    reverse. p = P(X >= b) for X ~ Binomial(b + c, 1/2). No discordant pair gives p = 1.
    """
    b, c = _check_count("b", b), _check_count("c", c)
    if b + c == 0:
        return 1.0
    return float(min(1.0, binom.sf(b - 1, b + c, 0.5)))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``min(1, 2 * P(X <= min(b, c)))``, X ~ Bin(b + c, 1/2).

    Because the null distribution is symmetric this equals the two-sided binomial test's
    "sum of outcomes no more likely than the observed one".
    """
    b, c = _check_count("b", b), _check_count("c", c)
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5)))


def discordant_pairs(first, second) -> tuple:
    """``(b, c, n)`` for two outcome arrays over the same images (1 = success, 0 = not, NaN =
    not in that rate's denominator). Only images in both denominators count: ``n`` of them;
    ``b`` = first succeeded and second did not, ``c`` = the reverse."""
    a, s = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != s.shape:
        raise StatsError(f"paired outcomes must have one shape, got {a.shape} and {s.shape}")
    both = ~(np.isnan(a) | np.isnan(s))
    a, s = a[both] > 0.5, s[both] > 0.5
    return int(np.sum(a & ~s)), int(np.sum(~a & s)), int(both.sum())


def paired_bootstrap(fn: Callable, samples: Union[int, np.ndarray], n_boot: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> tuple:
    """Percentile bootstrap interval of a statistic over resampled images.

    ``samples`` is either the number of images ``N`` -- then ``fn`` receives an index array of
    length N drawn with replacement -- or an array whose first axis is the images -- then ``fn``
    receives ``samples[idx]``. Pairing is kept because one index draw serves every measure.
    Resamples where ``fn`` is not finite (e.g. an empty denominator) are dropped; if none is
    left the interval is ``(nan, nan)``. Deterministic for a given ``seed``.
    """
    _check_confidence(confidence)
    data = None if isinstance(samples, (int, np.integer)) else np.asarray(samples)
    n = int(samples) if data is None else len(data)
    if n <= 0 or n_boot <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, size=n)
        stats[i] = fn(idx if data is None else data[idx])
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (math.nan, math.nan)
    alpha = 1 - confidence
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def _pairs(pairs) -> list:
    out = [(_check_count("b", b), _check_count("c", c)) for b, c in pairs]
    if not out:
        raise StatsError("no replicas: give one (b, c) pair of discordant counts per replica")
    return out


def stratified_mcnemar_one_sided(pairs) -> float:
    """Exact one-sided p-value across replicas, H1: the first rate exceeds the second.

    ``pairs``: one ``(b, c)`` per replica (each replica's own paired images). Under the null,
    each replica's ``b`` is Binomial(b + c, 1/2) given its discordant count, independently, so
    the total ``sum(b)`` is Binomial(sum(b + c), 1/2): the exact form of the Mantel-Haenszel
    test for matched pairs stratified by replica. With one replica it is
    :func:`mcnemar_one_sided`.
    """
    pairs = _pairs(pairs)
    return mcnemar_one_sided(sum(b for b, _ in pairs), sum(c for _, c in pairs))


def replica_heterogeneity(pairs) -> float:
    """p-value that the replicas disagree: Pearson's chi-square test of homogeneity on the
    K x 2 table of ``(b, c)`` (K - 1 degrees of freedom). A small value means the effect
    varies with the training seed. Replicas without a discordant image carry no information
    and are left out; fewer than two informative replicas give p = 1.
    """
    table = np.array([p for p in _pairs(pairs) if sum(p) > 0], dtype=float)
    if len(table) < 2 or table.sum(0).min() == 0:
        return 1.0   # one replica, or every replica split the same way (all b or all c)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(chi2.sf(statistic, len(table) - 1))
