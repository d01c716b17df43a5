"""Sanity warnings: masked gradients, black-box beating white-box, non-determinism."""
import torch
from torch import nn

from vitrobust.sanity import black_box_beats_white_box, determinism_warning, gradient_warnings
from vitrobust.zoo.wrapper import ModelInfo, ModelWrapper


def _wrap(net, name="toy"):
    return ModelWrapper(net, ModelInfo(name)).eval()


class Masked(nn.Module):
    """Rounds its input: gradient zero almost everywhere (classic gradient masking)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + (torch.round(x * 4) / 4 - x).detach() - x + x.detach())


class NaNGrad(nn.Module):
    """Same outputs, but d sqrt(|0|) = inf times 0 poisons the input gradient with NaN."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) + 0 * (x - x.detach()).abs().sqrt().sum((1, 2, 3))[:, None]


def test_gradient_warnings(vit_model, digits_test):
    data = digits_test.limit(16)
    assert gradient_warnings(vit_model, data.images, data.labels) == []
    masked = _wrap(Masked(vit_model.net), "masked")
    warns = gradient_warnings(masked, data.images, data.labels)
    assert warns and warns[0]["kind"] == "zero-gradient" and "16/16" in warns[0]["message"]
    nan = _wrap(NaNGrad(vit_model.net), "nangrad")
    warns = gradient_warnings(nan, data.images, data.labels)
    assert warns and "NaN input gradient on 16/16" in warns[0]["message"]


def test_black_box_beats_white_box():
    ok = {"pgd": (0.9, True, "linf", 8 / 255), "fgsm": (0.5, True, "linf", 8 / 255),
          "square": (0.6, False, "linf", 8 / 255)}
    assert black_box_beats_white_box(ok, "m") == []
    bad = {"pgd": (0.3, True, "linf", 8 / 255), "square": (0.6, False, "linf", 4 / 255),
           "noise": (0.2, False, "linf", 4 / 255)}
    warns = black_box_beats_white_box(bad, "deit_tiny")
    assert len(warns) == 1 and warns[0]["kind"] == "black-box-beats-white-box"
    assert "square" in warns[0]["message"] and "pgd" in warns[0]["message"]
    assert black_box_beats_white_box({"square": (1.0, False, "linf", 0.1)}, "m") == []


def test_black_box_is_only_compared_within_its_threat_model_and_budget():
    results = {"pgd": (0.3, True, "linf", 2 / 255),
               "noise": (0.5, False, "linf", 8 / 255),       # a larger budget: not comparable
               "sp": (0.9, False, "l2", 1.5),                # another norm
               "spatial": (0.9, False, "spatial", None)}     # rotations have no eps
    assert black_box_beats_white_box(results, "m") == []


def test_determinism_warning(vit_model, digits_test):
    images = digits_test.images[:8]
    assert determinism_warning(vit_model, images) == []
    noisy = _wrap(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 32 * 32, 10)))
    noisy.net.train()      # dropout left on: two calls differ
    noisy.eval = lambda: noisy   # simulate a model whose eval() does not turn dropout off
    warns = determinism_warning(noisy, images)
    assert warns and warns[0]["kind"] == "nondeterministic"
