"""Projected Gradient Descent (PGD), L-inf and L2, with early exit.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. Iterate: step along the normalized gradient, project back into the eps-ball
around the clean image, clip to [0, 1].
"""
from __future__ import annotations

from typing import Callable

import torch

from .active import ActiveBatch
from .base import Attack, AttackError, input_gradient
from .projection import normalized_step, project, random_start
from .registry import register_attack

# update(delta, grad, state) -> new delta (state: per-image tensors, already restricted to the active batch)
Update = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


def iterate(model, images: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, steps: int,
            update: Update, eps: float, norm: str, early_stop: bool, **state) -> torch.Tensor:
    """The loop every iterative gradient attack shares: gradient, step, project, clip.

    One forward + backward per step on the still-active images; with ``early_stop`` the logits
    of that forward decide which images are already fooled (they leave the batch, see
    :mod:`.active`). Returns the adversarial images.
    """
    batch = ActiveBatch(images, labels, delta=delta, **state)
    for _ in range(steps):
        x = batch.images + batch.state["delta"]
        grad, logits = input_gradient(model, x, batch.labels)
        if early_stop:
            fooled = logits.argmax(1) != batch.labels
            if bool(fooled.any()):
                grad = grad[~fooled]
                batch.retire(fooled, x)
                if not len(batch):
                    return batch.out
        new = update(batch.state["delta"], grad, batch.state)
        new = project(new, eps, norm)
        batch.state["delta"] = (batch.images + new).clamp(0, 1) - batch.images
    return batch.finish(batch.images + batch.state["delta"])


def check_steps(name: str, steps, step_size) -> tuple[int, float | None]:
    """``(steps, step_size)`` as int and float (or None), or AttackError naming the bad one."""
    steps = int(steps)
    if steps < 1:
        raise AttackError(f"{name}: steps must be >= 1, got {steps}", "steps")
    if step_size is not None and not float(step_size) > 0:
        raise AttackError(f"{name}: step_size must be > 0, got {step_size}", "step_size")
    return steps, (float(step_size) if step_size is not None else None)


@register_attack
class PGD(Attack):
    """PGD (Madry et al., ICLR 2018), L-inf or L2, optional random start, early exit.

    Args: eps (budget, [0, 1] pixel scale; default 8/255 L-inf), norm ('linf' | 'l2'), steps
    (10), step_size (default 2.5 * eps / steps), random_start (True: uniform start in the
    ball), early_stop (True: fooled images leave the batch and keep their input), seed,
    batch_size.
    """

    name = "pgd"
    norms = ("linf", "l2")

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", steps: int = 10,
                 step_size: float | None = None, random_start: bool = True,
                 early_stop: bool = True, seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps, step_size = check_steps(self.name, steps, step_size)
        self.step_size = step_size if step_size is not None else 2.5 * self.eps / self.steps
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)

    def start(self, images, generator):
        if not self.random_start:
            return torch.zeros_like(images)
        delta = random_start(images.shape, self.eps, self.norm, generator).to(images)
        return (images + delta).clamp(0, 1) - images

    def step(self, delta, grad, state):
        return delta + self.step_size * normalized_step(grad, self.norm)

    def perturb(self, model, images, labels, generator):
        return iterate(model, images, labels, self.start(images, generator), self.steps,
                       self.step, self.eps, self.norm, self.early_stop)
