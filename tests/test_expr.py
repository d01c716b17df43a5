"""The check language: parsing, canonical text, evaluation, errors (unit + property tests)."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from vitrobust import measures as registry
from vitrobust.errors import VitrobustError
from vitrobust.expr import (
    AttackRef, BinOp, Chain, ExprError, Measure, Monotonic, Neg, Number, compare, evaluate, links,
    measures, parse_check, unparse,
)
from vitrobust.names import ModelName

SP = AttackRef(("sp",))


def side(text: str):
    """The arithmetic node of ``text``, parsed as the left side of a check."""
    return parse_check(f"{text} > 0").operands[0]


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
    assert side("8/255") == BinOp("/", Number(8), Number(255))
    assert side("1e-3") == Number(0.001)
    assert side(".5") == Number(0.5)
    assert evaluate(side("8/255"), {}) == pytest.approx(8 / 255)


def test_unary_minus_and_parentheses():
    assert side("-(1 - 2) * 3") == BinOp("*", Neg(BinOp("-", Number(1), Number(2))), Number(3))
    assert evaluate(side("--2"), {}) == 2


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
    with pytest.raises(ExprError, match="attack must be an AttackRef"):
        Measure("asr", "m", attack="sp")


# ------------------------------------------------------------------------------------------
# measures come from the registry
# ------------------------------------------------------------------------------------------
@pytest.fixture
def register():
    """Register throwaway measures for one test; they are removed from the registry after."""
    added = []

    def add(name, **kw):
        assert not registry.is_measure(name), "the fixture would remove a real measure"

        def fn(ctx, m):
            return 0.0
        fn.__name__ = name
        registry.register_measure(**kw)(fn)
        added.append(name)

    yield add
    for name in added:
        registry._MEASURES.pop(name, None)
    assert not set(added) & set(registry.list_measures())


def test_robust_acc_parses_from_the_registry():
    node = parse_check("robust_acc(deit_tiny:int8, pgd) < robust_acc(deit_tiny, pgd)")
    m = node.operands[0]
    assert m == Measure("robust_acc", "deit_tiny:int8", attack=AttackRef(("pgd",)))
    assert m.key == "robust_acc(deit_tiny:int8, pgd)" and m.is_rate
    assert m.definition is registry.measure_kind("robust_acc")
    assert parse_check(unparse(node)) == node


@pytest.mark.parametrize("args, text, key", [
    ("model", "latency_ms(deit_tiny:int8) < 5", "latency_ms(deit_tiny:int8)"),
    ("model, attack", "latency_ms(m, any[pgd, fgsm]) < 5", "latency_ms(m, any[fgsm, pgd])"),
    ("source -> model, attack", "latency_ms(a -> b:int8, pgd) < 5", "latency_ms(a -> b:int8, pgd)"),
])
def test_a_newly_registered_measure_parses_without_parser_edits(register, args, text, key):
    with pytest.raises(ExprError, match="unknown measure 'latency_ms'"):
        parse_check(text)
    register("latency_ms", args=args)
    node = parse_check(text)
    [m] = measures(node)
    assert m.kind == "latency_ms" and m.key == key and not m.is_rate
    assert (m.source is not None) == args.startswith("source")
    assert parse_check(unparse(node)) == node


def test_is_rate_reads_the_registry(register):
    register("hit_rate", args="model", rate=True)
    register("energy", args="model")
    assert Measure("hit_rate", "m").is_rate and not Measure("energy", "m").is_rate


def test_a_registered_measure_is_validated_by_its_signature(register):
    register("drift", args="model, attack")
    with pytest.raises(ExprError, match=r"drift\(model, attack\) needs attack"):
        Measure("drift", "m")
    with pytest.raises(ExprError, match=r"drift\(model, attack\) takes no source model"):
        Measure("drift", "m", "s", SP)
    with pytest.raises(ExprError, match=r"column 8: expected ',' after model name, got '\)'"):
        parse_check("drift(m) > 0")


def test_unknown_measure_lists_the_registry(register):
    register("energy", args="model")
    message = str(pytest.raises(ExprError, parse_check, "asrr(a, x) > 1").value)
    for name in registry.list_measures():
        assert name in message
    assert "robust_acc" in message and "energy" in message and "did you mean 'asr'?" in message
    with pytest.raises(ExprError, match="robust_acc"):
        Measure("latency", "m")


def test_keys_of_the_existing_measures_are_unchanged():
    # check ids, report keys and the run database are keyed by this text
    pgd = AttackRef(("pgd",))
    assert Measure("asr", "deit_tiny:int8", attack=pgd).key == "asr(deit_tiny:int8, pgd)"
    assert Measure("transfer", "b", "a", pgd).key == "transfer(a -> b, pgd)"
    assert Measure("acc", "m").key == "acc(m)"
    for kind in ("size_mb", "gflops", "throughput", "params"):
        assert Measure(kind, "deit_small:prune0.7").key == f"{kind}(deit_small:prune0.7)"


def test_model_names_are_model_names():
    m = Measure("transfer", "deit_tiny:int8", "deit_tiny", SP)
    assert type(m.model) is ModelName and type(m.source) is ModelName
    assert m.model.base == "deit_tiny" and m.model.suffixes == ("int8",)
    # still equal to and hashed like the plain-text measure: dict keys keep working
    plain = Measure("transfer", str(m.model), str(m.source), SP)
    assert m == plain and hash(m) == hash(plain) and {m: 1}[plain] == 1
    [parsed] = measures(parse_check("acc(deit_small:prune0.7) > 0"))
    assert type(parsed.model) is ModelName and parsed.model.suffixes == ("prune0.7",)


@pytest.mark.parametrize("text, column", [
    ("acc(deit_tiny:) > 0", 5),
    ("acc(deit_tiny::int8) > 0", 5),
    ("asr(deit_tiny:0.7, x) > 0", 5),
    ("transfer(a -> b:, x) > 0", 15),
])
def test_a_bad_model_name_is_an_expr_error(text, column):
    with pytest.raises(ExprError) as info:
        parse_check(text)
    assert str(info.value).startswith(f"column {column}: bad model name")
    with pytest.raises(ExprError, match="bad model name"):
        Measure("acc", "deit_tiny:")
    with pytest.raises(ExprError, match="a model name must be a string"):
        Measure("acc", 3)


def test_measures_pickle_as_themselves():
    # the engine may hand measures to worker processes
    import pickle
    m = Measure("transfer", "deit_tiny:int8", "deit_tiny", AttackRef(("pgd", "sp"), any=True))
    back = pickle.loads(pickle.dumps(m))
    assert back == m and hash(back) == hash(m) and back.key == m.key
    assert type(back.model) is ModelName and back.model.suffixes == ("int8",)


def test_errors_are_vitrobust_errors():
    assert issubclass(ExprError, VitrobustError)


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
    node = side("0.35 * size_mb(m) - acc(m) / 2")
    assert evaluate(node, {Measure("size_mb", "m"): 10.0, Measure("acc", "m"): 0.5}) == pytest.approx(3.25)


def test_evaluate_errors():
    with pytest.raises(ExprError, match="division by zero"):
        evaluate(side("1 / (acc(m) - 0.5)"), {Measure("acc", "m"): 0.5})
    with pytest.raises(ExprError, match="no value for acc"):
        evaluate(side("acc(m)"), {})
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
# a base plus up to two suffixes, each a valid ModelName part the tokenizer reads as one word
models = st.from_regex(r"[a-z][a-z0-9_]{0,8}(:[a-z_][a-z0-9_.]{0,5}){0,2}", fullmatch=True)
attack_refs = st.one_of(
    idents.map(lambda n: AttackRef((n,))),
    st.lists(idents, min_size=1, max_size=3).map(lambda ns: AttackRef(tuple(ns), any=True)),
)


def _measure_of(kind: str):
    """Random measures of one registered kind, with the arguments the registry declares."""
    info = registry.measure_kind(kind)
    if info.takes_source:
        return st.builds(lambda s, m, a: Measure(kind, m, s, a), models, models, attack_refs)
    if info.takes_attack:
        return st.builds(lambda m, a: Measure(kind, m, attack=a), models, attack_refs)
    return models.map(lambda m: Measure(kind, m))


measure_st = st.one_of([_measure_of(kind) for kind in registry.list_measures()])
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

    node = side(unparse(node))
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
