"""Universal adversarial perturbations: one delta fitted on a fit split, added to every image.

Two fitters share :class:`~.base.UniversalAttack` (``fit`` -> delta, ``apply``, ``fit_eval``):

- ``uap_deepfool``: Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, "Universal adversarial
  perturbations", CVPR 2017 (the original algorithm). Pass over the fit images; for each image
  the model still classifies correctly with v added, run DeepFool on x + v, add its step to v
  and project v onto the eps ball; stop when the fit fooling rate reaches ``target_rate`` or
  after ``passes`` passes.
- ``uap_pgd``: the projected-gradient / SGD variant (Shafahi, Najibi, Xu, Dickerson, Davis,
  Goldstein, "Universal Adversarial Training", AAAI 2020): one delta updated by mini-batch
  gradient ascent on the summed cross-entropy and projected onto the eps ball.
"""
from __future__ import annotations

import torch

from .base import AttackError, UniversalAttack, input_gradient
from .deepfool import deepfool
from .projection import normalized_step, project
from .registry import register_attack


@register_attack
class UAPPGD(UniversalAttack):
    """UAP by projected mini-batch gradient ascent (Shafahi et al., AAAI 2020), L-inf or L2.

    Args: eps (8/255 L-inf), norm ('linf' | 'l2'), epochs (passes over the fit images, 10),
    fit_batch (mini-batch size, 32), step_size (default eps / 10), seed (shuffling order),
    batch_size (unused at fit: mini-batches are fit_batch).
    """

    name = "uap_pgd"
    norms = ("linf", "l2")

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", epochs: int = 10,
                 fit_batch: int = 32, step_size: float | None = None, seed: int = 0,
                 batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.epochs, self.fit_batch = int(epochs), int(fit_batch)
        self.step_size = float(step_size) if step_size is not None else self.eps / 10
        if self.epochs < 1 or self.fit_batch < 1 or not self.step_size > 0:
            raise AttackError(f"{self.name}: need epochs >= 1, fit_batch >= 1, step_size > 0")

    def fit(self, model, images, labels):
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        delta = torch.zeros(1, *images.shape[1:], dtype=images.dtype, device=images.device)
        for _ in range(self.epochs):
            order = torch.randperm(len(images), generator=generator, device="cpu").to(images.device)
            for batch in order.split(self.fit_batch):
                x = images[batch]
                grad, _ = input_gradient(model, (x + delta).clamp(0, 1), labels[batch])
                # the gradient w.r.t. a shared delta is the sum of the per-image gradients
                delta = project(delta + self.step_size * normalized_step(grad.sum(0, keepdim=True), self.norm),
                                self.eps, self.norm)
        return delta


@register_attack
class UAPDeepFool(UniversalAttack):
    """UAP, the original DeepFool-based algorithm (Moosavi-Dezfooli et al., CVPR 2017).

    Args: eps (the xi of the paper, 8/255 L-inf), norm ('linf' | 'l2'), passes (max passes over
    the fit images, 5), target_rate (stop when this fit fooling rate is reached: 1 - delta of
    the paper, 0.8), steps (DeepFool steps per image, 10), overshoot (0.02), candidates (10),
    seed (the visiting order), batch_size (fooling-rate evaluation).
    """

    name = "uap_deepfool"
    norms = ("linf", "l2")

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", passes: int = 5,
                 target_rate: float = 0.8, steps: int = 10, overshoot: float = 0.02,
                 candidates: int = 10, seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.passes, self.target_rate = int(passes), float(target_rate)
        self.steps, self.overshoot, self.candidates = int(steps), float(overshoot), int(candidates)

    def _fooling_rate(self, model, images, labels, delta) -> float:
        with torch.inference_mode():
            wrong = [model(self.apply(delta, x)).argmax(1) != y
                     for x, y in zip(images.split(self.batch_size), labels.split(self.batch_size))]
        return torch.cat(wrong).float().mean().item()

    def fit(self, model, images, labels):
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        delta = torch.zeros(1, *images.shape[1:], dtype=images.dtype, device=images.device)
        for _ in range(self.passes):
            # Sequential by definition: each image sees the v its predecessors built, so this
            # loop is per image (fit time only, never a scoring path).
            order = torch.randperm(len(images), generator=generator, device="cpu")
            for i in order.tolist():
                x, y = images[i : i + 1], labels[i : i + 1]
                with torch.inference_mode():
                    if model(self.apply(delta, x)).argmax(1).item() != y.item():
                        continue
                start = self.apply(delta, x)
                adv = deepfool(model, start, y, norm=self.norm, steps=self.steps,
                               overshoot=self.overshoot, candidates=self.candidates, eps=None)
                delta = project(delta + (adv - start), self.eps, self.norm)
            if self._fooling_rate(model, images, labels, delta) >= self.target_rate:
                break
        return delta
