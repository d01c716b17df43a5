"""Projected Gradient Descent (PGD), L-inf and L2.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. Iterate: step along the normalized gradient, project back into the eps-ball
around the clean image, clip to [0, 1].
"""
from __future__ import annotations

import torch

from .base import Attack, input_gradient, register_attack
from .projection import normalized_step, project, random_start


@register_attack
class PGD(Attack):
    """PGD (Madry et al., 2018).

    Args: eps (default 8/255 L-inf), norm ('linf' | 'l2'), steps (10), step_size (default
    2.5 * eps / steps), random_start (True: uniform start in the ball), seed, batch_size.
    """

    name = "pgd"
    norms = ("linf", "l2")

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", steps: int = 10,
                 step_size: float | None = None, random_start: bool = True, seed: int = 0,
                 batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.random_start = bool(random_start)

    def perturb(self, model, images, labels, generator):
        delta = torch.zeros_like(images)
        if self.random_start:
            delta = random_start(images.shape, self.eps, self.norm, generator)
            delta = (images + delta).clamp(0, 1) - images
        for _ in range(self.steps):
            grad, _ = input_gradient(model, images + delta, labels)
            delta = project(delta + self.step_size * normalized_step(grad, self.norm), self.eps, self.norm)
            delta = (images + delta).clamp(0, 1) - images
        return images + delta
