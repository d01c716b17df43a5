"""A spec's attacks: parameters checked by the attack registry's callback (a fake one here, with
the contract of vitrobust.attacks.validate_attack), errors naming the parameter's line, and
strategies."""
import pytest

from vitrobust.errors import VitrobustError
from vitrobust.names import ModelName
from vitrobust.spec import load_spec_file

from spec_helpers import GOOD, load_error, replace, write


class FakeAttackError(VitrobustError):
    """What vitrobust.attacks.validate_attack raises: one line, maybe naming the parameter."""

    def __init__(self, message, param=None):
        super().__init__(message)
        self.param = param


ATTACK_ARGS = {"pgd": ("eps", "steps", "alpha"), "salt_and_pepper": ("eps", "steps", "norm"),
               "fgsm": ("eps",)}


def check_attack(name, params):
    """A stand-in for vitrobust.attacks.validate_attack with the same contract."""
    if name not in ATTACK_ARGS:
        raise FakeAttackError(f"unknown attack {name!r}")
    for key, value in params.items():
        if key not in ATTACK_ARGS[name]:
            close = [k for k in ATTACK_ARGS[name] if sorted(k) == sorted(key)]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FakeAttackError(f"{name}: unknown argument {key!r}{hint}", param=key)
        if key == "steps" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise FakeAttackError(f"{name}: steps must be a positive integer, got {value!r}", param=key)


def test_callbacks_receive_whole_names_and_converted_params(tmp_path):
    seen_models, seen_attacks = [], []
    load_spec_file(write(tmp_path, GOOD),
                   known_models=lambda n: seen_models.append(n) or True,
                   check_attack=lambda name, params: seen_attacks.append((name, params)))
    assert "deit_tiny:int8" in seen_models and "deit_base" in seen_models
    assert all(type(n) is ModelName for n in seen_models)
    assert len(seen_models) == len(set(seen_models))      # asked once per name
    # numbers converted; `name` and `strategy` are the loader's, not the attack's parameters
    assert seen_attacks == [("salt_and_pepper", {"steps": 100, "eps": 4.0, "norm": "l2"}),
                            ("pgd", {"eps": pytest.approx(8 / 255), "steps": 10}),
                            ("pgd", {"eps": pytest.approx(2 / 255)})]


def test_unknown_attack(tmp_path):
    msg = load_error(tmp_path, replace("name: salt_and_pepper", "name: salt_and_peper"), check_attack=check_attack)
    assert msg.endswith("spec.yaml:5: spec 'quantization': attacks.sp: unknown attack 'salt_and_peper'")


def test_good_spec_passes_the_attack_check(tmp_path):
    [spec] = load_spec_file(write(tmp_path, GOOD), check_attack=check_attack)
    assert set(spec.attacks) == {"sp", "pgd", "pgd_on_int8"}


def test_typo_in_an_attack_parameter_names_its_line(tmp_path):
    msg = load_error(tmp_path, replace("steps: 10}", "stpes: 10}"), check_attack=check_attack)
    assert msg.endswith("spec.yaml:6: spec 'quantization': attacks.pgd.stpes: pgd: unknown argument "
                        "'stpes'; did you mean 'steps'?")


BLOCK = """\
id: block
about: one attack written as a block mapping
attacks:
  sp: {name: salt_and_pepper}
  pgd:
    name: pgd
    eps: 8/255
    steps: 10
checks: ["asr(m, pgd) > asr(m, sp)"]
"""


@pytest.mark.parametrize("old, new, expected", [
    ("    steps: 10", "    stpes: 10",
     "spec.yaml:8: spec 'block': attacks.pgd.stpes: pgd: unknown argument 'stpes'; did you mean 'steps'?"),
    ("    steps: 10", "    steps: 2.5", "spec.yaml:8: spec 'block': attacks.pgd.steps: pgd: steps must be a "
                                      "positive integer, got 2.5"),
    ("    name: pgd", "    name: pgdd", "spec.yaml:5: spec 'block': attacks.pgd: unknown attack 'pgdd'"),
    ("  sp: {name: salt_and_pepper}", "  sp: {name: salt_and_pepper, alpha: 1}",
     "spec.yaml:4: spec 'block': attacks.sp.alpha: salt_and_pepper: unknown argument 'alpha'"),
])
def test_attack_errors_name_the_parameter_line(tmp_path, old, new, expected):
    assert load_error(tmp_path, replace(old, new, BLOCK), check_attack=check_attack).endswith(expected)


def test_attack_check_without_a_param_line_falls_back_to_the_entry(tmp_path):
    def missing_required(name, params):
        raise FakeAttackError(f"{name}: needs 'norm'", param="norm")
    msg = load_error(tmp_path, BLOCK, check_attack=missing_required)
    assert msg.endswith("spec.yaml:4: spec 'block': attacks.sp.norm: salt_and_pepper: needs 'norm'")


def test_a_bug_in_the_attack_check_is_not_a_spec_error(tmp_path):
    def broken(name, params):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        load_spec_file(write(tmp_path, BLOCK), check_attack=broken)


@pytest.mark.parametrize("strategy", ["transfer", "transfer:deit_tiny", "white-box", "black-box",
                                      "straight-through"])
def test_strategies_accepted(tmp_path, strategy):
    asked = []
    [spec] = load_spec_file(write(tmp_path, replace("straight-through", strategy)),
                            known_models=lambda n: asked.append(n) or True)
    assert spec.attacks["pgd_on_int8"]["strategy"] == strategy
    assert ("deit_tiny" in asked) if ":" in strategy else True


@pytest.mark.parametrize("strategy, expected", [
    ("transfer:", "attacks.pgd_on_int8.strategy: unknown strategy 'transfer:'"),
    ("transfer:deit_tiny::int8", "attacks.pgd_on_int8.strategy: bad model name 'deit_tiny::int8'"),
    ("transfer:nope", "spec.yaml:7: spec 'quantization': attacks.pgd_on_int8.strategy: unknown model 'nope'"),
])
def test_strategy_errors(tmp_path, strategy, expected):
    msg = load_error(tmp_path, replace("straight-through", f'"{strategy}"'), known_models=lambda n: n != "nope")
    assert expected in msg
