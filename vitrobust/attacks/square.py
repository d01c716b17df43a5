"""Square Attack, L-inf: score-based random search, no gradients, batched.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020. Start from vertical stripes of +-eps; at
each iteration every active image gets one random square window (side shrinking with the
schedule of the paper) set to a fresh +-eps per channel; the change is kept if the margin
loss (true logit minus best other logit) decreases. Runs under ``torch.inference_mode``;
images whose margin goes negative (fooled) leave the batch (early exit).

A candidate whose window drew the signs it already had equals the current input: it is not
sent to the model (its margin is the current one, so it is not kept whatever the answer), which
leaves the draws and the result unchanged (provided the model scores each image independently
of its batch-mates, as the zoo's do). ``bench/bench_attacks.py`` measures how many queries that saves.
"""
from __future__ import annotations

import math

import torch

from .active import ActiveBatch
from .base import Attack, AttackError
from .registry import register_attack


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.clone().scatter_(1, labels[:, None], float("-inf")).amax(1)
    return true - other


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """The paper's piecewise-constant schedule of the fraction of pixels changed per query."""
    it = int(it / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                       (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


@register_attack
class Square(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020), L-inf, score-based, no gradients.

    Args: eps (8/255, L-inf), norm ('linf'), n_queries (iterations after the initial query,
    1000), p_init (initial fraction of pixels per square, 0.05), early_stop (True), seed,
    batch_size.
    """

    name = "square"
    needs_grad = False
    norms = ("linf",)
    # skip candidates equal to the current input (same images; a class attribute, not a
    # constructor argument, so not in the threat model or cache key; False queries every one)
    fast = True

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", n_queries: int = 1000,
                 p_init: float = 0.05, early_stop: bool = True, seed: int = 0,
                 batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.n_queries, self.p_init, self.early_stop = int(n_queries), float(p_init), bool(early_stop)
        if self.n_queries < 1 or not 0 < self.p_init <= 1:
            raise AttackError(f"{self.name}: need n_queries >= 1 and 0 < p_init <= 1")

    @torch.inference_mode()
    def perturb(self, model, images, labels, generator):
        n, c, h, w = images.shape
        eps = self.eps
        # draws come from the CPU generator in the same order on every device, then move
        draw = lambda high, shape: torch.randint(0, high, shape, generator=generator,  # noqa: E731
                                                 device=generator.device).to(images.device)
        signs = lambda *shape: draw(2, shape).to(images) * 2 - 1  # noqa: E731
        x = (images + eps * signs(n, c, 1, w)).clamp(0, 1)      # vertical stripes
        margin = _margin(model(x), labels)
        batch = ActiveBatch(images, labels, x=x, margin=margin)
        rows = torch.arange(h, device=images.device).view(1, h, 1)
        cols = torch.arange(w, device=images.device).view(1, 1, w)
        for it in range(self.n_queries):
            if self.early_stop:
                fooled = batch.state["margin"] < 0
                batch.retire(fooled, batch.state["x"])
                if not len(batch):
                    return batch.out
            m = len(batch)
            side = max(1, min(h, w, int(round(math.sqrt(p_schedule(self.p_init, it, self.n_queries) * h * w)))))
            top = draw(h - side + 1, (m,)).view(m, 1, 1)
            left = draw(w - side + 1, (m,)).view(m, 1, 1)
            window = ((rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side))[:, None]
            x0, cur = batch.images, batch.state["x"]
            # inside the window: the clean pixel + a fresh +-eps per channel; outside: unchanged
            candidate = torch.where(window, (x0 + eps * signs(m, c, 1, 1)).clamp(0, 1), cur)
            new_margin = self._query(model, candidate, cur, batch.labels, batch.state["margin"])
            better = new_margin < batch.state["margin"]
            batch.state["x"] = torch.where(better.view(-1, 1, 1, 1), candidate, cur)
            batch.state["margin"] = torch.where(better, new_margin, batch.state["margin"])
        if self.early_stop:
            batch.retire(batch.state["margin"] < 0, batch.state["x"])
        return batch.finish(batch.state["x"])

    def _query(self, model, candidate, current, labels, margin):
        """Margins of the candidates. A candidate equal to the current input (its window drew
        the signs already there) is not sent to the model unless ``fast`` is off: its margin is
        the current one, so it would not be kept whatever the answer."""
        if not self.fast:
            return _margin(model(candidate), labels)
        changed = (candidate != current).flatten(1).any(1)
        if bool(changed.all()):
            return _margin(model(candidate), labels)
        out = margin.clone()
        if bool(changed.any()):
            out[changed] = _margin(model(candidate[changed]), labels[changed])
        return out
