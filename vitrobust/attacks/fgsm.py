"""FGSM and FGM: one gradient step to the edge of the budget.

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
L-inf (FGSM): x + eps * sign(grad). L2 (FGM): x + eps * grad / ||grad||_2.
"""
from __future__ import annotations

import torch

from .base import Attack, input_gradient
from .projection import normalized_step
from .registry import register_attack


@register_attack
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015).

    Args: eps (budget in pixel units, [0, 1] scale; default 8/255), norm ('linf' or 'l2'),
    seed (unused: deterministic), batch_size.
    """

    name = "fgsm"
    norms = ("linf", "l2")

    def perturb(self, model, images, labels, generator):
        grad, _ = input_gradient(model, images, labels)
        return (images + self.eps * normalized_step(grad, self.norm)).clamp(0, 1)


@register_attack
class FGM(FGSM):
    """Fast Gradient Method, the L2 form of FGSM (Goodfellow et al., 2015). Default eps 0.5 (L2)."""

    name = "fgm"
    norms = ("l2",)

    def __init__(self, eps: float = 0.5, norm: str = "l2", seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
