"""Iterative FGSM (I-FGSM / BIM) and Momentum I-FGSM (MI-FGSM), with early exit.

Kurakin, Goodfellow, Bengio, "Adversarial Examples in the Physical World", ICLR workshop 2017.
Dong, Liao, Pang, Su, Zhu, Hu, Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018.
"""
from __future__ import annotations

import torch

from .base import check_budget
from .pgd import PGD, check_steps, iterate
from .projection import normalized_step
from .registry import register_attack


def default_step_size(name: str, eps, steps, step_size):
    """``step_size``, or ``eps / steps`` so the last step can just reach the ball's edge (eps and
    steps are checked first, so a bad one is named rather than failing in the division)."""
    if step_size is not None:
        return step_size
    steps, _ = check_steps(name, steps, None)
    return check_budget(name, eps) / steps


@register_attack
class IFGSM(PGD):
    """I-FGSM / Basic Iterative Method (Kurakin et al., 2017): PGD from the clean image.

    L-inf (sign steps) or L2 (normalized gradient steps). Args: eps (8/255), norm ('linf' |
    'l2'), steps (10), step_size (default eps / steps, so the last step can reach the ball's
    edge), early_stop (True), seed (unused: deterministic), batch_size.
    """

    name = "ifgsm"

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", steps: int = 10,
                 step_size: float | None = None, early_stop: bool = True, seed: int = 0,
                 batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, steps=steps,
                         step_size=default_step_size(self.name, eps, steps, step_size),
                         random_start=False, early_stop=early_stop, seed=seed, batch_size=batch_size)


@register_attack
class MIFGSM(PGD):
    """MI-FGSM (Dong et al., CVPR 2018): I-FGSM with a momentum of L1-normalized gradients.

    g <- mu * g + grad / ||grad||_1, then a sign step (L-inf) or a normalized step (L2) along g.
    Args: eps (8/255), norm ('linf' | 'l2'), steps (10), step_size (default eps / steps),
    decay (mu, 1.0), early_stop (True), seed (unused), batch_size.
    """

    name = "mifgsm"

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", steps: int = 10,
                 step_size: float | None = None, decay: float = 1.0, early_stop: bool = True,
                 seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, steps=steps,
                         step_size=default_step_size(self.name, eps, steps, step_size),
                         random_start=False, early_stop=early_stop, seed=seed, batch_size=batch_size)
        self.decay = float(decay)

    def step(self, delta, grad, state):
        l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        state["momentum"] = self.decay * state["momentum"] + grad / l1
        return delta + self.step_size * normalized_step(state["momentum"], self.norm)

    def perturb(self, model, images, labels, generator):
        return iterate(model, images, labels, torch.zeros_like(images), self.steps, self.step,
                       self.eps, self.norm, self.early_stop, momentum=torch.zeros_like(images))
