"""``:advtrain`` (Madry PGD adversarial fine-tuning) lowers PGD's success on the fixture ViT."""
import pytest
import torch

from vitrobust.attacks import make_attack
from vitrobust.compress.advtrain import pgd_linf
from vitrobust.zoo import load_model

EPS = 2 / 255


@pytest.fixture(scope="module")
def adv_model():
    return load_model("vit_fixture:advtrain", progress=False)


def _asr(model, images, labels):
    """PGD L-inf (eps 2/255, 10 steps) success among the images the model gets right clean."""
    correct = model.predict(images) == labels
    adv = make_attack("pgd", eps=EPS, steps=10, random_start=True)(model, images[correct], labels[correct])
    return (model.predict(adv) != labels[correct]).float().mean().item(), correct.float().mean().item()


def test_meta(adv_model):
    assert adv_model.info.meta["compression"] == "advtrain"
    assert adv_model.info.meta["eps"] == pytest.approx(EPS) and adv_model.info.meta["steps"] == 3
    assert adv_model.info.differentiable


def test_inner_pgd_stays_in_budget_and_attacks(vit_model, digits_test):
    x, y = digits_test.images[:64], digits_test.labels[:64]
    for p in vit_model.parameters():   # other tests may have left gradients on the shared fixture
        p.grad = None
    adv = pgd_linf(vit_model, x, y, EPS, 3, 2.5 * EPS / 3, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(vit_model(adv), y) > loss(vit_model(x), y)
    # the inner max must not leave gradients on the parameters (the outer step owns them)
    assert all(p.grad is None for p in vit_model.parameters())


def test_advtrain_lowers_pgd_asr(adv_model, vit_model, digits_test):
    base_asr, base_acc = _asr(vit_model, digits_test.images, digits_test.labels)
    adv_asr, adv_acc = _asr(adv_model, digits_test.images, digits_test.labels)
    # Measured on the fixture (128 test images): ASR falls by about half; demand a real drop of
    # 0.1 (a few images' worth is noise), and that clean accuracy does not collapse.
    assert adv_asr < base_asr - 0.1, (base_asr, adv_asr)
    assert adv_acc > base_acc - 0.2, (base_acc, adv_acc)
