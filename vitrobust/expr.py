"""The check language: a tokenizer and a recursive-descent parser (never ``eval``).

A check states a property of measured quantities::

    asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)
    transfer(deit_small -> deit_small:prune0.7, pgd) >= transfer(deit_small -> deit_small:prune0.5, pgd)
    size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)
    monotonic(decreasing, asr(deit_tiny, pgd), asr(deit_small, pgd), asr(deit_base, pgd))

Grammar (``{name}`` matrix placeholders are substituted by :mod:`vitrobust.spec` before parsing)::

    check      := monotonic | chain
    chain      := sum (CMP sum)+                 CMP: < <= > >= == !=
    monotonic  := 'monotonic' '(' DIRECTION ',' sum (',' sum)+ ')'
    sum        := product (('+'|'-') product)*
    product    := unary (('*'|'/') unary)*
    unary      := '-' unary | atom
    atom       := NUMBER | '(' sum ')' | measure
    measure    := 'asr' '(' MODEL ',' ATTACK ')'
                | 'transfer' '(' MODEL '->' MODEL ',' ATTACK ')'
                | ('acc'|'size_mb'|'gflops'|'throughput'|'params') '(' MODEL ')'
    ATTACK     := IDENT | 'any' '[' IDENT (',' IDENT)* ']'

The AST is made of frozen (hashable) dataclasses, so a :class:`Measure` can key a dict of
measured values. ``any[a, b]`` (the worst case over attacks) is order-free: its names are sorted
and de-duplicated, so ``any[pgd, square]`` and ``any[square, pgd]`` are one measure.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Union

__all__ = [
    "ExprError", "Number", "AttackRef", "Measure", "BinOp", "Neg", "Chain", "Monotonic",
    "RATE_KINDS", "CONSTANT_KINDS", "MEASURE_KINDS", "DIRECTIONS", "COMPARISONS",
    "parse_check", "parse_expr", "measures", "evaluate", "unparse", "links", "compare",
]

RATE_KINDS = ("asr", "transfer", "acc")                           # fractions of images, in [0, 1]
CONSTANT_KINDS = ("size_mb", "gflops", "throughput", "params")    # one number per model
MEASURE_KINDS = RATE_KINDS + CONSTANT_KINDS
# Monotonic directions and the comparison each consecutive pair must satisfy.
DIRECTIONS = {"increasing": "<", "decreasing": ">", "nondecreasing": "<=", "nonincreasing": ">="}
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


class ExprError(ValueError):
    """A check that does not parse or evaluate; the message is one line with the column."""


# --------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class AttackRef:
    """One attack alias, or ``any[...]``: the worst case (per image) over several aliases."""
    names: tuple
    any: bool = False

    def __post_init__(self):
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        if not names:
            raise ExprError("an attack reference needs at least one attack name")
        if self.any:
            names = tuple(sorted(set(names)))       # order-free: one canonical measure
        elif len(names) != 1:
            raise ExprError(f"a plain attack reference names one attack, got {len(names)}; use any[...]")
        object.__setattr__(self, "names", names)

    @property
    def text(self) -> str:
        return f"any[{', '.join(self.names)}]" if self.any else self.names[0]


@dataclass(frozen=True)
class Measure:
    """A measured quantity. For ``transfer`` the adversarial inputs are made on ``source`` and
    scored on ``model`` (the target); for every other kind ``source`` is None."""
    kind: str
    model: str
    source: Union[str, None] = None
    attack: Union[AttackRef, None] = None

    def __post_init__(self):
        if self.kind not in MEASURE_KINDS:
            raise ExprError(f"unknown measure {self.kind!r} (known: {', '.join(MEASURE_KINDS)})")
        if (self.kind == "transfer") != (self.source is not None):
            raise ExprError(f"{self.kind}: a source model is given only for transfer")
        if (self.kind in ("asr", "transfer")) != (self.attack is not None):
            raise ExprError(f"{self.kind}: an attack is given only for asr and transfer")

    @property
    def is_rate(self) -> bool:
        """A fraction over the images of the data slice (has per-image outcomes)."""
        return self.kind in RATE_KINDS

    @property
    def key(self) -> str:
        """Canonical text, e.g. ``transfer(deit_tiny -> deit_tiny:int8, sp)``."""
        if self.kind == "transfer":
            return f"transfer({self.source} -> {self.model}, {self.attack.text})"
        if self.kind == "asr":
            return f"asr({self.model}, {self.attack.text})"
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
# Tokenizer
# --------------------------------------------------------------------------------------------
# A word starts with a letter or '_' and may hold the characters of model names and suffixes
# (deit_small:prune0.7); a number starts with a digit or '.'. No sign: '-' is always an operator.
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PUNCT = ("->", "<=", ">=", "==", "!=", "<", ">", "(", ")", ",", "+", "-", "*", "/", "[", "]")


@dataclass(frozen=True)
class _Tok:
    kind: str      # 'word' | 'number' | 'end' | the punctuation itself
    text: str
    col: int       # 1-based

    def describe(self) -> str:
        return "end of input" if self.kind == "end" else repr(self.text)


def _tokenize(text: str) -> list:
    toks, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        m = _WORD.match(text, i)
        if m:
            toks.append(_Tok("word", m.group(), i + 1))
            i = m.end()
            continue
        m = _NUMBER.match(text, i)
        if m:
            toks.append(_Tok("number", m.group(), i + 1))
            i = m.end()
            continue
        for p in _PUNCT:
            if text.startswith(p, i):
                toks.append(_Tok(p, p, i + 1))
                i += len(p)
                break
        else:
            if ch in "{}":
                raise ExprError(f"column {i + 1}: unexpected {ch!r} (an unknown {{placeholder}}?)")
            raise ExprError(f"column {i + 1}: unexpected character {ch!r}")
    toks.append(_Tok("end", "", n + 1))
    return toks


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str):
        if not isinstance(text, str):
            raise ExprError(f"a check must be a string, got {type(text).__name__}")
        self.toks = _tokenize(text)
        self.pos = 0

    # -- helpers --
    @property
    def tok(self) -> _Tok:
        return self.toks[self.pos]

    def peek(self, k: int = 1) -> _Tok:
        return self.toks[min(self.pos + k, len(self.toks) - 1)]

    def advance(self) -> _Tok:
        t = self.tok
        self.pos = min(self.pos + 1, len(self.toks) - 1)
        return t

    def fail(self, expected: str, tok: _Tok = None):
        tok = tok or self.tok
        raise ExprError(f"column {tok.col}: expected {expected}, got {tok.describe()}")

    def expect(self, kind: str, context: str = "") -> _Tok:
        if self.tok.kind != kind:
            self.fail(f"{kind!r}{' ' + context if context else ''}")
        return self.advance()

    # -- grammar --
    def check(self):
        if self.tok.kind == "word" and self.tok.text == "monotonic" and self.peek().kind == "(":
            node = self.monotonic()
        else:
            node = self.chain()
        if self.tok.kind != "end":
            self.fail("end of check")
        return node

    def chain(self):
        operands, ops = [self.sum()], []
        while self.tok.kind in COMPARISONS:
            ops.append(self.advance().kind)
            operands.append(self.sum())
        if not ops:
            self.fail("a comparison (" + " ".join(COMPARISONS) + ")")
        return Chain(tuple(operands), tuple(ops))

    def monotonic(self):
        self.advance()
        self.expect("(", "after monotonic")
        t = self.tok
        if t.kind != "word" or t.text not in DIRECTIONS:
            self.fail("a direction (" + ", ".join(DIRECTIONS) + ")")
        self.advance()
        items = []
        while self.tok.kind == ",":
            self.advance()
            items.append(self.sum())
        if len(items) < 2:
            self.fail("',' and at least two items to compare" if not items else "',' and another item")
        self.expect(")", "to close monotonic(...)")
        return Monotonic(t.text, tuple(items))

    def sum(self):
        node = self.product()
        while self.tok.kind in ("+", "-"):
            op = self.advance().kind
            node = BinOp(op, node, self.product())
        return node

    def product(self):
        node = self.unary()
        while self.tok.kind in ("*", "/"):
            op = self.advance().kind
            node = BinOp(op, node, self.unary())
        return node

    def unary(self):
        if self.tok.kind == "-":
            self.advance()
            return Neg(self.unary())
        return self.atom()

    def atom(self):
        t = self.tok
        if t.kind == "number":
            self.advance()
            value = float(t.text)
            if not math.isfinite(value):
                raise ExprError(f"column {t.col}: number {t.text} is out of range")
            return Number(value)
        if t.kind == "(":
            self.advance()
            node = self.sum()
            self.expect(")", "to close '('")
            return node
        if t.kind == "word":
            if self.peek().kind != "(":
                if t.text in MEASURE_KINDS:
                    self.fail("'(' after a measure name", self.peek())
                self.fail("a number, '(' or a measure such as asr(model, attack)")
            if t.text not in MEASURE_KINDS:
                raise ExprError(f"column {t.col}: unknown measure {t.text!r} "
                                f"(known: {', '.join(MEASURE_KINDS)}, monotonic)")
            return self.measure()
        self.fail("a number, '(' or a measure such as asr(model, attack)")

    def model(self, what: str = "a model name") -> str:
        t = self.tok
        if t.kind != "word":
            self.fail(what)
        self.advance()
        return t.text

    def attack(self) -> AttackRef:
        t = self.tok
        if t.kind == "word" and t.text == "any":
            self.advance()
            self.expect("[", "after any (any[attack, ...] is the worst case over attacks)")
            names = [self.ident()]
            while self.tok.kind == ",":
                self.advance()
                names.append(self.ident())
            self.expect("]", "to close any[...]")
            return AttackRef(tuple(names), any=True)
        return AttackRef((self.ident(),))

    def ident(self) -> str:
        t = self.tok
        if t.kind != "word":
            self.fail("an attack name")
        if not _IDENT.match(t.text) or t.text == "any":
            raise ExprError(f"column {t.col}: {t.text!r} is not an attack name "
                            "(letters, digits and '_')")
        self.advance()
        return t.text

    def measure(self) -> Measure:
        kind = self.advance().text
        self.advance()  # '('
        if kind == "transfer":
            source = self.model("a source model name")
            self.expect("->", "after the source model name (transfer(source -> target, attack))")
            target = self.model("a target model name")
            self.expect(",", "after model name")
            attack = self.attack()
            self.expect(")", "to close transfer(...)")
            return Measure("transfer", target, source, attack)
        model = self.model()
        if kind == "asr":
            self.expect(",", "after model name")
            attack = self.attack()
            self.expect(")", "to close asr(...)")
            return Measure("asr", model, None, attack)
        self.expect(")", f"to close {kind}(...) (it takes one model)")
        return Measure(kind, model)


def parse_check(text: str) -> Union[Chain, Monotonic]:
    """Parse one check (a comparison chain or ``monotonic(...)``); raises :class:`ExprError`."""
    return _Parser(text).check()


def parse_expr(text: str):
    """Parse one arithmetic expression (no comparison), e.g. ``0.35 * size_mb(deit_tiny)``."""
    p = _Parser(text)
    node = p.sum()
    if p.tok.kind != "end":
        p.fail("end of expression")
    return node


# --------------------------------------------------------------------------------------------
# Walking the AST
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


def compare(left: float, op: str, right: float) -> bool:
    """Apply one comparison operator (no tolerance: callers decide what equality means)."""
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    raise ExprError(f"unknown comparison {op!r}")


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
# Back to text
# --------------------------------------------------------------------------------------------
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _prec(node) -> int:
    if isinstance(node, BinOp):
        return _PREC[node.op]
    if isinstance(node, Neg):
        return 3
    return 4


def _number(value: float) -> str:
    if value < 0:                 # only hand-built ASTs hold negative numbers
        return f"(-{_number(-value)})"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def unparse(node) -> str:
    """Canonical text of a node; ``parse(unparse(n)) == n`` for every parsed node."""
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
