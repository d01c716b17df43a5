"""Checks decided across seed replicas of the zoo (no torch).

With ``--vitrobust-seeds K`` a check is measured on K independently trained builds of every model
it names (replica 0 is the default zoo, ``deit_tiny@s1`` the next; see
:mod:`vitrobust.zoo.replicas`), all on the same images, and decided three ways:

- **per replica**: the single-build verdict (:func:`vitrobust.verdict.decide`) of each build;
- **combined**: the same rules on the replicas' outcomes pooled, one stratum per replica. For a
  paired rate comparison that is the exact stratified McNemar test (Mantel-Haenszel for matched
  pairs: the discordant counts add up, :func:`~vitrobust.stats.stratified_mcnemar_one_sided`);
  a rate against a constant uses the pooled Wilson interval, a margin or ratio the paired
  bootstrap over the pooled image-replica pairs. Replicas share their images, so the combined
  test is about the method on this image set, with the training seed as the random factor;
- **heterogeneity**: for each paired rate comparison, the chi-square test of homogeneity of the
  replicas' (b, c) tables (:func:`~vitrobust.stats.replica_heterogeneity`).

The verdict is ``varies`` ("varies with the training seed") when the replicas disagree
significantly: one replica holds and another fails (each significant by itself), or their
verdicts differ and a link's heterogeneity test is significant. A comparison without outcomes
(sizes, FLOPs, throughput) has no test: replicas that decide it differently make it vary.
Otherwise the combined test decides: holds, fails or inconclusive *across seeds*.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from .exprtree import Measure, links, measures, unparse
from .measures import Observation
from .stats import discordant_pairs, replica_heterogeneity
from .verdict import Verdict, VerdictError, decide

__all__ = ["VARIES", "decide_across", "replica_node"]

VARIES = "varies"   # the status of a claim whose replicas disagree significantly


def replica_node(node, seed: int):
    """``node`` with every model it names in replica ``seed`` (``deit_tiny`` -> ``deit_tiny@s1``)."""
    if isinstance(node, Measure):
        return dataclasses.replace(node, model=node.model.replica(seed),
                                   source=None if node.source is None else node.source.replica(seed))
    if not dataclasses.is_dataclass(node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, tuple):
            changes[f.name] = tuple(replica_node(v, seed) for v in value)
        elif dataclasses.is_dataclass(value):
            changes[f.name] = replica_node(value, seed)
    return dataclasses.replace(node, **changes)


def _pooled(obs: list[Observation]) -> Observation:
    """One observation from the replicas' observations of a measure: outcomes side by side (one
    stratum per replica), or the mean value for a measure without outcomes."""
    if all(o.outcomes is not None for o in obs):
        outcomes = np.concatenate([o.outcomes for o in obs])
        valid = ~np.isnan(outcomes)
        value = float(outcomes[valid].mean()) if valid.any() else float("nan")
        return Observation(value, outcomes)
    if any(o.outcomes is not None for o in obs):
        raise VerdictError("a measure has per-image outcomes in some replicas and not in others")
    return Observation(float(np.mean([o.value for o in obs])), None)


def _effects(node, values: Mapping) -> list:
    """``left - right`` of every link, from a verdict's values (side text -> value)."""
    out = []
    for left, _, right in links(node):
        lv, rv = values.get(unparse(left)), values.get(unparse(right))
        out.append(None if lv is None or rv is None else float(lv) - float(rv))
    return out


def decide_across(node, per_replica: Sequence[Mapping], confidence: float = 0.95, *,
                  n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Decide ``node`` (replica-0 names) from ``per_replica[s]``: the observations of
    ``replica_node(node, s)``. The verdict's ``replicas`` lists each replica's status, p-value,
    statistic, link effects (left - right) and values (keyed by replica-0 measure names)."""
    if not per_replica:
        raise VerdictError("no replicas to decide across")
    alpha = 1 - confidence
    named = measures(node)
    replicas, mapped = [], []
    for s, observations in enumerate(per_replica):
        own = {m: observations[replica_node(m, s)] for m in named if replica_node(m, s) in observations}
        missing = [m.key for m in named if m not in own]
        if missing:
            raise VerdictError(f"replica {s}: no observation for {missing[0]}")
        mapped.append(own)
        verdict = decide(node, own, confidence, n_boot=n_boot, seed=seed)
        replicas.append({"seed": s, "status": verdict.status, "p_value": verdict.p_value,
                         "statistic": verdict.statistic, "effects": _effects(node, verdict.values),
                         "values": {m.key: verdict.values[m.key] for m in named}})
    pooled = decide(node, {m: _pooled([own[m] for own in mapped]) for m in named}, confidence,
                    n_boot=n_boot, seed=seed)
    heterogeneity = {}
    for left, op, right in links(node):
        if isinstance(left, Measure) and isinstance(right, Measure) \
                and all(own[left].outcomes is not None and own[right].outcomes is not None for own in mapped):
            pairs = [discordant_pairs(own[left].outcomes, own[right].outcomes)[:2] for own in mapped]
            heterogeneity[f"{unparse(left)} {op} {unparse(right)}"] = replica_heterogeneity(pairs)
    statuses = [r["status"] for r in replicas]
    disagree = len(set(statuses)) > 1
    varies = ("holds" in statuses and "fails" in statuses) or \
        (disagree and any(p < alpha for p in heterogeneity.values()))
    status = VARIES if varies else pooled.status
    per_seed = "/".join(statuses)
    het = "; ".join(f"heterogeneity p={p:.3g} ({link})" for link, p in heterogeneity.items())
    head = (f"varies with the training seed ({per_seed})" if varies
            else f"{pooled.status} across {len(replicas)} seeds (per seed {per_seed})")
    statistic = "; ".join(filter(None, [head, het, f"pooled: {pooled.statistic}"]))
    lines = [f"{unparse(node)}  ->  {status} across {len(replicas)} training seeds (confidence {confidence:g})"]
    lines += [f"  seed {r['seed']}: {r['status']}: {r['statistic']}" for r in replicas]
    if het:
        lines.append(f"  {het}")
    lines += ["  pooled over the seeds (one stratum per seed):"] + ["    " + line for line in pooled.message.splitlines()]
    return dataclasses.replace(pooled, status=status, statistic=statistic, message="\n".join(lines),
                               replicas=replicas, heterogeneity=heterogeneity)
