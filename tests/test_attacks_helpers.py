"""Shared helpers for the attack tests (no tests here): small settings per attack, a model without gradients."""
import torch
from torch import nn

from vitrobust.zoo.wrapper import ModelInfo, ModelWrapper

# Small but real settings: every registered attack must appear here (a test checks it).
FAST = {
    "fgsm": {"eps": 4 / 255},
    "fgm": {"eps": 0.5},
    "pgd": {"eps": 4 / 255, "steps": 3},
    "ifgsm": {"eps": 4 / 255, "steps": 3},
    "mifgsm": {"eps": 4 / 255, "steps": 3},
    "deepfool": {"eps": 4 / 255, "steps": 3, "candidates": 4},
    "uap_pgd": {"eps": 8 / 255, "epochs": 1, "fit_batch": 8},
    "uap_deepfool": {"eps": 8 / 255, "passes": 1, "steps": 3, "candidates": 3},
    "square": {"eps": 8 / 255, "n_queries": 20},
    "salt_and_pepper": {"eps": 2.0, "steps": 10},
    "blended_noise": {"eps": 16 / 255, "directions": 5, "steps": 10},
    "spatial": {"num_rotations": 3, "num_translations": 3},
}
L2 = {name: {**params, "norm": "l2", "eps": 0.5} for name, params in FAST.items()
      if name in ("pgd", "ifgsm", "mifgsm", "deepfool", "uap_pgd", "blended_noise")}


class NoGrad(nn.Module):
    """An int8-like net: its forward runs without autograd, so no input gradient exists."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


def no_grad_model(model: ModelWrapper) -> ModelWrapper:
    info = ModelInfo(f"{model.name}:nograd", differentiable=False, num_classes=model.info.num_classes)
    return ModelWrapper(NoGrad(model.net), info, tuple(model.mean.flatten().tolist()),
                        tuple(model.std.flatten().tolist())).eval()
