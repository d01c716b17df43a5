"""The check language's tree: its nodes, and what can be done with a parsed check (no torch).

Parsing text into these nodes is :mod:`vitrobust.exprparse`'s job; this module holds the nodes
and every operation on them that needs no text: collecting the measures a check names
(:func:`measures`), its pairwise comparisons (:func:`links`), arithmetic (:func:`evaluate`) and
the canonical text (:func:`unparse`), which the parser reads back to the same tree.

Nodes are frozen (hashable) dataclasses, so a :class:`Measure` can key a dict of measured
values. What a measure is (its arguments, whether it is a rate) is not written here: it comes
from the measure registry (:mod:`vitrobust.measures`), so registering a measure is all it takes
for checks to name it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

from .errors import VitrobustError
from .measures import MeasureError, MeasureKind, measure_kind
from .names import ModelName, ModelNameError

__all__ = [
    "ExprError", "Number", "AttackRef", "Measure", "BinOp", "Neg", "Chain", "Monotonic",
    "DIRECTIONS", "COMPARISONS", "measures", "links", "compare", "evaluate", "unparse",
]

# Monotonic directions and the comparison each consecutive pair must satisfy.
DIRECTIONS = {"increasing": "<", "decreasing": ">", "nondecreasing": "<=", "nonincreasing": ">="}
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


class ExprError(VitrobustError):
    """A check that does not parse or evaluate; the message is one line (with the column when
    it comes from the parser)."""


# --------------------------------------------------------------------------------------------
# nodes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class AttackRef:
    """One attack alias, or ``any[...]``: the worst case (per image) over several aliases.
    ``any`` is order-free (names sorted and de-duplicated), so ``any[pgd, sq]`` and
    ``any[sq, pgd]`` are one measure."""

    names: tuple
    any: bool = False

    def __post_init__(self):
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        if not names:
            raise ExprError("an attack reference needs at least one attack name")
        if self.any:
            names = tuple(sorted(set(names)))
        elif len(names) != 1:
            raise ExprError(f"a plain attack reference names one attack, got {len(names)}; use any[...]")
        object.__setattr__(self, "names", names)

    @property
    def text(self) -> str:
        return f"any[{', '.join(self.names)}]" if self.any else self.names[0]


def _model_name(kind: str, text) -> ModelName:
    try:
        return ModelName(text)
    except ModelNameError as e:
        raise ExprError(f"{kind}: {e}") from None


@dataclass(frozen=True)
class Measure:
    """A measured quantity, one registered measure applied to its arguments. ``model`` is the
    model measured (the target); ``source`` is where adversarial inputs are made, for measures
    whose arguments are ``source -> model, attack`` (None otherwise); ``attack`` is given iff
    the measure takes one. Model names are :class:`~vitrobust.names.ModelName`."""

    kind: str
    model: str
    source: Union[str, None] = None
    attack: Union[AttackRef, None] = None

    def __post_init__(self):
        try:
            info = measure_kind(self.kind)
        except MeasureError as e:
            raise ExprError(str(e)) from None
        usage = f"{self.kind}({info.args})"
        if info.takes_source != (self.source is not None):
            raise ExprError(f"{usage} {'needs' if info.takes_source else 'takes no'} source model")
        if info.takes_attack != (self.attack is not None):
            raise ExprError(f"{usage} {'needs' if info.takes_attack else 'takes no'} attack")
        if self.attack is not None and not isinstance(self.attack, AttackRef):
            raise ExprError(f"{usage}: the attack must be an AttackRef, got {type(self.attack).__name__}")
        object.__setattr__(self, "model", _model_name(self.kind, self.model))
        if self.source is not None:
            object.__setattr__(self, "source", _model_name(self.kind, self.source))

    @property
    def definition(self) -> MeasureKind:
        """The registry's entry: arguments, rate or not, which way is worse, how to compute it."""
        return measure_kind(self.kind)

    @property
    def is_rate(self) -> bool:
        """A fraction over the images of the data slice (has per-image outcomes)."""
        return self.definition.rate

    @property
    def key(self) -> str:
        """Canonical text, e.g. ``transfer(deit_tiny -> deit_tiny:int8, sp)``: check ids, report
        keys and the run database use it, so its form must not change."""
        info = self.definition
        if info.takes_source:
            return f"{self.kind}({self.source} -> {self.model}, {self.attack.text})"
        if info.takes_attack:
            return f"{self.kind}({self.model}, {self.attack.text})"
        return f"{self.kind}({self.model})"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class BinOp:
    op: str           # + - * /
    left: object
    right: object


@dataclass(frozen=True)
class Neg:
    operand: object


@dataclass(frozen=True)
class Chain:
    """``operands[0] ops[0] operands[1] ops[1] ...``; holds iff every link holds."""
    operands: tuple
    ops: tuple


@dataclass(frozen=True)
class Monotonic:
    direction: str    # a key of DIRECTIONS
    items: tuple


# --------------------------------------------------------------------------------------------
# walking
# --------------------------------------------------------------------------------------------
def _children(node) -> tuple:
    if isinstance(node, BinOp):
        return (node.left, node.right)
    if isinstance(node, Neg):
        return (node.operand,)
    if isinstance(node, Chain):
        return node.operands
    if isinstance(node, Monotonic):
        return node.items
    return ()


def measures(node) -> list:
    """Every distinct :class:`Measure` under ``node``, in order of first appearance."""
    seen, out, stack = set(), [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Measure):
            if n not in seen:
                seen.add(n)
                out.append(n)
        else:
            stack.extend(reversed(_children(n)))
    return out


def links(node) -> list:
    """The pairwise comparisons ``(left, op, right)`` a check consists of. A chain ``a > b > c``
    gives (a > b), (b > c); ``monotonic(decreasing, a, b, c)`` gives the same."""
    if isinstance(node, Chain):
        return [(node.operands[i], op, node.operands[i + 1]) for i, op in enumerate(node.ops)]
    if isinstance(node, Monotonic):
        op = DIRECTIONS[node.direction]
        return [(a, op, b) for a, b in zip(node.items, node.items[1:])]
    raise ExprError(f"not a check: {type(node).__name__}")


_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def compare(left: float, op: str, right: float) -> bool:
    """Apply one comparison operator (no tolerance: callers decide what equality means)."""
    if op not in _COMPARE:
        raise ExprError(f"unknown comparison {op!r}")
    return _COMPARE[op](left, right)


def evaluate(node, values: Mapping) -> float:
    """Value of an arithmetic node, given a value for every :class:`Measure` in it."""
    if isinstance(node, Number):
        return float(node.value)
    if isinstance(node, Measure):
        try:
            return float(values[node])
        except KeyError:
            raise ExprError(f"no value for {node.key}") from None
    if isinstance(node, Neg):
        return -evaluate(node.operand, values)
    if isinstance(node, BinOp):
        a, b = evaluate(node.left, values), evaluate(node.right, values)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            if b == 0:
                raise ExprError(f"division by zero in {unparse(node)}")
            return a / b
        raise ExprError(f"unknown operator {node.op!r}")
    raise ExprError(f"cannot evaluate a {type(node).__name__}: only arithmetic has a value")


# --------------------------------------------------------------------------------------------
# back to text
# --------------------------------------------------------------------------------------------
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _prec(node) -> int:
    if isinstance(node, BinOp):
        return _PREC[node.op]
    if isinstance(node, Neg):
        return 3
    return 4


def _number(value: float) -> str:
    if value < 0:                 # only hand-built trees hold negative numbers
        return f"(-{_number(-value)})"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def unparse(node) -> str:
    """Canonical text of a node; parsing it gives the node back (for every parsed node)."""
    if isinstance(node, Number):
        return _number(node.value)
    if isinstance(node, Measure):
        return node.key
    if isinstance(node, Neg):
        inner = unparse(node.operand)
        return f"-({inner})" if _prec(node.operand) < 3 else f"-{inner}"
    if isinstance(node, BinOp):
        p = _PREC[node.op]
        left, right = unparse(node.left), unparse(node.right)
        if _prec(node.left) < p:
            left = f"({left})"
        if _prec(node.right) <= p:   # left-associative: a - (b - c) keeps its parentheses
            right = f"({right})"
        return f"{left} {node.op} {right}"
    if isinstance(node, Chain):
        parts = [unparse(node.operands[0])]
        for op, operand in zip(node.ops, node.operands[1:]):
            parts += [op, unparse(operand)]
        return " ".join(parts)
    if isinstance(node, Monotonic):
        return f"monotonic({node.direction}, {', '.join(unparse(i) for i in node.items)})"
    raise ExprError(f"cannot unparse {type(node).__name__}")
