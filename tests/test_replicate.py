"""Checks decided across seed replicas: per-replica verdicts, the pooled (stratified) test, the
heterogeneity test and the "varies" rule, against scipy computed independently."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, chi2_contingency

from vitrobust.exprparse import parse_check
from vitrobust.measures import Observation
from vitrobust.replicate import VARIES, decide_across, replica_node
from vitrobust.verdict import VerdictError

CHECK = parse_check("asr(m:int8, a) > asr(m, a)")


def _paired(b: int, c: int, both: int = 0, neither: int = 0):
    """Outcome arrays with ``b`` images where only the first succeeds, ``c`` only the second."""
    first = np.array([1.0] * b + [0.0] * c + [1.0] * both + [0.0] * neither)
    second = np.array([0.0] * b + [1.0] * c + [1.0] * both + [0.0] * neither)
    return first, second


def _replicas(node, tables, n: int = 200):
    """Observations per replica for ``asr(m:int8, a)`` vs ``asr(m, a)``, one (b, c) per replica,
    the same number of images in each (they share the data slice)."""
    left, right = [m for m in replica_node(node, 0).operands]
    out = []
    for seed, (b, c) in enumerate(tables):
        first, second = _paired(b, c, neither=n - b - c)
        out.append({replica_node(left, seed): Observation(float(first.mean()), first),
                    replica_node(right, seed): Observation(float(second.mean()), second)})
    return out


def test_replica_node_renames_every_model_and_source():
    node = parse_check("transfer(m -> m:prune0.7, a) < asr(m:prune0.7, a) + 0.1")
    renamed = replica_node(node, 2)
    from vitrobust.exprtree import measures
    names = {(x.source, x.model) for x in measures(renamed)}
    assert names == {("m@s2", "m@s2:prune0.7"), (None, "m@s2:prune0.7")}
    assert replica_node(node, 0) == node


def test_each_replica_inconclusive_but_the_pooled_test_holds():
    # 12:6 discordant in each of three builds: p 0.12 alone, but 36:18 pooled
    verdict = decide_across(CHECK, _replicas(CHECK, [(12, 6)] * 3))
    assert [r["status"] for r in verdict.replicas] == ["inconclusive"] * 3
    assert verdict.status == "holds"
    assert verdict.p_value == pytest.approx(binomtest(36, 54, 0.5, alternative="greater").pvalue)
    assert verdict.replicas[0]["p_value"] == pytest.approx(binomtest(12, 18, 0.5, alternative="greater").pvalue)
    het = next(iter(verdict.heterogeneity.values()))
    assert het == pytest.approx(1.0)   # identical tables: no sign of seed dependence
    assert "per seed inconclusive/inconclusive/inconclusive" in verdict.statistic


def test_opposite_significant_replicas_vary_with_the_seed():
    verdict = decide_across(CHECK, _replicas(CHECK, [(30, 5), (5, 30), (20, 18)]))
    assert [r["status"] for r in verdict.replicas] == ["holds", "fails", "inconclusive"]
    assert verdict.status == VARIES
    expected = chi2_contingency(np.array([[30, 5], [5, 30], [20, 18]]), correction=False)[1]
    assert next(iter(verdict.heterogeneity.values())) == pytest.approx(expected)
    assert verdict.statistic.startswith("varies with the training seed (holds/fails/inconclusive)")
    assert "seed 1: fails" in verdict.message


def test_disagreement_without_significant_heterogeneity_is_decided_by_the_pooled_test():
    # one build reaches significance and one does not, from similar tables: not seed dependence
    verdict = decide_across(CHECK, _replicas(CHECK, [(16, 5), (13, 7)]))
    assert [r["status"] for r in verdict.replicas] == ["holds", "inconclusive"]
    assert next(iter(verdict.heterogeneity.values())) > 0.05
    assert verdict.status == "holds"
    assert verdict.p_value == pytest.approx(binomtest(29, 41, 0.5, alternative="greater").pvalue)


def test_disagreement_with_significant_heterogeneity_varies():
    verdict = decide_across(CHECK, _replicas(CHECK, [(40, 2), (10, 10)]))
    assert [r["status"] for r in verdict.replicas] == ["holds", "inconclusive"]
    assert next(iter(verdict.heterogeneity.values())) < 0.05
    assert verdict.status == VARIES


def test_replicas_agreeing_on_a_failure_fail_across_seeds():
    verdict = decide_across(CHECK, _replicas(CHECK, [(3, 25), (4, 22), (2, 30)]))
    assert verdict.status == "fails"
    assert all(r["status"] == "fails" for r in verdict.replicas)


def test_plain_comparisons_vary_when_the_builds_disagree():
    node = parse_check("throughput(m:prune0.5) > throughput(m)")
    left, right = node.operands

    def obs(seed, fast, slow):
        return {replica_node(left, seed): Observation(fast), replica_node(right, seed): Observation(slow)}
    assert decide_across(node, [obs(0, 10.0, 8.0), obs(1, 11.0, 9.0)]).status == "holds"
    varying = decide_across(node, [obs(0, 10.0, 8.0), obs(1, 7.0, 9.0)])
    assert varying.status == VARIES
    assert [r["effects"] for r in varying.replicas] == [[2.0], [-2.0]]
    assert varying.heterogeneity == {}   # no outcomes, no test


def test_a_missing_replica_observation_is_an_error():
    observations = _replicas(CHECK, [(5, 1), (5, 1)])
    del observations[1][next(iter(observations[1]))]
    with pytest.raises(VerdictError, match="replica 1: no observation"):
        decide_across(CHECK, observations)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=2, max_size=5))
def test_pooled_p_value_is_the_exact_stratified_mcnemar(tables):
    verdict = decide_across(CHECK, _replicas(CHECK, tables, n=100))
    b, c = sum(t[0] for t in tables), sum(t[1] for t in tables)
    expected = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    assert verdict.p_value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    statuses = [r["status"] for r in verdict.replicas]
    if "holds" in statuses and "fails" in statuses:
        assert verdict.status == VARIES
    if len(set(statuses)) == 1:   # unanimous builds never vary
        assert verdict.status != VARIES
