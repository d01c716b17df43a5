"""Tests that follow the registries, as timm's run over ``list_models()``: every registered
attack, compression and model is tested here the moment it registers, with no edit to this file.

- attacks: defaults on a handful of digits, on the fixture ViT: same shape, pixels in [0, 1],
  the perturbation inside its eps in its norm; ``validate_attack`` accepts the defaults and
  names a typo'd parameter;
- compressions: ``vit_fixture:<example>`` (each registration's own example suffix) returns
  (N, 10) logits and declares the surrogate its registration says;
- models: each builder's network, at random weights, maps its input size to (N, num_classes).
"""
import pytest
import torch

from vitrobust.attacks import AttackError, describe, list_attacks, make_attack, validate_attack
from vitrobust.attacks.projection import perturbation_norm
from vitrobust.compress import list_compressions
from vitrobust.zoo import list_models, load_model, model_entry

IMAGES = 4
TOL = 1e-5


# -- attacks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_attacks())
def test_attack_at_its_defaults_keeps_its_threat_model(name, vit_model, digits_test):
    data = digits_test.limit(IMAGES)
    attack = make_attack(name)
    adv = attack(vit_model, data.images, data.labels)
    assert adv.shape == data.images.shape and adv.dtype == data.images.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    if attack.eps is not None:   # spatial attacks have a rotation/translation budget instead
        size = perturbation_norm(adv - data.images, attack.norm)
        assert (size <= attack.eps + TOL).all(), f"{attack}: {size.max().item()} > eps {attack.eps}"


@pytest.mark.parametrize("name", list_attacks())
def test_validate_attack_accepts_the_defaults_and_names_a_typo(name):
    defaults = describe(name)[0]["defaults"]
    validate_attack(name, defaults)
    key = max(defaults, key=len)            # the longest name has the least ambiguous typo
    typo = key[:-2] + key[-1] + key[-2]     # its last two letters swapped
    assert typo != key
    with pytest.raises(AttackError, match=f"{name}: unknown argument {typo!r}; did you mean {key!r}") as info:
        validate_attack(name, {**defaults, typo: defaults[key]})
    assert info.value.param == typo


# -- compressions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("comp", list_compressions(), ids=lambda c: c.prefix)
def test_compression_of_the_fixture_returns_logits(comp, digits_test):
    model = load_model(f"vit_fixture:{comp.example}", progress=False)
    assert model.name == f"vit_fixture:{comp.example}"
    with torch.no_grad():
        logits = model(digits_test.images[:IMAGES])
    assert logits.shape == (IMAGES, 10) and torch.isfinite(logits).all()
    assert model.info.surrogate == ("vit_fixture" if comp.surrogate == "parent" else None)
    assert model.info.weight_hash and model.info.weight_hash != load_model("vit_fixture").info.weight_hash


# -- models -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_model_builder_maps_its_input_size_to_its_classes(name):
    entry = model_entry(name)
    torch.manual_seed(0)
    net = entry.builder(num_classes=7).eval()     # the zoo builds trained models with the data's classes
    size = entry.input_size
    with torch.no_grad():
        out = net(torch.rand(2, 3, size, size))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 7)
