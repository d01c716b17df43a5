"""The straight-through model: one model's outputs with another model's gradients.

A model without usable gradients (dynamic INT8: quantized linears have none) declares a
differentiable surrogate (``ModelInfo.surrogate``, its FP32 parent). Gradient attacks run on
:func:`straight_through` of the two: the forward pass returns the target's logits exactly, the
backward pass is the surrogate's (the straight-through estimator, Bengio, Leonard, Courville
2013). Nothing here knows how the target was made, so attacks need nothing from
:mod:`vitrobust.compress`.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..device import home_device
from ..zoo.wrapper import ModelInfo, ModelWrapper


class StraightThrough(nn.Module):
    """Forward: ``target``'s logits. Backward: ``surrogate``'s gradient.

    ``out = surrogate(x) + (target(x) - surrogate(x)).detach()``; both are
    :class:`ModelWrapper` s and own their normalization, so this takes pixels.
    """

    def __init__(self, target: ModelWrapper, surrogate: ModelWrapper):
        super().__init__()
        self.target, self.surrogate = target, surrogate

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dense = self.surrogate(images)
        with torch.no_grad():
            exact = self.target(images)
        return dense + (exact - dense).detach()


def straight_through(target: ModelWrapper, surrogate: ModelWrapper) -> ModelWrapper:
    """A differentiable :class:`ModelWrapper` with ``target``'s outputs and ``surrogate``'s
    gradients, named ``<target>@st``.

    Its weight hash combines both models' hashes (adversarial sets made on it are cached under
    it). Normalization lives in the inner wrappers, so the outer wrapper's is the identity.
    """
    src = target.info
    info = ModelInfo(f"{src.name}@st", family=src.family, differentiable=True, data=src.data,
                     input_size=src.input_size, num_classes=src.num_classes,
                     meta={**src.meta, "strategy": "straight-through", "gradient_from": surrogate.name},
                     recipe=dict(src.recipe),
                     weight_hash=combined_hash(src.weight_hash, surrogate.info.weight_hash))
    # the identity normalization lives beside the surrogate, where the gradient is computed (a
    # CPU-pinned INT8 target is reached through its own wrapper's device move)
    return ModelWrapper(StraightThrough(target, surrogate), info, (0.0,) * 3, (1.0,) * 3,
                        device=home_device(surrogate)).eval()


def combined_hash(*hashes: str) -> str:
    """One short hash for several models' weights (order matters)."""
    return hashlib.sha256("|".join(hashes).encode()).hexdigest()[:16]
