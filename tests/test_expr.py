"""The check language: parsing, canonical text, evaluation, errors (unit + property tests)."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from vitrobust.expr import (
    AttackRef, BinOp, Chain, ExprError, Measure, Monotonic, Neg, Number, compare, evaluate, links,
    measures, parse_check, parse_expr, unparse,
)

SP = AttackRef(("sp",))


def asr(model, attack="sp"):
    return Measure("asr", model, attack=AttackRef((attack,)))


# ------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------
def test_simple_comparison():
    node = parse_check("asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)")
    assert node == Chain((asr("deit_tiny:int8"), asr("deit_tiny")), (">",))


def test_transfer_source_and_target():
    node = parse_check("transfer(deit_tiny -> deit_tiny:int8, sp) >= 0.5")
    m = node.operands[0]
    assert (m.kind, m.source, m.model, m.attack) == ("transfer", "deit_tiny", "deit_tiny:int8", SP)
    assert m.key == "transfer(deit_tiny -> deit_tiny:int8, sp)"


def test_constant_measures_and_precedence():
    node = parse_check("size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny) + 1 - 2")
    right = node.operands[1]
    # ((0.35 * size) + 1) - 2: * binds tighter, + and - are left-associative
    assert right == BinOp("-", BinOp("+", BinOp("*", Number(0.35), Measure("size_mb", "deit_tiny")),
                                     Number(1)), Number(2))


def test_fraction_is_a_division_and_numbers_parse():
    assert parse_expr("8/255") == BinOp("/", Number(8), Number(255))
    assert parse_expr("1e-3") == Number(0.001)
    assert parse_expr(".5") == Number(0.5)
    assert evaluate(parse_expr("8/255"), {}) == pytest.approx(8 / 255)


def test_unary_minus_and_parentheses():
    assert parse_expr("-(1 - 2) * 3") == BinOp("*", Neg(BinOp("-", Number(1), Number(2))), Number(3))
    assert evaluate(parse_expr("--2"), {}) == 2


def test_chain_of_three_and_links():
    node = parse_check("asr(a, x) > asr(b, x) >= asr(c, x)")
    assert node.ops == (">", ">=")
    assert [(l.model, op, r.model) for l, op, r in links(node)] == [("a", ">", "b"), ("b", ">=", "c")]


def test_monotonic_links():
    node = parse_check("monotonic(decreasing, asr(a, x), asr(b, x), asr(c, x))")
    assert isinstance(node, Monotonic) and node.direction == "decreasing"
    assert [op for _, op, _ in links(node)] == [">", ">"]
    node = parse_check("monotonic(nondecreasing, acc(a), acc(b))")
    assert [op for _, op, _ in links(node)] == ["<="]


def test_any_attack_is_canonical():
    a = parse_check("asr(deit_tiny, any[square, pgd, square]) > 0")
    b = parse_check("asr(deit_tiny, any[pgd, square]) > 0")
    assert a == b
    m = a.operands[0]
    assert m.attack == AttackRef(("pgd", "square"), any=True)
    assert m.key == "asr(deit_tiny, any[pgd, square])"


def test_model_names_with_suffixes():
    node = parse_check("acc(deit_small_patch16_224:int8) > acc(deit_small:prune0.7:int8)")
    assert [m.model for m in measures(node)] == ["deit_small_patch16_224:int8", "deit_small:prune0.7:int8"]


def test_measure_keys():
    assert Measure("size_mb", "deit_tiny").key == "size_mb(deit_tiny)"
    assert asr("deit_tiny:int8").key == "asr(deit_tiny:int8, sp)"
    assert str(asr("m")) == "asr(m, sp)"
    assert asr("m").is_rate and not Measure("gflops", "m").is_rate


def test_ast_is_hashable_and_usable_as_keys():
    node = parse_check("asr(a, x) - asr(b, x) > 0.1")
    assert hash(node) == hash(parse_check("asr(a,x)-asr(b,x)>0.1"))
    assert {m: 1.0 for m in measures(node)}


def test_measures_unique_in_order():
    node = parse_check("asr(b, x) + acc(a) > asr(b, x) * size_mb(c) + acc(a)")
    assert [m.key for m in measures(node)] == ["asr(b, x)", "acc(a)", "size_mb(c)"]


def test_measure_constructor_validates():
    with pytest.raises(ExprError):
        Measure("asr", "m")                      # asr needs an attack
    with pytest.raises(ExprError):
        Measure("acc", "m", attack=SP)
    with pytest.raises(ExprError):
        Measure("transfer", "m", attack=SP)      # transfer needs a source
    with pytest.raises(ExprError):
        Measure("latency", "m")
    with pytest.raises(ExprError):
        AttackRef(("a", "b"))                    # several names need any=True


# ------------------------------------------------------------------------------------------
# errors: one line, with the column and what was expected
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("asr(deit_tiny -> x, sp) > 1", "column 15: expected ',' after model name, got '->'"),
    ("asr(a, x)", "column 10: expected a comparison"),
    ("asr(a, x) >", "column 12: expected a number, '(' or a measure"),
    ("asr(a, x) > 1 2", "column 15: expected end of check, got '2'"),
    ("asrr(a, x) > 1", "column 1: unknown measure 'asrr'"),
    ("acc(a, x) > 1", "column 6: expected ')' to close acc(...)"),
    ("transfer(a, x) > 1", "column 11: expected '->'"),
    ("asr(a, any[]) > 1", "column 12: expected an attack name, got ']'"),
    ("asr(a, any pgd) > 1", "column 12: expected '['"),
    ("asr(a, x:y) > 1", "column 8: 'x:y' is not an attack name"),
    ("asr(a, x) > (1", "column 15: expected ')' to close '('"),
    ("asr(deit_{size}, x) > 1", "column 10: unexpected '{'"),
    ("asr(a, x) > 1 $", "column 15: unexpected character '$'"),
    ("monotonic(up, acc(a), acc(b))", "column 11: expected a direction"),
    ("monotonic(increasing, acc(a))", "column 29: expected ',' and another item, got ')'"),
    ("monotonic(increasing)", "expected ',' and at least two items"),
    ("asr > 1", "column 5: expected '(' after a measure name"),
    ("1e999 > 1", "out of range"),
])
def test_errors(text, message):
    with pytest.raises(ExprError) as info:
        parse_check(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_a_string():
    with pytest.raises(ExprError):
        parse_check(3)


# ------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------
def test_evaluate_with_values():
    node = parse_expr("0.35 * size_mb(m) - acc(m) / 2")
    assert evaluate(node, {Measure("size_mb", "m"): 10.0, Measure("acc", "m"): 0.5}) == pytest.approx(3.25)


def test_evaluate_errors():
    with pytest.raises(ExprError, match="division by zero"):
        evaluate(parse_expr("1 / (acc(m) - 0.5)"), {Measure("acc", "m"): 0.5})
    with pytest.raises(ExprError, match="no value for acc"):
        evaluate(parse_expr("acc(m)"), {})
    with pytest.raises(ExprError, match="only arithmetic"):
        evaluate(parse_check("1 < 2"), {})


def test_compare():
    assert compare(1, "<", 2) and compare(2, "<=", 2) and compare(3, ">", 2) and compare(2, ">=", 2)
    assert compare(2, "==", 2) and compare(1, "!=", 2) and not compare(2, "!=", 2)
    with pytest.raises(ExprError):
        compare(1, "~", 2)


# ------------------------------------------------------------------------------------------
# property tests: random ASTs round-trip through text; garbage never crashes the parser
# ------------------------------------------------------------------------------------------
idents = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s != "any")
models = st.from_regex(r"[a-z][a-z0-9_]{0,8}(:[a-z0-9.]{1,6}){0,2}", fullmatch=True)
attack_refs = st.one_of(
    idents.map(lambda n: AttackRef((n,))),
    st.lists(idents, min_size=1, max_size=3).map(lambda ns: AttackRef(tuple(ns), any=True)),
)
measure_st = st.one_of(
    st.builds(lambda m, a: Measure("asr", m, attack=a), models, attack_refs),
    st.builds(lambda s, m, a: Measure("transfer", m, s, a), models, models, attack_refs),
    st.builds(Measure, st.sampled_from(["acc", "size_mb", "gflops", "throughput", "params"]), models),
)
numbers = st.floats(min_value=0, max_value=1e20, allow_nan=False, allow_infinity=False).map(Number)
arith = st.recursive(
    st.one_of(numbers, measure_st),
    lambda inner: st.one_of(
        st.builds(BinOp, st.sampled_from("+-*/"), inner, inner),
        st.builds(Neg, inner),
    ),
    max_leaves=8,
)
checks = st.one_of(
    st.integers(1, 3).flatmap(lambda k: st.builds(
        Chain, st.lists(arith, min_size=k + 1, max_size=k + 1).map(tuple),
        st.lists(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), min_size=k, max_size=k).map(tuple))),
    st.builds(Monotonic, st.sampled_from(["increasing", "decreasing", "nonincreasing", "nondecreasing"]),
              st.lists(arith, min_size=2, max_size=4).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(checks)
def test_unparse_round_trips(node):
    text = unparse(node)
    assert parse_check(text) == node
    assert unparse(parse_check(text)) == text


@settings(max_examples=200, deadline=None)
@given(arith, st.data())
def test_evaluate_matches_python_arithmetic(node, data):
    values = {m: data.draw(st.floats(0.5, 2.0)) for m in measures(node)}

    def ref(n):
        if isinstance(n, Number):
            return n.value
        if isinstance(n, Measure):
            return values[n]
        if isinstance(n, Neg):
            return -ref(n.operand)
        a, b = ref(n.left), ref(n.right)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[n.op]()

    node = parse_expr(unparse(node))
    try:
        expected = ref(node)
    except ZeroDivisionError:
        with pytest.raises(ExprError, match="division by zero"):
            evaluate(node, values)
        return
    got = evaluate(node, values)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="asrctfnyom_(),->+*/<=!.0123456789 []{}:e", max_size=40))
def test_garbage_raises_only_expr_error(text):
    try:
        node = parse_check(text)
    except ExprError as e:
        assert "\n" not in str(e) and str(e).startswith("column ")
    else:
        assert parse_check(unparse(node)) == node
