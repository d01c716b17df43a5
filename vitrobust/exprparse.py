"""Reading a check: a tokenizer and a recursive-descent parser (specs are untrusted: never ``eval``).

A check states a property of measured quantities::

    asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)
    transfer(deit_small -> deit_small:prune0.7, pgd) >= transfer(deit_small -> deit_small:prune0.5, pgd)
    size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)
    monotonic(decreasing, asr(deit_tiny, pgd), asr(deit_small, pgd), asr(deit_base, pgd))

Grammar (``{name}`` matrix placeholders are substituted by the spec loader before parsing)::

    check      := monotonic | chain
    chain      := sum (CMP sum)+                 CMP: < <= > >= == !=
    monotonic  := 'monotonic' '(' DIRECTION ',' sum (',' sum)+ ')'
    sum        := product (('+'|'-') product)*
    product    := unary (('*'|'/') unary)*
    unary      := '-' unary | atom
    atom       := NUMBER | '(' sum ')' | measure
    measure    := NAME '(' MODEL ')'                          registered with args "model"
                | NAME '(' MODEL ',' ATTACK ')'               args "model, attack"
                | NAME '(' MODEL '->' MODEL ',' ATTACK ')'    args "source -> model, attack"
    ATTACK     := IDENT | 'any' '[' IDENT (',' IDENT)* ']'

The measure names and their argument shapes are read from the measure registry
(:mod:`vitrobust.measures`) when a check is parsed, so a newly registered measure parses with
no change here. Every error is an :class:`~vitrobust.exprtree.ExprError` of one line that
starts with the column.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Union

from .exprtree import (COMPARISONS, DIRECTIONS, AttackRef, BinOp, Chain, ExprError, Measure,
                       Monotonic, Neg, Number)
from .measures import is_measure, list_measures, measure_kind
from .names import ModelName, ModelNameError

__all__ = ["parse_check"]

# A word starts with a letter or '_' and may hold the characters of model names and suffixes
# (deit_small:prune0.7, a replica deit_small@s1:prune0.7); a number starts with a digit or '.'.
# No sign: '-' is always an operator.
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.:@]*")
# ASCII digits and spaces only: '\d' and str.isspace() would take look-alikes (Arabic-Indic
# digits, no-break spaces) that read as one thing and mean another.
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPACE = " \t\r\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Checks come from untrusted specs and the parser recurses: bound the size and the nesting, so a
# hostile check is a one-line error, never a RecursionError or a tree too deep to walk. The
# longest shipped check has 31 tokens and 177 characters (a check's text is also its test id).
MAX_CHARS = 1000
MAX_TOKENS = 256
MAX_NESTING = 16      # '(' and unary '-' levels
_PUNCT = ("->", "<=", ">=", "==", "!=", "<", ">", "(", ")", ",", "+", "-", "*", "/", "[", "]")


@dataclass(frozen=True)
class _Tok:
    kind: str      # 'word' | 'number' | 'end' | the punctuation itself
    text: str
    col: int       # 1-based

    def describe(self) -> str:
        return "end of input" if self.kind == "end" else repr(self.text)


def _tokenize(text: str) -> list:
    if len(text) > MAX_CHARS:
        raise ExprError(f"column {MAX_CHARS + 1}: a check has at most {MAX_CHARS} characters")
    toks, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        m = _WORD.match(text, i) or _NUMBER.match(text, i)
        if m:
            toks.append(_Tok("word" if m.re is _WORD else "number", m.group(), i + 1))
            i = m.end()
            if len(toks) > MAX_TOKENS:
                raise ExprError(f"column {toks[-1].col}: a check has at most {MAX_TOKENS} tokens")
            continue
        punct = next((p for p in _PUNCT if text.startswith(p, i)), None)
        if punct is None:
            if ch in "{}":
                raise ExprError(f"column {i + 1}: unexpected {ch!r} (an unknown {{placeholder}}?)")
            raise ExprError(f"column {i + 1}: unexpected character {ch!r}")
        toks.append(_Tok(punct, punct, i + 1))
        i += len(punct)
        if len(toks) > MAX_TOKENS:
            raise ExprError(f"column {toks[-1].col}: a check has at most {MAX_TOKENS} tokens")
    toks.append(_Tok("end", "", n + 1))
    return toks


class _Parser:
    def __init__(self, text: str):
        if not isinstance(text, str):
            raise ExprError(f"a check must be a string, got {type(text).__name__}")
        self.toks = _tokenize(text)
        self.pos = 0
        self.depth = 0

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

    def nested(self, parse):
        """``parse()`` one level deeper; refused past :data:`MAX_NESTING`."""
        if self.depth >= MAX_NESTING:
            raise ExprError(f"column {self.tok.col}: nested more than {MAX_NESTING} levels deep")
        self.depth += 1
        try:
            return parse()
        finally:
            self.depth -= 1

    def unary(self):
        if self.tok.kind == "-":
            self.advance()
            return Neg(self.nested(self.unary))
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
            node = self.nested(self.sum)
            self.expect(")", "to close '('")
            return node
        if t.kind == "word":
            if self.peek().kind != "(":
                if is_measure(t.text):
                    self.fail("'(' after a measure name", self.peek())
                self.fail("a number, '(' or a measure such as asr(model, attack)")
            if not is_measure(t.text):
                close = difflib.get_close_matches(t.text, list_measures(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ExprError(f"column {t.col}: unknown measure {t.text!r} "
                                f"(known: {', '.join(list_measures())}, monotonic){hint}")
            return self.measure()
        self.fail("a number, '(' or a measure such as asr(model, attack)")

    def model(self, what: str = "a model name") -> ModelName:
        t = self.tok
        if t.kind != "word":
            self.fail(what)
        try:
            name = ModelName(t.text)
        except ModelNameError as e:
            raise ExprError(f"column {t.col}: {e}") from None
        self.advance()
        return name

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
        """``NAME(...)`` with the arguments the registry declares for NAME."""
        kind = self.advance().text
        info = measure_kind(kind)
        self.advance()  # '('
        source, attack = None, None
        if info.takes_source:
            source = self.model("a source model name")
            self.expect("->", f"after the source model name ({kind}({info.args}))")
            model = self.model("a target model name")
        else:
            model = self.model()
        if info.takes_attack:
            self.expect(",", "after model name")
            attack = self.attack()
            self.expect(")", f"to close {kind}(...)")
        else:
            self.expect(")", f"to close {kind}(...) (it takes one model)")
        return Measure(kind, model, source, attack)


def parse_check(text: str) -> Union[Chain, Monotonic]:
    """Parse one check (a comparison chain or ``monotonic(...)``); raises :class:`ExprError`."""
    return _Parser(text).check()
