"""The attack protocol: registry, budgets, seeds, early exit, models without gradients."""
import math

import pytest
import torch

from test_attacks_helpers import FAST, no_grad_model
from vitrobust.attacks import (AttackError, black_box_attacks, describe, list_attacks,
                               make_attack, resolve_strategy)


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
    with pytest.raises(AttackError, match="unknown parameter 'stpes'"):
        make_attack("pgd", stpes=3)
    with pytest.raises(AttackError, match="norm 'l2' not supported"):
        make_attack("square", norm="l2")
    with pytest.raises(AttackError, match="unknown attack"):
        make_attack("nope")


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
    with pytest.raises(AttackError, match="vit_fixture:nograd.*transfer:<surrogate>"):
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
    with pytest.raises(AttackError, match="needs an ':int8' model"):
        resolve_strategy(pgd, nograd, "straight-through", loader)
    # a spec attack with a strategy also serves FP32 targets: they are attacked white-box
    assert resolve_strategy(pgd, vit_model, "straight-through", loader) == (vit_model, "white-box")
    with pytest.raises(AttackError, match="unknown strategy"):
        resolve_strategy(pgd, vit_model, "grey-box", loader)


def test_straight_through_strategy(digits_test):
    pytest.importorskip("vitrobust.compress.quantize")
    from vitrobust.zoo import load_model
    int8 = load_model("vit_fixture:int8", progress=False)
    model, label = resolve_strategy(make_attack("pgd"), int8, "straight-through", load_model)
    assert label == "straight-through" and model.info.differentiable
    data = digits_test.limit(16)
    adv = make_attack("pgd", **FAST["pgd"])(model, data.images, data.labels)
    assert (adv - data.images).abs().max() <= 4 / 255 + 1e-5
