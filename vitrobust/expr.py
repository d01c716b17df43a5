"""The check language, one import away: ``from vitrobust.expr import parse_check, measures, ...``.

The language lives in two modules of one job each: :mod:`vitrobust.exprparse` reads a check's
text into a tree (the grammar is documented there), :mod:`vitrobust.exprtree` holds the tree's
nodes and everything done with a parsed check (its measures, its links, arithmetic, canonical
text). Which measures exist, and what arguments each takes, comes from the measure registry
(:mod:`vitrobust.measures`), not from here.
"""
from __future__ import annotations

from .exprparse import parse_check
from .exprtree import (COMPARISONS, DIRECTIONS, AttackRef, BinOp, Chain, ExprError, Measure,
                       Monotonic, Neg, Number, compare, evaluate, links, measures, unparse)

__all__ = [
    "ExprError", "Number", "AttackRef", "Measure", "BinOp", "Neg", "Chain", "Monotonic",
    "DIRECTIONS", "COMPARISONS", "parse_check", "measures", "evaluate", "unparse", "links", "compare",
]
