"""Black-box (decision-based) attacks through foolbox 3: no gradients needed.

Rauber, Zimmermann, Bethge, Brendel, "Foolbox Native", JOSS 2020. The model is given to foolbox
as ``foolbox.PyTorchModel(model, bounds=(0, 1))``: the :class:`ModelWrapper` already owns the
input normalization, so no preprocessing is passed. foolbox only calls the model forward, so
these work on models without gradients (INT8).

Salt-and-pepper and blended noise are *minimization* attacks: unbounded they succeed almost
always and say nothing. They run under an explicit budget: foolbox is called with
``epsilons=[eps]``, which (for a minimization attack) clips each found perturbation to the eps
ball in the attack's distance (``distance.clip_perturbation``) and reports success of the
clipped input; the clipped input is what we return. A budget is required (finite, > 0).

Randomness: foolbox draws noise from torch's global generator (and numpy for random spatial
search); each call runs under a forked generator seeded with ``seed``, so results repeat and
the caller's random state is untouched.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import torch

from .base import Attack, AttackError, check_applicable
from .projection import project
from .registry import register_attack


@contextmanager
def _seeded(seed: int):
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


class FoolboxAttack(Attack):
    """Shared driver: build the foolbox attack, run it per batch, return the budgeted inputs."""

    needs_grad = False

    def foolbox_attack(self):
        raise NotImplementedError

    def run(self, fmodel, attack, x, y):
        _, clipped, _ = attack(fmodel, x, y, epsilons=[self.eps])
        # foolbox's clip can overshoot eps by float rounding (~1e-7): re-project exactly
        return (x + project(clipped[0] - x, self.eps, self.norm)).clamp(0, 1)

    def __call__(self, model, images, labels, device=None):
        import foolbox

        check_applicable(self, model)
        model.eval()
        # foolbox moves the model to cuda:0 whenever CUDA exists unless told a device (INT8
        # cannot go there), so it always gets one
        device = torch.device(device) if device is not None else images.device
        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=device)
        attack = self.foolbox_attack()
        out = []
        with _seeded(self.seed), warnings.catch_warnings():
            # "failed to draw sufficient random inputs": those images simply stay unfooled
            warnings.filterwarnings("ignore", message=".*failed to draw sufficient.*")
            for x, y in zip(images.split(self.batch_size), labels.split(self.batch_size)):
                adv = self.run(fmodel, attack, x.to(device).contiguous(), y.to(device))
                out.append(adv.detach().to(images.device))
        return torch.cat(out).clamp_(0, 1)


@register_attack
class SaltAndPepper(FoolboxAttack):
    """Salt-and-pepper noise (foolbox SaltAndPepperNoiseAttack), under an L2 budget.

    Increases the fraction of pixels set to 0 or 1 until the input is misclassified (Rauber
    et al., Foolbox 2017/2020), then the result is clipped to the L2 ball of radius eps.
    Args: eps (L2 budget, required finite > 0; default 4.0), norm ('l2'), steps (noise levels
    tried, 100), across_channels (same noise on every channel, True), seed, batch_size.
    """

    name = "salt_and_pepper"
    norms = ("l2",)

    def __init__(self, eps: float = 4.0, norm: str = "l2", steps: int = 100,
                 across_channels: bool = True, seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps, self.across_channels = int(steps), bool(across_channels)
        if self.steps < 1:
            raise AttackError(f"{self.name}: steps must be >= 1, got {steps}")

    def foolbox_attack(self):
        import foolbox
        return foolbox.attacks.SaltAndPepperNoiseAttack(steps=self.steps,
                                                         across_channels=self.across_channels)


@register_attack
class BlendedNoise(FoolboxAttack):
    """Linear-search blended uniform noise (foolbox LinearSearchBlendedUniformNoiseAttack).

    Blends the image with uniform noise, searching the smallest blend that misclassifies
    (Rauber et al., Foolbox), then clips the result to the eps ball. Args: eps (budget,
    required finite > 0; default 8/255 L-inf), norm ('linf' | 'l2'), directions (noise draws
    to find an adversarial one, 100), steps (blending steps, 100), seed, batch_size.
    """

    name = "blended_noise"
    norms = ("linf", "l2")

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", directions: int = 100,
                 steps: int = 100, seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.directions, self.steps = int(directions), int(steps)
        if self.directions < 1 or self.steps < 1:
            raise AttackError(f"{self.name}: directions and steps must be >= 1")

    def foolbox_attack(self):
        import foolbox
        distance = foolbox.distances.linf if self.norm == "linf" else foolbox.distances.l2
        return foolbox.attacks.LinearSearchBlendedUniformNoiseAttack(
            distance=distance, directions=self.directions, steps=self.steps)


@register_attack
class Spatial(FoolboxAttack):
    """Adversarial rotation + translation (foolbox SpatialAttack; Engstrom et al., "Exploring
    the Landscape of Spatial Robustness", ICML 2019).

    Threat model 'spatial': the budget is max_rotation (degrees) and max_translation (pixels),
    not an L-p eps, so this attack has no eps. Args: norm ('spatial'), max_rotation (30),
    max_translation (3), num_rotations (5), num_translations (5), grid_search (True: the full
    grid; False: random_steps random draws), random_steps (100), seed, batch_size.
    """

    name = "spatial"
    norms = ("spatial",)

    def __init__(self, norm: str = "spatial", max_rotation: float = 30.0,
                 max_translation: float = 3.0, num_rotations: int = 5, num_translations: int = 5,
                 grid_search: bool = True, random_steps: int = 100, seed: int = 0,
                 batch_size: int = 256):
        if norm != "spatial":
            raise AttackError(f"{self.name}: norm {norm!r} not supported; use spatial")
        if not (max_rotation >= 0 and max_translation >= 0) or max_rotation + max_translation <= 0:
            raise AttackError(f"{self.name}: needs max_rotation or max_translation > 0 (its budget)")
        self.eps, self.norm, self.seed, self.batch_size = None, norm, int(seed), int(batch_size)
        self.max_rotation, self.max_translation = float(max_rotation), float(max_translation)
        self.num_rotations, self.num_translations = int(num_rotations), int(num_translations)
        self.grid_search, self.random_steps = bool(grid_search), int(random_steps)

    def foolbox_attack(self):
        import foolbox
        return foolbox.attacks.SpatialAttack(
            max_translation=self.max_translation, max_rotation=self.max_rotation,
            num_translations=self.num_translations, num_rotations=self.num_rotations,
            grid_search=self.grid_search, random_steps=self.random_steps)

    def run(self, fmodel, attack, x, y):
        adv, _, _ = attack(fmodel, x, y)
        return adv
