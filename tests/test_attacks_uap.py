"""Universal perturbations: fitted on one split, scored on a disjoint one."""
import pytest
import torch

from vitrobust.attacks import AttackError, make_attack
from vitrobust.attacks.projection import perturbation_norm
from vitrobust.data import load_dataset


@pytest.fixture(scope="module")
def fit_split():
    return load_dataset("digits", "val", limit=48)


@pytest.mark.parametrize("name", ["uap_pgd", "uap_deepfool"])
def test_fit_eval_on_disjoint_splits(name, vit_model, digits_test, fit_split):
    attack = make_attack(name, eps=12 / 255, **({"epochs": 2} if name == "uap_pgd" else
                                                {"passes": 1, "steps": 3, "candidates": 3}))
    delta, adv = attack.fit_eval(vit_model, fit_split, digits_test.limit(64))
    assert delta.shape == (1, 3, 32, 32)
    assert perturbation_norm(delta, "linf").item() <= 12 / 255 + 1e-6
    assert torch.equal(adv, (digits_test.images[:64] + delta).clamp(0, 1))
    clean_wrong = (vit_model.predict(digits_test.images[:64]) != digits_test.labels[:64]).sum()
    assert (vit_model.predict(adv) != digits_test.labels[:64]).sum() > clean_wrong


def test_overlapping_splits_are_refused(vit_model, digits_test, fit_split):
    attack = make_attack("uap_pgd", epochs=1)
    with pytest.raises(AttackError, match="share 1 image"):
        attack.fit_eval(vit_model, fit_split, (torch.cat([digits_test.images[:8], fit_split.images[5:6]]),
                                               torch.cat([digits_test.labels[:8], fit_split.labels[5:6]])))
    with pytest.raises(AttackError, match="disjoint"):
        attack.fit_eval(vit_model, digits_test, digits_test)
