"""Seed replicas of the zoo: the same recipes, trained again with other seeds.

A claim about a compression method ("pruned models are more sensitive") is a claim about the
method, not about one trained model, and one build cannot tell an effect from training noise.
Replica ``s`` (``deit_small@s1``, ``deit_small@s1:prune0.7``) shifts the ``seed`` of every recipe
along the name's chain by ``s * SEED_STRIDE``: initial weights, data order, augmentation,
dropout and the Gumbel noise of token pruning all change; the architecture, the data and every
other hyperparameter stay. The recipe records ``replica: s``, so a replica's cache and release
keys differ from the default zoo's (replica 0, whose recipes are untouched).
"""
from __future__ import annotations

SEED_STRIDE = 1000   # recipes seed 0 and 1 in the default zoo: strides keep replicas apart


def replica_recipe(recipe: dict, replica: int) -> dict:
    """``recipe`` for replica ``replica`` (0: ``recipe`` itself, unchanged)."""
    if not replica:
        return dict(recipe)
    return {**recipe, "seed": int(recipe.get("seed", 0)) + SEED_STRIDE * int(replica), "replica": int(replica)}


def replica_of(recipe: dict) -> int:
    """The replica a (base's) recipe was made for."""
    return int(recipe.get("replica", 0))
