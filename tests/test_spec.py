"""Spec loading: expansion, defaults, and one-line errors naming file, line, spec and key."""
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from vitrobust import defaults
from vitrobust.expr import Chain, Measure
from vitrobust.spec import Check, SpecError, load_spec_file, load_specs, parse_number

from spec_helpers import GOOD, load_error, replace, write


# ------------------------------------------------------------------------------------------
# a good spec
# ------------------------------------------------------------------------------------------
def test_good_spec_loads_and_expands(tmp_path):
    [spec] = load_spec_file(write(tmp_path, GOOD))
    assert spec.id == "quantization" and spec.confidence == 0.9 and spec.inconclusive == "fail"
    assert spec.data == {"source": None, "split": "test", "limit": 450, "fit_split": "val", "fit_limit": None}
    assert spec.attacks["pgd"] == {"name": "pgd", "eps": pytest.approx(8 / 255), "steps": 10}
    assert spec.attacks["pgd_on_int8"]["strategy"] == "straight-through"
    assert spec.matrix == {"size": ["tiny", "small", "base"]}
    texts = [c.text for c in spec.checks]
    assert texts[:3] == [f"asr(deit_{s}:int8, sp) > asr(deit_{s}, sp)" for s in ("tiny", "small", "base")]
    # only: restricts the second check to two sizes; the third names no placeholder: one item
    assert len(spec.checks) == 3 + 2 + 1
    c = spec.checks[4]
    assert isinstance(c, Check) and c.params == {"size": "small"} and c.param_id == "size=small"
    assert c.claim == "attacks transfer into INT8 (small)"
    assert c.xfail == "measured: equal on the digits zoo" and c.inconclusive == "skip"
    assert c.template.startswith("transfer(deit_{size}:int8")
    assert c.line == 12
    assert spec.checks[0].line == 11 and spec.checks[-1].line == 17
    assert spec.checks[-1].params == {}
    assert spec.checks[-1].text == "size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)"
    assert isinstance(c.node, Chain)
    assert Measure("transfer", "deit_small", "deit_small:int8", c.node.operands[0].attack) in c.measures
    assert hash(c) == hash(c)


def test_defaults_and_shorthand(tmp_path):
    [spec] = load_spec_file(write(tmp_path, """\
        id: tiny-spec
        about: minimal
        attacks: {fgsm: fgsm}
        checks: ["asr(m, fgsm) >= 0"]
    """))
    assert spec.data == {"source": None, "split": defaults.SPLIT, "limit": defaults.IMAGE_LIMIT,
                         "fit_split": defaults.FIT_SPLIT, "fit_limit": defaults.FIT_LIMIT}
    assert spec.attacks == {"fgsm": {"name": "fgsm"}}
    assert spec.matrix == {} and spec.confidence == 0.95 and spec.inconclusive == "fail"
    assert spec.checks[0].params == {} and spec.checks[0].param_id == ""
    assert spec.checks[0].claim is None and spec.checks[0].xfail is None


def test_list_of_specs_and_numbers(tmp_path):
    specs = load_spec_file(write(tmp_path, """\
        - id: a
          about: first
          attacks: {x: {name: pgd, eps: "1e-3", alpha: 0.5, steps: 3, sizes: [1/2, 4]}}
          checks: ["asr(m, x) > 0"]
        - id: b
          about: second
          matrix: {keep: [0.7, 0.5]}
          attacks: {x: {name: pgd}}
          checks: ["asr(m:prune{keep}, x) > 0"]
    """))
    assert [s.id for s in specs] == ["a", "b"]
    assert specs[0].attacks["x"] == {"name": "pgd", "eps": 0.001, "alpha": 0.5, "steps": 3, "sizes": [0.5, 4]}
    assert [c.text for c in specs[1].checks] == ["asr(m:prune0.7, x) > 0", "asr(m:prune0.5, x) > 0"]
    assert specs[1].checks[0].params == {"keep": 0.7}


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    [spec] = load_spec_file(write(tmp_path, """\
        id: merged
        about: attacks sharing defaults
        attacks:
          pgd: &pgd {name: pgd, eps: 8/255, steps: 10}
          pgd2: {<<: *pgd, eps: 2/255}
        checks: ["asr(m, any[pgd, pgd2]) > asr(m, pgd2)"]
    """))
    assert spec.attacks["pgd2"] == {"name": "pgd", "eps": pytest.approx(2 / 255), "steps": 10}


def test_matrix_cartesian_product_in_declared_order(tmp_path):
    [spec] = load_spec_file(write(tmp_path, """\
        id: grid
        about: two axes
        matrix: {size: [tiny, small], keep: [0.7, 0.5]}
        attacks: {x: {name: pgd}}
        checks: ["asr(deit_{size}:prune{keep}, x) < asr(deit_{size}, x)"]
    """))
    assert [c.param_id for c in spec.checks] == [
        "size=tiny,keep=0.7", "size=tiny,keep=0.5", "size=small,keep=0.7", "size=small,keep=0.5"]


def test_load_specs_directory(tmp_path):
    write(tmp_path, GOOD, "b.yaml")
    write(tmp_path, replace("id: quantization", "id: other"), "a.yml")
    write(tmp_path, "not: a spec", "notes.txt")
    specs = load_specs(tmp_path)
    assert [s.id for s in specs] == ["other", "quantization"]
    assert load_specs([tmp_path / "b.yaml", str(tmp_path / "b.yaml")])[0].id == "quantization"


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
def test_unknown_top_level_key(tmp_path):
    msg = load_error(tmp_path, replace("attacks:", "atacks:"))
    assert msg.endswith("spec.yaml:4: spec 'quantization': unknown key 'atacks' (known: about, attacks, "
                        "checks, confidence, data, id, inconclusive, matrix); did you mean 'attacks'?")


def test_missing_field(tmp_path):
    msg = load_error(tmp_path, """\
        id: q
        about: x
        attacks: {pgd: {name: pgd}}
    """)
    assert msg.endswith("spec.yaml:1: spec 'q': missing field 'checks'")
    msg = load_error(tmp_path, "about: x\nattacks: {pgd: {name: pgd}}\nchecks: ['1 < 2']\n")
    assert "missing field 'id'" in msg


def test_parse_error_names_check_and_column(tmp_path):
    msg = load_error(tmp_path, replace("size_mb(deit_tiny:int8) < 0.35", "size_mb(deit_tiny:int8) < * 0.35"))
    assert msg.endswith("spec.yaml:17: spec 'quantization': checks[2]: column 27: "
                        "expected a number, '(' or a measure such as asr(model, attack), got '*'")


def test_parse_error_in_expanded_check_names_params(tmp_path):
    msg = load_error(tmp_path, replace("asr(deit_{size}:int8, sp) >", "asr(deit_{size}:int8 sp) >"))
    assert ":11: spec 'quantization': checks[0] (size=tiny): column " in msg
    assert "expected ',' after model name, got 'sp'" in msg


def test_unknown_alias(tmp_path):
    msg = load_error(tmp_path, replace("asr(deit_{size}, sp)", "asr(deit_{size}, pgdd)"))
    assert msg.endswith(":11: spec 'quantization': checks[0] (size=tiny): unknown attack alias 'pgdd' "
                        "(declared: pgd, pgd_on_int8, sp)")
    msg = load_error(tmp_path, replace("0.35 * size_mb(deit_tiny)", "asr(m, any[pgd, nope])"))
    assert "checks[2]: unknown attack alias 'nope'" in msg


def test_a_spec_without_limit_gets_the_default_limit(tmp_path):
    # the loader used to store limit None, which the engine read as "the whole split"
    [spec] = load_spec_file(write(tmp_path, replace("data: {split: test, limit: 450}\n", "")))
    assert spec.data["limit"] == defaults.IMAGE_LIMIT and spec.data["limit"] is not None
    [spec] = load_spec_file(write(tmp_path, replace("data: {split: test, limit: 450}", "data: {split: train}")))
    assert spec.data == {"source": None, "split": "train", "limit": defaults.IMAGE_LIMIT,
                         "fit_split": defaults.FIT_SPLIT, "fit_limit": defaults.FIT_LIMIT}
    [spec] = load_spec_file(write(tmp_path, replace("limit: 450", "limit: null, fit_limit: 50, source: mnist")))
    assert spec.data == {"source": "mnist", "split": "test", "limit": None, "fit_split": "val", "fit_limit": 50}


@pytest.mark.parametrize("data, expected", [
    ("{split: test, fit_split: test}", ":3: spec 'quantization': data.fit_split: must differ from data.split "
                                       "(both 'test')"),
    ("{split: val}", ":3: spec 'quantization': data.fit_split: must differ from data.split (both 'val')"),
    ("{fit_split: 3}", ":3: spec 'quantization': data.fit_split: must be a non-empty string"),
    ("{split: null}", ":3: spec 'quantization': data.split: must be a non-empty string"),
    ("{fit_limit: 0}", "data.fit_limit: must be a positive integer"),
    ("{source: ''}", "data.source: must be a non-empty string"),
])
def test_data_errors(tmp_path, data, expected):
    assert expected in load_error(tmp_path, replace("{split: test, limit: 450}", data))


@pytest.mark.parametrize("old, new, expected", [
    ("asr(deit_{size}, sp)", "asr(deit_{size}:, sp)",
     ":11: spec 'quantization': checks[0] (size=tiny): column 31: bad model name 'deit_tiny:'"),
    ("size_mb(deit_tiny:int8) <", "size_mb(deit_tiny:8bit) <",
     ":17: spec 'quantization': checks[2]: column 9: bad model name 'deit_tiny:8bit'"),
])
def test_a_bad_model_name_in_a_check_is_a_spec_error(tmp_path, old, new, expected):
    assert expected in load_error(tmp_path, replace(old, new))


def test_robust_acc_in_a_check(tmp_path):
    [spec] = load_spec_file(write(tmp_path, replace("size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)",
                                                    "robust_acc(deit_tiny:int8, pgd) < robust_acc(deit_tiny, pgd)")))
    assert spec.checks[-1].measures[0].key == "robust_acc(deit_tiny:int8, pgd)"
    msg = load_error(tmp_path, replace("size_mb(deit_tiny:int8) < 0.35", "robust_acc(deit_tiny:int8, pgdd) < 0.35"))
    assert "checks[2]: unknown attack alias 'pgdd'" in msg


def test_unknown_placeholder_in_claim_or_xfail(tmp_path):
    msg = load_error(tmp_path, replace("into INT8 ({size})", "into INT8 ({sise})"))
    assert msg.endswith(":13: spec 'quantization': checks[1].claim: unknown placeholder {sise} "
                        "(this check expands over: size)")
    msg = load_error(tmp_path, replace("  - size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)\n",
                                       "  - check: size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)\n"
                                       "    xfail: not at {size}\n"))
    assert msg.endswith(":18: spec 'quantization': checks[2].xfail: unknown placeholder {size} "
                        "(this check names no placeholder)")


def test_unknown_model(tmp_path):
    msg = load_error(tmp_path, GOOD, known_models=lambda n: n != "deit_small:int8")
    assert msg.endswith(":11: spec 'quantization': checks[0] (size=small): unknown model 'deit_small:int8'")


def test_unknown_placeholder(tmp_path):
    msg = load_error(tmp_path, replace("size_mb(deit_tiny:int8)", "size_mb(deit_{sise}:int8)"))
    assert msg.endswith(":17: spec 'quantization': checks[2]: unknown placeholder {sise} (matrix: size)")


@pytest.mark.parametrize("old, new, expected", [
    ("id: quantization", "id: Quantization!", ":1: id: must match [a-z0-9][a-z0-9_-]*"),
    ("confidence: 0.9", "confidence: 0.3", ":9: spec 'quantization': confidence: must be a number in (0.5, 1)"),
    ("confidence: 0.9", "inconclusive: maybe", "inconclusive: must be one of fail, skip, xfail"),
    ("inconclusive: skip", "inconclusive: never", ":15: spec 'quantization': checks[1].inconclusive: must be one of"),
    ("limit: 450", "limit: -3", ":3: spec 'quantization': data.limit: must be a positive integer"),
    ("split: test", "splt: test", "data: unknown key 'splt'"),
    ("strategy: straight-through", "strategy: magic", "attacks.pgd_on_int8.strategy: unknown strategy 'magic'"),
    ("eps: 8/255", "eps: 8/0", ":6: spec 'quantization': attacks.pgd.eps: division by zero"),
    ("{name: pgd, eps: 8/255, steps: 10}", "{eps: 8/255}", "attacks.pgd: missing field 'name'"),
    ("  sp: {", "  any: {", "attacks: bad alias 'any'"),
    ("only: {size: [tiny, small]}", "only: {size: [huge]}", "checks[1].only.size: value 'huge' is not in the matrix"),
    ("only: {size: [tiny, small]}", "only: {sz: [tiny]}", "checks[1].only: unknown matrix key 'sz'"),
    ("    claim:", "    claime:", ":13: spec 'quantization': checks[1]: unknown key 'claime'"),
    ("xfail: \"measured: equal on the digits zoo\"", "xfail: true", "checks[1].xfail: must be a non-empty string"),
    ("matrix: {size: [tiny, small, base]}", "matrix: {size: []}", "matrix.size: needs at least one value"),
    ("matrix: {size: [tiny, small, base]}", "matrix: {size: [tiny, tiny]}", "matrix.size: values must be distinct"),
    ("  - size_mb(deit_tiny:int8) < 0.35 * size_mb(deit_tiny)\n",
     "  - asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)\n", "checks[2]: duplicate check"),
])
def test_validation_errors(tmp_path, old, new, expected):
    assert expected in load_error(tmp_path, replace(old, new))


def test_unquoted_check_in_flow_list_gets_a_hint(tmp_path):
    msg = load_error(tmp_path, "id: q\nabout: x\nattacks: {x: pgd}\nchecks: [asr(m, x) > 0]\n")
    assert "checks[0]: column 6: expected ',' after model name, got end of input (unbalanced parentheses" in msg


def test_yaml_syntax_error_is_one_line(tmp_path):
    msg = load_error(tmp_path, replace("matrix: {size: [tiny, small, base]}", "matrix: {size: [tiny, small, base}"))
    assert "spec.yaml:8: YAML error" in msg
    msg = load_error(tmp_path, GOOD + "id: again\n")
    assert "spec.yaml:18: YAML error" in msg and "duplicate key 'id'" in msg


def test_file_level_errors(tmp_path):
    assert "empty spec file" in load_error(tmp_path, "")
    assert "a mapping or a list" in load_error(tmp_path, "just text")
    assert "spec #2: a spec must be a mapping" in load_error(tmp_path, "- " + GOOD.replace("\n", "\n  ") + "\n- 3\n")
    msg = load_error(tmp_path, "- " + GOOD.replace("\n", "\n  ") + "\n- " + GOOD.replace("\n", "\n  "))
    assert "duplicate spec id (also at line 1)" in msg
    with pytest.raises(SpecError, match="no such spec file"):
        load_specs(tmp_path / "missing")


def test_duplicate_ids_across_files(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(SpecError, match=r"b\.yaml:1: spec 'quantization': duplicate spec id \(also in .*a\.yaml:1\)"):
        load_specs(tmp_path)


def test_unsafe_yaml_is_rejected(tmp_path):
    msg = load_error(tmp_path, "!!python/object/apply:os.system ['echo hacked']\n")
    assert "YAML error" in msg


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_parse_number_fractions(num, den):
    assert parse_number(f"{num}/{den}") == pytest.approx(float(Fraction(num, den)), rel=1e-12)
    assert parse_number(f" {num} / {den} ") == pytest.approx(num / den, rel=1e-12)
    assert parse_number(str(num)) == float(num)


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e6, 1e6, allow_nan=False))
def test_parse_number_floats_and_passthrough(x):
    assert parse_number(repr(x)) == x
    assert parse_number(x) == x
    assert parse_number("l2") == "l2" and parse_number("8/255x") == "8/255x"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True),
       st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True),
       st.booleans())
def test_expansion_counts(tmp_path_factory, sizes, keeps, use_keep):
    tmp = tmp_path_factory.mktemp("prop")
    check = "acc(m_{size}:p{keep}) > 0" if use_keep else "acc(m_{size}) > 0"
    [spec] = load_spec_file(write(tmp, f"""\
        id: prop
        about: expansion
        matrix: {{size: [{", ".join(sizes)}], keep: [{", ".join(map(str, keeps))}]}}
        attacks: {{x: {{name: pgd}}}}
        checks: ["{check}", "acc(m) > 0"]
    """))
    cells = len(sizes) * len(keeps) if use_keep else len(sizes)
    assert len(spec.checks) == cells + 1           # expanded over the placeholders it names
    assert len({c.text for c in spec.checks}) == len(spec.checks)


def test_a_spec_without_attacks_needs_no_attacks_block(tmp_path):
    from vitrobust.spec import load_spec_file

    path = tmp_path / "sizes.yaml"
    path.write_text("id: sizes\nabout: no attack anywhere\nchecks:\n  - size_mb(a:int8) < size_mb(a)\n")
    [spec] = load_spec_file(path)
    assert spec.attacks == {} and len(spec.checks) == 1
    path.write_text("id: sizes\nabout: an attack nobody declared\nchecks:\n  - asr(a, pgd) > 0\n")
    with pytest.raises(SpecError, match=r"sizes.yaml:4: .*unknown attack alias 'pgd' \(the spec has no attacks: block\)"):
        load_spec_file(path)


def test_seed_expectations_expand_and_at_most_one_is_given(tmp_path):
    text = replace('    xfail: "measured: equal on the digits zoo"\n',
                   '    varies: "differs between seeds at {size}"\n')
    spec = load_spec_file(write(tmp_path, text))[0]
    assert [c.varies for c in spec.checks if c.varies] == ["differs between seeds at tiny", "differs between seeds at small"]
    assert all(c.xfail is None for c in spec.checks)
    one_build = replace('    xfail: "measured: equal on the digits zoo"\n', '    xfail_one_build: "one build is inconclusive"\n')
    assert load_spec_file(write(tmp_path, one_build))[0].checks[3].xfail_one_build == "one build is inconclusive"
    both = replace('    xfail: "measured: equal on the digits zoo"\n',
                   '    xfail: "measured: equal on the digits zoo"\n    varies: "and it varies"\n')
    msg = load_error(tmp_path, both)
    assert "checks[1].varies: a check has at most one expectation: xfail: and varies: are both given" in msg
