"""Spec fuzzing: a spec comes from a pull request, so any text at all must either load as a valid
spec or be refused with one line naming the file, a :class:`~vitrobust.errors.VitrobustError`;
never another exception, a hang or unbounded memory (issue 14).

Three generators feed the loader the plugin runs at collection (``load_spec_file`` with the real
model-name and attack-parameter checks; no model is built):

- YAML text built from pieces: flow and block collections, spec keys and look-alikes of them,
  duplicate keys, anchors and aliases (undefined, recursive, and "billion laughs" alias bombs),
  tags (``!!python/...``, ``!!binary``, ``!!set``), nesting thousands of levels deep, huge and
  odd numbers, unicode look-alike digits and letters;
- a valid spec with one value anywhere replaced by an arbitrary value (past the early checks);
- check strings from the check grammar and from noise, parsed alone and inside a spec.

Each runs :data:`EXAMPLES` examples (500 by default: about 1,500 per run in CI);
``VITROBUST_FUZZ_EXAMPLES=N`` changes that, and ``VITROBUST_SLOW=1`` runs the ``slow``-marked
variants with 20 times as many. Every example runs under a CPU-time alarm and a cap on the memory one
load may add (RLIMIT_AS).

The deterministic tests at the end pin each guard the fuzzing relies on: duplicate keys, unsafe
ids, the work bounds (and that they are configurable), alias bombs and nesting.
"""
import json
import os
import resource
import signal
import string
import time
from contextlib import contextmanager

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitrobust.attacks import validate_attack
from vitrobust.collect import _known_model
from vitrobust.errors import VitrobustError
from vitrobust.exprparse import parse_check
from vitrobust.exprtree import Chain, ExprError, Monotonic
from vitrobust.spec import SPEC_KEYS, CHECK_KEYS, DATA_KEYS, load_spec_file, load_specs
from vitrobust.spec_bounds import DEFAULTS
from vitrobust.yamllines import MAX_NODES

EXAMPLES = int(os.environ.get("VITROBUST_FUZZ_EXAMPLES", "500"))
SLOW = bool(os.environ.get("VITROBUST_SLOW"))
SECONDS_PER_EXAMPLE = 10       # CPU seconds; far above the slowest example seen (~0.1 s)
MEMORY_PER_EXAMPLE_MB = 200    # address space one load may add (the largest legal spec needs a few MB)


def _settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def slow(test):
    """The long run: marked ``slow`` and skipped unless ``VITROBUST_SLOW=1``."""
    skip = pytest.mark.skipif(not SLOW, reason="the long fuzzing run: set VITROBUST_SLOW=1")
    return pytest.mark.slow(skip(test))


# ------------------------------------------------------------------------------------------------
# the property
# ------------------------------------------------------------------------------------------------
class Hang(Exception):
    pass


def _address_space() -> int:
    """Bytes of virtual memory this process maps now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@contextmanager
def _bounded():
    """Run one load with at most :data:`SECONDS_PER_EXAMPLE` of CPU time (a profiling timer
    interrupts it: CPU time, so a starved, niced run on a busy machine does not trip it) and at
    most :data:`MEMORY_PER_EXAMPLE_MB` more address space (RLIMIT_AS, lowered for the load and
    restored after: an allocation past it is a MemoryError, which fails the property). Two
    system calls per example, where tracing allocations would double the run."""
    def ring(signum, frame):
        raise Hang(f"no answer within {SECONDS_PER_EXAMPLE} s of CPU time")
    previous = signal.signal(signal.SIGPROF, ring)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + MEMORY_PER_EXAMPLE_MB * 2 ** 20
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_PROF, SECONDS_PER_EXAMPLE)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _known(name) -> bool:
    return _known_model(name, set())


def loads_or_refuses(path, text) -> None:
    """The property: ``text`` in ``path`` loads as valid specs or is one refusing line."""
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode, **({} if isinstance(text, bytes) else {"encoding": "utf-8", "errors": "surrogatepass"})) as f:
        f.write(text)
    with _bounded():
        try:
            specs = load_spec_file(path, known_models=_known, check_attack=validate_attack)
        except VitrobustError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message
            assert "\n" not in message and len(message) <= 1000, message
            return
    assert specs
    for spec in specs:
        assert spec.checks and len(spec.checks) <= DEFAULTS["matrix"]
        assert spec.id and "/" not in spec.id and len(spec.id) <= 64


# ------------------------------------------------------------------------------------------------
# generator 1: YAML text from pieces
# ------------------------------------------------------------------------------------------------
LOOKALIKES = ["іd", "аbout", "сhecks", "ｉｄ", "id\u200b", "check\u00a0", "ａｓｒ", "deit_tіny", "٨/٢٥٥",
              "８/２５５", "０.９５", "tiny\u202e", "pgd\u0301"]
KEYS = list(SPEC_KEYS + DATA_KEYS + CHECK_KEYS) + [
    "name", "eps", "steps", "n_queries", "directions", "restarts", "norm", "strategy", "early_stop",
    "size", "keep", "pgd", "fgsm", "sp", "<<", "'id'", '"checks"', "1", "null", "~", "true"] + LOOKALIKES
SCALARS = [
    "0", "-1", "1", "10", "450", "0.95", "1e999", "-.inf", ".nan", "1e-400", "99999999999999999999999",
    "0x7fffffffffffffff", "0b" + "1" * 80, "1:2:3", "190:20:30.15", "2001-13-45", "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "~", "null", "yes", "no", "true", "''", '""', "8/255", "2/255", "4/0",
    "pgd", "fgsm", "square", "salt_and_pepper", "linf", "l2", "straight-through", "transfer:deit_tiny",
    "transfer:../../x", "deit_tiny", "deit_small:int8", "deit_tiny:prune0.7", "deit_tiny@s1", "tiny", "small",
    "test", "val", "train", "fail", "skip", "xfail", "quantization", "../../etc/passwd", "a b", "-rf",
    "'asr(deit_tiny, pgd) > 0'", "'asr(deit_{size}, pgd) > asr(deit_{size}:int8, pgd)'",
    "'monotonic(decreasing, acc(deit_tiny), acc(deit_small))'", "'{size}'", "'<script>alert(1)</script>'",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!str 12", "!!int '7'", "!!float '1e3'", "!!null ''",
    "!!omap [a: 1, b: 2]", "!!python/object/apply:os.system ['touch pwned']", "!!python/name:os.system",
    "!<tag:yaml.org,2002:python/tuple> [1]", "!custom x", "*a", "*b", "*undefined", "|\n  block\n",
] + LOOKALIKES

# JSON-escaped (\\uXXXX), so YAML reads any character, controls included, not only printable ones
quoted_text = st.text(max_size=30).map(json.dumps)
scalar = st.one_of(st.sampled_from(SCALARS), quoted_text, st.integers().map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
anchor = st.sampled_from(["&a", "&b", "&c"])


def _flow(children):
    pair = st.tuples(st.sampled_from(KEYS), children).map(lambda kv: f"{kv[0]}: {kv[1]}")
    return st.one_of(
        st.lists(children, max_size=6).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(pair, max_size=6).map(lambda xs: "{" + ", ".join(xs) + "}"),
        st.tuples(anchor, children).map(" ".join),
        st.tuples(st.sampled_from(["!!seq", "!!map", "!!set", "!!python/tuple", "!!str"]), children).map(" ".join))


node = st.recursive(scalar, _flow, max_leaves=30)


@st.composite
def alias_bomb(draw):
    width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 9))
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    key = draw(st.sampled_from(["about", "checks", "attacks", "matrix", "data", "id"]))
    return "\n".join(lines) + f"\n{key}: *l{depth - 1}\n"


@st.composite
def deep_nesting(draw):
    n = draw(st.integers(1, 5000))
    opener, closer, inner = draw(st.sampled_from([("[", "]", "1"), ("{a: ", "}", "1"), ("- ", "", "x")]))
    if opener == "- ":   # block sequences, one more indent per level (so fewer of them: n^2 bytes)
        body = "\n".join(" " * (2 * i) + "-" for i in range(n % 200)) + " x"
        return f"checks:\n{body}\n"
    return f"{draw(st.sampled_from(KEYS))}: {opener * n}{inner}{closer * n}\n"


block_doc = st.lists(st.tuples(st.sampled_from(KEYS), node), max_size=9).map(
    lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs))
yaml_text = st.one_of(
    block_doc, node, alias_bomb(), deep_nesting(),
    st.tuples(block_doc, block_doc).map(lambda d: d[0] + "---\n" + d[1]),
    st.text(max_size=200), st.binary(max_size=200))


def _fuzz_yaml_text(tmp_path, examples: int):
    @_settings(examples)
    @given(text=yaml_text)
    def run(text):
        loads_or_refuses(tmp_path / "spec.yaml", text)
    run()


# ------------------------------------------------------------------------------------------------
# generator 2: a valid spec with one value replaced
# ------------------------------------------------------------------------------------------------
VALID = {
    "id": "fuzz",
    "about": "a valid spec the fuzzer mutates",
    "data": {"split": "test", "limit": 16, "fit_split": "val"},
    "attacks": {"pgd": {"name": "pgd", "eps": "2/255", "steps": 10},
                "sq": {"name": "square", "eps": "2/255", "n_queries": 50},
                "fgsm": "fgsm"},
    "matrix": {"size": ["tiny", "small"]},
    "confidence": 0.95,
    "inconclusive": "fail",
    "checks": [
        "asr(deit_{size}:int8, pgd) > asr(deit_{size}, pgd)",
        {"check": "size_mb(deit_{size}:int8) < 0.35 * size_mb(deit_{size})", "claim": "INT8 shrinks {size}",
         "xfail": "why", "inconclusive": "skip", "only": {"size": ["tiny"]}},
        "monotonic(decreasing, asr(deit_tiny, any[pgd, sq]), asr(deit_small, fgsm))",
    ],
}

value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=40),
              st.sampled_from(SCALARS + KEYS)),
    lambda c: st.one_of(st.lists(c, max_size=5), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)),
                                                                 c, max_size=5)),
    max_leaves=20)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(VALID) if p]
# values a spec could well hold, so mutated specs also get past the first checks and load
PLAUSIBLE = [None, True, False, 0, 1, 10, 100, 10_000, 0.5, 0.9, "2/255", "8/255", "linf", "l2", "pgd", "square",
             "fgsm", "deepfool", "tiny", "small", "base", ["tiny"], ["tiny", "small"], [0.7, 0.5], "test", "val",
             "train", "skip", "xfail", "fail", "straight-through", "transfer", "transfer:deit_small",
             "asr(deit_{size}, pgd) > 0", "acc(deit_tiny) >= 0.5", "a claim about {size}", {"size": ["small"]},
             {"name": "fgm", "eps": 0.5}, "q", "quantization-2"]


new_value = st.one_of(st.sampled_from(PLAUSIBLE), value)


@st.composite
def mutated_spec(draw):
    import copy

    spec = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(PATHS))
        parent = spec
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent[draw(st.sampled_from(KEYS))] = draw(new_value)      # a new (maybe unknown) key
            elif draw(st.integers(0, 9)) == 0:
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(new_value)
        except (KeyError, IndexError, TypeError):
            pass          # an earlier mutation removed the path
    return yaml.safe_dump(spec, allow_unicode=draw(st.booleans()), sort_keys=False)


def _fuzz_mutated(tmp_path, examples: int):
    @_settings(examples)
    @given(text=mutated_spec())
    def run(text):
        loads_or_refuses(tmp_path / "spec.yaml", text)
    run()


# ------------------------------------------------------------------------------------------------
# generator 3: check strings
# ------------------------------------------------------------------------------------------------
ATOMS = ["asr(deit_tiny, pgd)", "asr(deit_tiny:int8, pgd)", "transfer(deit_tiny -> deit_small, pgd)",
         "acc(deit_tiny)", "size_mb(deit_tiny)", "asr(deit_tiny, any[pgd, fgsm])", "robust_acc(deit_small, fgsm)",
         "keep_ratio(deit_small:prune0.7)", "gflops(deit_tiny@s1)", "0.35", "1e999", "9" * 400, ".5", "1e-400",
         "٣", "３", "ａｓｒ(deit_tiny, pgd)", "asr(deit_tіny, pgd)", "asr(deit_tiny, pgd\u00a0)", "asr(nope, pgd)",
         "asr(deit_tiny, nope)", "asr(deit_tiny)", "transfer(deit_tiny, pgd)", "asr(deit_tiny::x, pgd)", "{size}",
         "asr(deit_tiny, any[])", "any[pgd]", "monotonic", "eval('1')", "__import__('os')"]
OPS = ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "->", ",", ""]
expr = st.recursive(
    st.sampled_from(ATOMS),
    lambda c: st.one_of(st.tuples(c, st.sampled_from(OPS[:4]), c).map(" ".join), c.map(lambda x: f"({x})"),
                        c.map(lambda x: f"-{x}")),
    max_leaves=12)


@st.composite
def long_check(draw):
    n = draw(st.integers(1, 3000))
    return draw(st.sampled_from([
        "(" * n + "1" + ")" * n + " > 0", "-" * n + "1 > 0", " + ".join(["1"] * n) + " > 0",
        " < ".join(["acc(deit_tiny)"] * n), "monotonic(increasing, " + ", ".join(["1"] * n) + ")",
        "(" * n + " > 0"]))


check_text = st.one_of(
    st.tuples(expr, st.sampled_from(OPS), expr).map(" ".join),
    st.tuples(expr, st.sampled_from(OPS[4:10]), expr, st.sampled_from(OPS[4:10]), expr).map(" ".join),
    st.lists(expr, min_size=1, max_size=5).map(
        lambda xs: "monotonic(" + ", ".join(["decreasing"] + xs) + ")"),
    long_check(),
    st.text(alphabet=string.printable + "αβ٣３ｓ\u00a0\u200b\u202e", max_size=80),
    st.text(max_size=80),
)

CHECK_SPEC = """\
id: checks
about: one fuzzed check
attacks: {{pgd: {{name: pgd, eps: 2/255}}, fgsm: fgsm}}
checks:
  - {check}
"""


def parses_or_refuses(text: str) -> None:
    with _bounded():
        try:
            node = parse_check(text)
        except ExprError as exc:
            assert "\n" not in str(exc), str(exc)
            return
    assert isinstance(node, (Chain, Monotonic))


def _fuzz_checks(tmp_path, examples: int):
    @_settings(examples)
    @given(text=check_text)
    def run(text):
        parses_or_refuses(text)
        loads_or_refuses(tmp_path / "spec.yaml", CHECK_SPEC.format(check=json.dumps(text)))
    run()


# ------------------------------------------------------------------------------------------------
# the fuzzing runs: default size, and the slow ones
# ------------------------------------------------------------------------------------------------
def test_fuzzed_yaml_loads_or_is_refused_in_one_line(tmp_path):
    _fuzz_yaml_text(tmp_path, EXAMPLES)


def test_fuzzed_specs_load_or_are_refused_in_one_line(tmp_path):
    _fuzz_mutated(tmp_path, EXAMPLES)


def test_fuzzed_checks_parse_or_are_refused_in_one_line(tmp_path):
    _fuzz_checks(tmp_path, EXAMPLES)


@pytest.mark.parametrize("run", [_fuzz_yaml_text, _fuzz_mutated, _fuzz_checks], ids=["yaml", "mutated", "checks"])
@slow
def test_fuzzing_at_length(run, tmp_path):
    run(tmp_path, 20 * EXAMPLES)


# ------------------------------------------------------------------------------------------------
# the guards, one by one
# ------------------------------------------------------------------------------------------------
GOOD = """\
id: good
about: a spec
attacks:
  pgd: {name: pgd, eps: 2/255, steps: 10}
matrix: {size: [tiny, small]}
checks:
  - asr(deit_{size}, pgd) > 0
"""


def _load(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return load_spec_file(path, known_models=_known, check_attack=validate_attack)


def _refusal(tmp_path, text) -> str:
    with pytest.raises(VitrobustError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "spec.yaml")) and "\n" not in message
    return message


def test_the_harness_catches_a_loader_that_raises_something_else(tmp_path, monkeypatch):
    """The property fails on any exception that is not a VitrobustError (so fuzzing can fail)."""
    monkeypatch.setattr("vitrobust.spec._parse_spec", lambda *a, **k: {}["boom"])
    with pytest.raises(KeyError):
        loads_or_refuses(tmp_path / "spec.yaml", GOOD)


def test_the_harness_catches_a_load_that_takes_much_memory(tmp_path, monkeypatch):
    def greedy(*args, **kwargs):
        hog = b"x" * (300 << 20)
        raise VitrobustError(f"{tmp_path / 'spec.yaml'}: refused after holding {len(hog)} bytes")

    monkeypatch.setattr("vitrobust.spec._parse_spec", greedy)
    with pytest.raises(MemoryError):
        loads_or_refuses(tmp_path / "spec.yaml", GOOD)


def test_the_harness_catches_a_hang(tmp_path, monkeypatch):
    def spin(*args, **kwargs):
        while True:
            pass

    monkeypatch.setattr("vitrobust.spec._parse_spec", spin)
    monkeypatch.setattr(f"{__name__}.SECONDS_PER_EXAMPLE", 1)
    with pytest.raises(Hang):
        loads_or_refuses(tmp_path / "spec.yaml", GOOD)


@pytest.mark.parametrize("text, words", [
    (GOOD + "about: twice\n", ("spec.yaml:8", "duplicate key 'about' (also on line 2)")),
    (GOOD.replace("steps: 10}", "steps: 10, steps: 20}"), ("spec.yaml:4", "duplicate key 'steps'")),
    (GOOD.replace("[tiny, small]}", "[tiny, small], size: [base]}"), ("spec.yaml:5", "duplicate key 'size'")),
])
def test_duplicate_keys_are_an_error_not_last_one_wins(tmp_path, text, words):
    message = _refusal(tmp_path, text)
    assert all(w in message for w in words), message


def test_a_key_overriding_a_merged_one_is_not_a_duplicate(tmp_path):
    text = GOOD.replace("pgd: {name: pgd, eps: 2/255, steps: 10}", "pgd: {<<: {name: pgd, eps: 2/255, steps: 10}, steps: 5}")
    assert _load(tmp_path, text)[0].attacks["pgd"]["steps"] == 5


@pytest.mark.parametrize("spec_id", ["../x", "a/b", "a\\\\b", "a.b", "a b", "-rf", "_x", "a[0]", "a::b", "é",
                                     "ｉｄ", "a" * 65, "a\\u0000b", "a\\nb", ""])
def test_an_id_unsafe_in_file_names_or_test_ids_is_refused(tmp_path, spec_id):
    text = GOOD.replace("id: good", f'id: "{spec_id}"')
    assert "id: must match [a-z0-9][a-z0-9_-]*" in _refusal(tmp_path, text)


def test_the_longest_safe_id_loads(tmp_path):
    assert _load(tmp_path, GOOD.replace("id: good", "id: " + "a" * 64))[0].id == "a" * 64


@pytest.mark.parametrize("old, new, bound, key", [
    ("steps: 10}", "steps: 10001}", "steps=10,000", "attacks.pgd.steps"),
    ("{name: pgd, eps: 2/255, steps: 10}", "{name: square, eps: 2/255, n_queries: 100001}", "queries=100,000",
     "attacks.pgd.n_queries"),
    ("{name: pgd, eps: 2/255, steps: 10}", "{name: blended_noise, directions: 1e9}", "queries=100,000",
     "attacks.pgd.directions"),
    ("{name: pgd, eps: 2/255, steps: 10}", "{name: pgd, eps: 2/255, restarts: 101}", "restarts=100",
     "attacks.pgd.restarts"),
    ("{name: pgd, eps: 2/255, steps: 10}", "{name: uap_pgd, eps: 2/255, epochs: 20000}", "steps=10,000",
     "attacks.pgd.epochs"),
    ("[tiny, small]}", "[" + ", ".join(f"m{i}" for i in range(1001)) + "]}", "matrix=1,000", "checks[0]"),
    ("matrix: {size: [tiny, small]}", "data: {limit: 100001}\nmatrix: {size: [tiny, small]}", "images=100,000",
     "data.limit"),
    ("matrix: {size: [tiny, small]}", "data: {fit_limit: 200000}\nmatrix: {size: [tiny, small]}",
     "images=100,000", "data.fit_limit"),
])
def test_work_is_bounded_at_collection_and_the_bound_is_named(tmp_path, monkeypatch, old, new, bound, key):
    monkeypatch.delenv("VITROBUST_SPEC_BOUNDS", raising=False)
    text = GOOD.replace(old, new)
    message = _refusal(tmp_path, text)
    assert key in message and f"bound {bound}" in message and "VITROBUST_SPEC_BOUNDS" in message, message
    # configurable: raising that bound lets the very same spec load (or fail on something else)
    name = bound.split("=")[0]
    monkeypatch.setenv("VITROBUST_SPEC_BOUNDS", f"{name}=10000000000")
    try:
        _load(tmp_path, text)
    except VitrobustError as exc:
        assert "VITROBUST_SPEC_BOUNDS" not in str(exc), str(exc)


def test_a_lowered_bound_refuses_what_the_default_allows(tmp_path, monkeypatch):
    assert _load(tmp_path, GOOD)
    monkeypatch.setenv("VITROBUST_SPEC_BOUNDS", "steps=5, matrix=100")
    assert "bound steps=5" in _refusal(tmp_path, GOOD)


@pytest.mark.parametrize("setting", ["steps", "steps=0", "steps=-1", "nope=3", "steps=1e3", "steps=٣"])
def test_a_malformed_bounds_variable_is_a_one_line_error(tmp_path, monkeypatch, setting):
    monkeypatch.setenv("VITROBUST_SPEC_BOUNDS", setting)
    with pytest.raises(VitrobustError, match=r"^\$VITROBUST_SPEC_BOUNDS: expected name=N"):
        _load(tmp_path, GOOD)


def test_every_shipped_spec_loads_within_the_default_bounds(monkeypatch):
    from pathlib import Path

    monkeypatch.delenv("VITROBUST_SPEC_BOUNDS", raising=False)
    specs = load_specs(Path(__file__).resolve().parents[1] / "specs", known_models=_known,
                       check_attack=validate_attack)
    assert len(specs) == 5 and sum(len(s.checks) for s in specs) > 60


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    # nine anchors of nine aliases each, as attack parameters: 9^9 = 387M leaves, which the
    # loader's number conversion walked one by one (it hung before the node bound)
    params = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    params += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    started = time.process_time()   # CPU time: a busy machine does not make it flaky
    message = _refusal(tmp_path, GOOD.replace("steps: 10}", "steps: 10, " + ", ".join(params) + "}"))
    assert f"more than {MAX_NODES:,} nodes once aliases are expanded" in message
    assert time.process_time() - started < 5


def test_aliases_within_the_bound_still_work(tmp_path):
    text = GOOD.replace("matrix: {size: [tiny, small]}", "matrix: {size: &sizes [tiny, small]}")
    text = text.replace("  - asr(deit_{size}, pgd) > 0", "  - check: asr(deit_{size}, pgd) > 0\n    only: {size: *sizes}")
    assert [c.params for c in _load(tmp_path, text)[0].checks] == [{"size": "tiny"}, {"size": "small"}]


@pytest.mark.parametrize("text", ["id: &a [*a]\n", "about: &a {x: *a}\n"])
def test_a_recursive_alias_is_refused(tmp_path, text):
    assert "refers to a node that contains it" in _refusal(tmp_path, text)


@pytest.mark.parametrize("text", ["checks: " + "[" * 100_000 + "]" * 100_000 + "\n",
                                  "checks: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, text):
    assert "nested more than 32 levels deep" in _refusal(tmp_path, text)


@pytest.mark.parametrize("check, words", [
    ("(" * 300 + "1" + ")" * 300 + " > 0", "at most 256 tokens"),
    ("(" * 5000 + "1" + ")" * 5000 + " > 0", "at most 1000 characters"),
    ("(" * 20 + "1" + ")" * 20 + " > 0", "nested more than 16 levels deep"),
    ("-" * 20 + "1 > 0", "nested more than 16 levels deep"),
    (" + ".join(["1"] * 200) + " > 0", "at most 256 tokens"),
    ("asr(deit_" + "t" * 1000 + ", pgd) > 0", "at most 1000 characters"),
    ("asr(deit_tiny, pgd) > ٣", "unexpected character '٣'"),
    ("asr(deit_tiny, pgd) >\u00a03", "unexpected character '\\xa0'"),
    ("asr(deit_tіny, pgd) > 0", "unexpected character 'і'"),
])
def test_hostile_checks_are_one_line_errors(check, words):
    with pytest.raises(ExprError) as info:
        parse_check(check)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_names_that_reach_test_ids_are_at_most_64_characters(tmp_path):
    alias = "p" * 64
    ok = GOOD.replace("  pgd: {", f"  {alias}: {{").replace("deit_{size}, pgd", f"deit_{{size}}, {alias}")
    assert _load(tmp_path, ok)
    assert "attacks: bad alias" in _refusal(tmp_path, ok.replace(alias, alias + "p"))
    key = "k" * 64
    ok = GOOD.replace("{size:", "{" + key + ":").replace("{size}", "{" + key + "}")
    assert _load(tmp_path, ok)
    assert "matrix: bad key" in _refusal(tmp_path, ok.replace(key, key + "k"))


def test_lookalike_digits_are_not_read_as_numbers_in_attack_parameters(tmp_path):
    message = _refusal(tmp_path, GOOD.replace("eps: 2/255", "eps: ٢/٢٥٥"))
    assert "attacks.pgd" in message


@pytest.mark.parametrize("value, words", [
    ("99999999999999999999999", "out of range (at most 64 bits)"),
    ("0b" + "1" * 80, "out of range"),
    ("1:" * 5000 + "1", "out of range"),
    ("2001-13-45", "month must be in 1..12"),
])
def test_numbers_yaml_cannot_build_are_yaml_errors_with_their_line(tmp_path, value, words):
    message = _refusal(tmp_path, GOOD.replace("steps: 10}", f"steps: {value}}}"))
    assert "spec.yaml:4: YAML error" in message and words in message, message


def test_a_huge_document_is_refused_before_it_is_parsed(tmp_path):
    message = _refusal(tmp_path, GOOD + "# " + "x" * 1_000_001 + "\n")
    assert "larger than the 1,000,000 allowed" in message


def test_an_error_quoting_a_huge_value_stays_short(tmp_path):
    message = _refusal(tmp_path, GOOD + "confidence: [" + ", ".join(["1"] * 5_000) + "]\n")
    assert "confidence" in message and len(message) <= 1000
