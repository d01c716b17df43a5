"""Our FGSM / FGM / PGD agree with foolbox 3's on the same model, images and settings."""
import foolbox
import pytest
import torch

from vitrobust.attacks import make_attack

ATOL = 1e-5


def _foolbox(model, attack, data, eps):
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    _, clipped, _ = attack(fmodel, data.images, data.labels, epsilons=eps)
    return clipped


def _close(ours, theirs):
    # a sign() of a gradient that is ~0 can flip by float noise: allow a handful of pixels
    wrong = ((ours - theirs).abs() > ATOL).float().mean().item()
    assert wrong < 1e-3, f"{wrong:.2%} of pixels differ"


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_single_step_matches_foolbox(norm, eps, vit_model, digits_test):
    data = digits_test.limit(48)
    ours = make_attack("fgsm", eps=eps, norm=norm)(vit_model, data.images, data.labels)
    theirs_cls = foolbox.attacks.FGSM if norm == "linf" else foolbox.attacks.FGM
    _close(ours, _foolbox(vit_model, theirs_cls(random_start=False), data, eps))


@pytest.mark.parametrize("norm,eps,step", [("linf", 4 / 255, 1 / 255), ("l2", 0.5, 0.15)])
def test_pgd_matches_foolbox(norm, eps, step, vit_model, digits_test):
    data = digits_test.limit(48)
    ours = make_attack("pgd", eps=eps, norm=norm, steps=5, step_size=step, random_start=False,
                       early_stop=False)(vit_model, data.images, data.labels)
    cls = foolbox.attacks.LinfPGD if norm == "linf" else foolbox.attacks.L2PGD
    theirs = _foolbox(vit_model, cls(steps=5, abs_stepsize=step, random_start=False), data, eps)
    _close(ours, theirs)
