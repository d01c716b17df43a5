"""The attack protocol: registry, budgets, seeds, early exit, models without gradients."""
import math

import pytest
import torch

from fixtures.attacks import FAST, no_grad_model
from vitrobust.attacks import (AttackError, black_box_attacks, describe, list_attacks,
                               make_attack, resolve_strategy, validate_attack)
from vitrobust.errors import VitrobustError


def test_describe_lists_every_attack_with_defaults():
    rows = {r["name"]: r for r in describe()}
    assert set(rows) == set(list_attacks())
    assert rows["pgd"]["needs_grad"] and not rows["square"]["needs_grad"]
    assert rows["uap_pgd"]["universal"] and not rows["pgd"]["universal"]
    assert rows["mifgsm"]["defaults"]["decay"] == 1.0
    assert "random_start" not in rows["ifgsm"]["defaults"]   # a subclass hides its parent's args
    for row in rows.values():
        assert row["about"], row["name"]
        make_attack(row["name"])   # every default is valid


def test_black_box_set():
    assert set(black_box_attacks()) == {"square", "salt_and_pepper", "blended_noise", "spatial"}


@pytest.mark.parametrize("eps", [None, math.inf, float("nan"), 0, -1.0, "lots"])
@pytest.mark.parametrize("name", ["salt_and_pepper", "blended_noise", "deepfool", "pgd"])
def test_unbounded_requests_are_refused(name, eps):
    with pytest.raises(AttackError, match="unbounded minimization attack"):
        make_attack(name, eps=eps)


def test_unknown_parameter_and_norm():
    with pytest.raises(AttackError, match=r"pgd: unknown argument 'stpes'; did you mean 'steps'\? "
                                          r"\(known: batch_size, early_stop, eps, norm, "):
        make_attack("pgd", stpes=3)
    with pytest.raises(AttackError, match="norm 'l2' not supported"):
        make_attack("square", norm="l2")
    with pytest.raises(AttackError, match="unknown attack"):
        make_attack("nope")


@pytest.mark.parametrize("name, params, param, message", [
    ("pgd", {"eps": 0.1, "stpes": 3}, "stpes", "did you mean 'steps'"),
    ("pgd", {"colour": 3}, "colour", r"unknown argument 'colour' \(known: "),
    ("pgd", {"steps": 0}, "steps", "steps must be >= 1"),
    ("pgd", {"steps": "many"}, "steps", "pgd: steps='many': invalid literal"),
    ("ifgsm", {"steps": 0}, "steps", "steps must be >= 1"),          # not a ZeroDivisionError
    ("ifgsm", {"eps": None}, "eps", "unbounded"),
    ("square", {"n_queries": 10, "p_init": 2.0}, "p_init", "0 < p_init <= 1"),
    ("deepfool", {"candidates": 1}, "candidates", "candidates >= 2"),
    ("fgm", {"norm": "linf"}, "norm", "not supported"),
    ("spatial", {"max_rotation": 0, "max_translation": 0}, None, "needs max_rotation or max_translation"),
    ("nope", {}, None, "unknown attack 'nope'"),
])
def test_validate_attack_names_the_offending_parameter(name, params, param, message):
    with pytest.raises(AttackError, match=message) as info:
        validate_attack(name, params)
    assert info.value.param == param
    assert "\n" not in str(info.value)
    assert isinstance(info.value, VitrobustError)


def test_validate_attack_accepts_what_make_attack_builds():
    assert validate_attack("pgd", {"eps": 2 / 255, "steps": 5, "norm": "l2"}) is None
    with pytest.raises(AttackError, match="parameters must be a mapping"):
        validate_attack("pgd", [("eps", 0.1)])


def test_threat_model_names_every_argument():
    tm = make_attack("spatial", max_rotation=10).threat_model()
    assert tm["norm"] == "spatial" and tm["max_rotation"] == 10 and "eps" not in tm
    assert make_attack("pgd").threat_model()["early_stop"] is True


@pytest.mark.parametrize("name", ["pgd", "square", "salt_and_pepper", "uap_pgd"])
def test_seed_makes_attacks_reproducible(name, vit_model, digits_test):
    data = digits_test.limit(24)
    run = lambda seed: make_attack(name, **{**FAST[name], "seed": seed})(vit_model, data.images, data.labels)  # noqa: E731
    torch.manual_seed(123)
    first = run(0)
    torch.manual_seed(456)   # the global generator must not matter
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


@pytest.mark.parametrize("name", ["pgd", "ifgsm", "mifgsm", "deepfool", "square"])
def test_early_stop_keeps_fooled_images_fooled(name, vit_model, digits_test):
    # With early exit an image fooled after k iterations is frozen there, so every image fooled
    # with fewer iterations is still fooled with more.
    data = digits_test.limit(48)
    key = "n_queries" if name == "square" else "steps"
    fooled = []
    for n in (1, 2, 4):
        attack = make_attack(name, **{**FAST[name], key: n * (10 if name == "square" else 1)})
        fooled.append(vit_model.predict(attack(vit_model, data.images, data.labels)) != data.labels)
    assert fooled[0].any()
    assert not (fooled[0] & ~fooled[1]).any() and not (fooled[1] & ~fooled[2]).any()


def test_early_stop_freezes_misclassified_clean_images(vit_model, digits_test):
    data = digits_test.limit(64)
    wrong = vit_model.predict(data.images) != data.labels
    labels = data.labels.clone()
    labels[:8] = (labels[:8] + 1) % 10            # certainly "fooled" before any step
    adv = make_attack("ifgsm", eps=4 / 255, steps=3)(vit_model, data.images, labels)
    assert torch.equal(adv[:8], data.images[:8])
    off = make_attack("ifgsm", eps=4 / 255, steps=3, early_stop=False)(vit_model, data.images, labels)
    assert not torch.equal(off[:8], data.images[:8])
    del wrong


def test_gradient_attack_on_model_without_gradients_is_a_clear_error(vit_model, digits_test):
    model = no_grad_model(vit_model)
    data = digits_test.limit(8)
    with pytest.raises(AttackError, match=r"pgd needs gradients, but vit_fixture:nograd has none.*square"):
        make_attack("pgd")(model, data.images, data.labels)
    hint = "vit_fixture:nograd has none.*'straight-through', 'transfer'.*'transfer:<model>'"
    with pytest.raises(AttackError, match=hint):
        resolve_strategy(make_attack("pgd"), model, None, load_model=None)


def test_black_box_attacks_run_without_gradients(vit_model, digits_test):
    model = no_grad_model(vit_model)
    data = digits_test.limit(32)
    with pytest.raises(RuntimeError):   # really no gradient through this model
        x = data.images[:2].clone().requires_grad_(True)
        model(x).sum().backward()
    for name in black_box_attacks():
        attack = make_attack(name, **FAST[name])
        adv = attack(model, data.images, data.labels)
        assert adv.shape == data.images.shape and adv.min() >= 0 and adv.max() <= 1
    adv = make_attack("square", **FAST["square"])(model, data.images, data.labels)
    assert (model.predict(adv) != data.labels).any()


def test_strategies(vit_model, cnn_model):
    nograd = no_grad_model(vit_model)
    loader = {"cnn_fixture": cnn_model, "nograd": nograd}.__getitem__
    pgd, square = make_attack("pgd"), make_attack("square")
    assert resolve_strategy(pgd, vit_model, None, loader) == (vit_model, "white-box")
    assert resolve_strategy(square, nograd, None, loader) == (nograd, "black-box")
    assert resolve_strategy(pgd, nograd, "transfer:cnn_fixture", loader) == (cnn_model, "transfer:cnn_fixture")
    with pytest.raises(AttackError, match="needs gradients"):
        resolve_strategy(pgd, nograd, "black-box", loader)
    with pytest.raises(AttackError, match="surrogate nograd has no gradients"):
        resolve_strategy(pgd, nograd, "transfer:nograd", loader)
    # a spec attack with a strategy also serves FP32 targets: they are attacked white-box
    assert resolve_strategy(pgd, vit_model, "straight-through", loader) == (vit_model, "white-box")
    assert resolve_strategy(pgd, vit_model, "transfer", loader) == (vit_model, "white-box")
    with pytest.raises(AttackError, match="unknown strategy 'grey-box'"):
        resolve_strategy(pgd, vit_model, "grey-box", loader)


@pytest.mark.parametrize("strategy", ["straight-through", "transfer"])
def test_surrogate_strategies_need_a_declared_surrogate(strategy, vit_model):
    nograd = no_grad_model(vit_model)
    with pytest.raises(AttackError, match=f"strategy {strategy}: vit_fixture:nograd declares no gradient surrogate"):
        resolve_strategy(make_attack("pgd"), nograd, strategy, load_model=None)


def test_strategies_follow_the_declared_surrogate(vit_model, cnn_model):
    declares = no_grad_model(vit_model, surrogate="cnn_fixture")
    loaded = []
    loader = lambda name: loaded.append(name) or {"cnn_fixture": cnn_model}[name]  # noqa: E731
    pgd = make_attack("pgd")
    assert resolve_strategy(pgd, declares, "transfer", loader) == (cnn_model, "transfer:cnn_fixture")
    model, label = resolve_strategy(pgd, declares, "straight-through", loader)
    assert label == "straight-through" and model.info.meta["gradient_from"] == "cnn_fixture"
    assert loaded == ["cnn_fixture", "cnn_fixture"]
    # a declared surrogate without gradients is refused, not attacked into a silent zero gradient
    chained = no_grad_model(vit_model, surrogate="nograd")
    with pytest.raises(AttackError, match="surrogate nograd has no gradients"):
        resolve_strategy(pgd, chained, "straight-through", {"nograd": declares}.__getitem__)


def test_straight_through_strategy(digits_test):
    from vitrobust.zoo import load_model
    int8 = load_model("vit_fixture:int8", progress=False)
    assert int8.info.surrogate == "vit_fixture"
    model, label = resolve_strategy(make_attack("pgd"), int8, "straight-through", load_model)
    assert label == "straight-through" and model.info.differentiable
    assert model.info.meta["gradient_from"] == "vit_fixture"
    data = digits_test.limit(16)
    adv = make_attack("pgd", **FAST["pgd"])(model, data.images, data.labels)
    assert (adv - data.images).abs().max() <= 4 / 255 + 1e-5
    surrogate, label = resolve_strategy(make_attack("pgd"), int8, "transfer", load_model)
    assert surrogate is load_model("vit_fixture") and label == "transfer:vit_fixture"
