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

Cost: foolbox asks the model about every image at every step, also where the answer cannot
change the result, one step per call, and re-checks the result at the end. By default
(``fast``) each attack replays foolbox's search here: the same draws in the same order, the same
arithmetic, foolbox's own clip and spatial transform, but the model is asked only about images
whose answer can still change what is returned (each ``replay`` docstring says which), the
independent questions of several steps (spatial transforms, blends, noise draws) go in one call
of up to ``batch_size`` inputs, and the closing re-check, whose answer we discard, is skipped.
The images are bitwise foolbox's provided the model scores each image independently of its
batch-mates and draws no random numbers (the zoo's models do; INT8 through its batch-invariant
path), so adversarial caches stay valid: ``tests/test_attacks_cost.py`` checks it on a fixture
model, ``bench/bench_attacks.py`` measures cost and equality on the default zoo. ``fast`` is a
class attribute, not a constructor argument, so it is not part of the threat model or cache
key; set it False on an instance to run foolbox itself.
"""
from __future__ import annotations

import math
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


def _misclassified(fmodel, x: torch.Tensor, labels: torch.Tensor,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """Per image: does the model misclassify ``x`` (foolbox's Misclassification criterion)? Only
    the ``rows`` (a bool mask; None: all) are sent to the model, in one call; the others are False."""
    if rows is None:
        return fmodel(x).argmax(-1) != labels
    out = torch.zeros_like(rows)
    index = rows.nonzero().squeeze(1)
    if len(index):
        out[index] = fmodel(x[index]).argmax(-1) != labels[index]
    return out


def _first_fooled(fmodel, labels: torch.Tensor, open_: torch.Tensor, count: int, candidate,
                  pack: int, default: torch.Tensor | None = None):
    """``(first, picked)``: per image, the index of the first of ``count`` candidates (in order)
    the model misclassifies (-1: none, or not ``open_``) and, if ``default`` is given, that
    candidate (``default``'s row where none). ``candidate(i, rows)`` is candidate ``i`` of those
    rows. foolbox asks one candidate per call for every image; here only images without a hit
    are asked, several candidates per call (up to ``pack`` inputs): a call answers what foolbox
    asks in several, and an image hit early in a call has its later answers ignored."""
    first = torch.full_like(labels, -1)
    picked = None if default is None else default.clone()
    i = 0
    while i < count:
        rows = (open_ & (first < 0)).nonzero().squeeze(1)
        if not len(rows):
            break
        k = max(1, min(count - i, pack // len(rows)))
        inputs = torch.cat([candidate(i + j, rows) for j in range(k)])
        wrong = (fmodel(inputs).argmax(-1) != labels[rows].repeat(k)).view(k, len(rows))
        hit = wrong.any(0)
        at = wrong.int().argmax(0)[hit]          # argmax: the first True
        first[rows[hit]] = i + at
        if picked is not None:
            picked[rows[hit]] = inputs.view(k, len(rows), *inputs.shape[1:])[at, hit.nonzero().squeeze(1)]
        i += k
    return first, picked


class FoolboxAttack(Attack):
    """Shared driver: build the foolbox attack, run it (or its replay) per batch, return the
    budgeted inputs."""

    needs_grad = False
    fast = True   # replay foolbox's search without the queries that cannot change the result

    def foolbox_attack(self):
        raise NotImplementedError

    def run(self, fmodel, attack, x, y):
        """foolbox itself (``fast = False``)."""
        _, clipped, _ = attack(fmodel, x, y, epsilons=[self.eps])
        return self.budgeted(x, clipped[0])

    def replay(self, fmodel, attack, x, y):
        """What :meth:`run` returns, with fewer queries (see the module docstring)."""
        raise NotImplementedError

    def budgeted(self, x, clipped):
        # foolbox's clip can overshoot eps by float rounding (~1e-7): re-project exactly
        return (x + project(clipped - x, self.eps, self.norm)).clamp(0, 1)

    def __call__(self, model, images, labels, device=None):
        import foolbox

        check_applicable(self, model)
        model.eval()
        # foolbox moves the model to cuda:0 whenever CUDA exists unless told a device (INT8
        # cannot go there), so it always gets one
        device = torch.device(device) if device is not None else images.device
        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=device)
        attack = self.foolbox_attack()
        step = self.replay if self.fast else self.run
        out = []
        with _seeded(self.seed), warnings.catch_warnings():
            # "failed to draw sufficient random inputs": those images simply stay unfooled
            warnings.filterwarnings("ignore", message=".*failed to draw sufficient.*")
            for x, y in zip(images.split(self.batch_size), labels.split(self.batch_size)):
                adv = step(fmodel, attack, x.to(device).contiguous(), y.to(device))
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

    def replay(self, fmodel, attack, x0, labels):
        """foolbox's SaltAndPepperNoiseAttack.run, asking the model only about noisy inputs
        closer (L2) than the image's best adversarial so far: a farther one is not kept whatever
        the answer (an image misclassified clean has best 0, so it is never asked again)."""
        n = len(x0)
        shape = (n, 1, *x0.shape[2:]) if self.across_channels else tuple(x0.shape)  # channels first
        zeros, ones = x0.new_zeros(n), x0.new_ones(n)
        best = torch.where(_misclassified(fmodel, x0, labels), zeros, torch.full_like(zeros, math.inf))
        result, low, high = x0, zeros, ones
        p = stepsizes = high / self.steps
        for step in range(self.steps):
            u = torch.rand(shape, dtype=x0.dtype, device=x0.device)
            p_ = p.view(-1, *(1,) * (x0.dim() - 1))
            salt = (u >= 1 - p_ / 2).to(x0.dtype) * 1
            pepper = -(u < p_ / 2).to(x0.dtype) * 1
            x = (x0 + salt + pepper).clamp(0, 1)
            norms = ((x - x0).flatten(1) ** 2).sum(-1).sqrt()
            closer = norms < best
            better = _misclassified(fmodel, x, labels, closer) & closer
            result = torch.where(better.view(-1, *(1,) * (x0.dim() - 1)), x, result)
            best = torch.where(better, norms, best)
            low = torch.where(better, 0.5 * p, low)
            high = torch.where(better, torch.min(p * 1.2, torch.full_like(p, 1.0)), high)
            stepsizes = torch.where(better, (high - low) / (self.steps - step), stepsizes)
            p = torch.where(better | (p == high), low, p)
            p = torch.min(p + stepsizes, high)
        return self.budgeted(x0, attack.distance.clip_perturbation(x0, result, self.eps))


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

    def replay(self, fmodel, attack, x0, labels):
        """foolbox's LinearSearchBlendedUniformNoiseAttack.run: the noise of :meth:`_noise`, then
        blends of it tried from the image outward, the first misclassified one kept (so an image
        is asked until its first, through :func:`_first_fooled`); the full blend (1.0) is never
        asked: it cannot beat the 1.0 an image starts with."""
        noise = self._noise(fmodel, x0, labels)
        blends = [b for b in np.linspace(0, 1, num=self.steps + 1, dtype=np.float32) if b < 1]
        first, _ = _first_fooled(fmodel, labels, torch.ones_like(labels, dtype=torch.bool), len(blends),
                                 lambda i, rows: x0[rows] * (1 - blends[i]) + noise[rows] * blends[i],
                                 self.batch_size)
        values = torch.tensor(blends, dtype=torch.float32, device=x0.device)
        best = torch.where(first >= 0, values[first.clamp(min=0)], torch.ones_like(values[0]))
        best = best.to(x0.dtype).view(-1, *(1,) * (x0.dim() - 1))
        return self.budgeted(x0, attack.distance.clip_perturbation(x0, (1 - best) * x0 + best * noise, self.eps))

    def _noise(self, fmodel, x0, labels):
        """foolbox's noise: per image its first uniform draw the model misclassifies (else the
        last draw), draws made until every image has one or ``directions`` are made. Only images
        without one are asked; on the CPU several draws go in one call (up to ``batch_size``
        inputs) and draws made past the one that completes the search are taken back (the
        generator is reset), so a later batch draws what it would have after foolbox."""
        generator = torch.default_generator if x0.device.type == "cpu" else None
        fooled = torch.zeros_like(labels, dtype=torch.bool)
        noise, made = None, 0
        while made < self.directions and not bool(fooled.all()):
            rows = (~fooled).nonzero().squeeze(1)
            k = 1 if generator is None else max(1, min(self.directions - made, self.batch_size // len(rows)))
            draws, states = [], []
            for _ in range(k):
                draw = torch.rand(x0.shape, dtype=x0.dtype, device=x0.device)  # foolbox: in bounds (0, 1)
                noise = draw if noise is None else noise
                draws.append(draw[rows])
                states.append(generator.get_state() if generator is not None else None)
            wrong = (fmodel(torch.cat(draws)).argmax(-1) != labels[rows].repeat(k)).view(k, len(rows))
            hit, at = wrong.any(0), wrong.int().argmax(0)      # argmax: the first True
            # foolbox stops at the draw that completes the search; the draw kept is an image's
            # first misclassified one, else the last one made
            last = int(at.max()) if bool(hit.all()) else k - 1
            kept = torch.where(hit, at, torch.full_like(rows, last))
            noise[rows] = torch.stack(draws)[kept, torch.arange(len(rows), device=rows.device)]
            fooled[rows] = hit
            made += last + 1
            if last < k - 1:
                generator.set_state(states[last])
        return noise


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

    def replay(self, fmodel, attack, x, labels):
        """foolbox's SpatialAttack.run: each image gets its first misclassified transform, in
        foolbox's order, by foolbox's rotate_and_shift; asked through :func:`_first_fooled`
        (images misclassified clean are never asked), a repeated grid point (a zero budget makes
        its axis all zeros) once, and without foolbox's closing re-check of the result."""
        import eagerpy as ep
        from foolbox.attacks.spatial_attack_transformations import rotate_and_shift

        points = list(dict.fromkeys(self._points()))   # distinct, in order: a repeat finds nothing new

        def moved(i, rows):
            dphi, dx, dy = points[i]
            return rotate_and_shift(ep.astensor(x[rows]), translation=(dx, dy), rotation=dphi).raw

        clean_wrong = _misclassified(fmodel, x, labels)
        _, result = _first_fooled(fmodel, labels, ~clean_wrong, len(points), moved, self.batch_size, x)
        return result

    def _points(self) -> list:
        """(rotation, dx, dy) in foolbox's order, random ones drawn as foolbox draws them."""
        if not self.grid_search:
            draws = [np.random.uniform(-m, m, self.random_steps)
                     for m in (self.max_rotation, self.max_translation, self.max_translation)]
            return list(zip(*draws))
        rotations = np.linspace(-self.max_rotation, self.max_rotation, self.num_rotations)
        shifts = np.linspace(-self.max_translation, self.max_translation, self.num_translations)
        return [(r, a, b) for r in rotations for a in shifts for b in shifts]
