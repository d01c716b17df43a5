"""Every attack stays inside its threat model on every image, and inside [0, 1], and fools
something at small settings (an attack missing from ``FAST`` runs at its defaults)."""
import pytest

from fixtures.attacks import FAST, L2
from vitrobust.attacks import list_attacks, make_attack
from vitrobust.attacks.projection import perturbation_norm

TOL = 1e-5


def _check_budget(attack, clean, adv):
    assert adv.shape == clean.shape
    assert adv.min() >= 0 and adv.max() <= 1
    if attack.norm != "spatial":
        size = perturbation_norm(adv - clean, attack.norm)
        assert (size <= attack.eps + TOL).all(), f"{attack}: max {size.max().item()} > eps {attack.eps}"


@pytest.mark.parametrize("name", list_attacks())
def test_linf_or_default_budget(name, vit_model, digits_test):
    data = digits_test.limit(32)
    attack = make_attack(name, **FAST.get(name, {}))
    adv = attack(vit_model, data.images, data.labels)
    _check_budget(attack, data.images, adv)
    if name != "blended_noise":  # uniform-noise blending rarely succeeds inside a small budget
        assert (vit_model.predict(adv) != data.labels).any(), f"{name} fooled nothing"


@pytest.mark.parametrize("name", sorted(L2))
def test_l2_budget(name, vit_model, digits_test):
    data = digits_test.limit(32)
    attack = make_attack(name, **L2[name])
    _check_budget(attack, data.images, attack(vit_model, data.images, data.labels))


def test_attacks_work_on_a_cnn(cnn_model, digits_test):
    data = digits_test.limit(32)
    for name in ("pgd", "deepfool", "square"):
        attack = make_attack(name, **FAST[name])
        _check_budget(attack, data.images, attack(cnn_model, data.images, data.labels))
