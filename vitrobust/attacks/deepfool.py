"""DeepFool, L2 and L-inf, batched over images and vectorised over candidate classes.

Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016. At each step the classifier is linearized around the current input and
the input moves to the nearest linearized decision boundary among the top-k candidate classes,
times (1 + overshoot).

DeepFool is a *minimization* attack: unbounded, it almost always succeeds and says nothing.
Here it runs under an explicit eps budget: every iterate is projected onto the eps ball (in the
attack's norm) around the clean image and clipped to [0, 1] before the model sees it, so what
is checked for success is exactly what is returned. Inside the ball this is DeepFool; where the
projection binds it is a projected DeepFool that keeps pushing toward the boundary.
"""
from __future__ import annotations

import torch

from .active import ActiveBatch
from .base import Attack, AttackError
from .projection import project
from .registry import register_attack


def candidate_gradients(model, x: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor):
    """Logits (N, C), f (N, k) = logit_c - logit_label and w (k, N, ...) = d f / d x, for the
    ``candidates`` (N, k) of each image: one forward and one batched backward."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        k = candidates.shape[1]
        rows = torch.arange(len(x), device=x.device)
        heads = torch.arange(k, device=x.device)[:, None]
        # grad_outputs[j, n] selects logit[cand[n, j]] - logit[label[n]] of image n
        go = torch.zeros(k, *logits.shape, dtype=logits.dtype, device=logits.device)
        go[heads, rows[None], candidates.T] = 1.0
        go[heads, rows[None], labels[None].expand(k, -1)] -= 1.0
        try:
            (w,) = torch.autograd.grad(logits, x, go, is_grads_batched=True)
        except RuntimeError:  # an op without a batching rule: one backward per candidate
            w = torch.stack([torch.autograd.grad(logits, x, go[j], retain_graph=j < k - 1)[0]
                             for j in range(k)])
    logits = logits.detach()
    f = logits.gather(1, candidates) - logits.gather(1, labels[:, None])
    return logits, f, w


def deepfool(model, images: torch.Tensor, labels: torch.Tensor, *, norm: str, steps: int,
             overshoot: float, candidates: int, eps: float | None, early_stop: bool = True) -> torch.Tensor:
    """Batched DeepFool; ``eps=None`` runs it unbounded (used inside UAP-DeepFool)."""
    with torch.inference_mode():
        clean_logits = model(images)
    k = min(int(candidates), clean_logits.shape[1])
    # Candidates: the top-k classes of the clean input, the true label excluded.
    order = clean_logits.clone().scatter_(1, labels[:, None], float("-inf")).argsort(1, descending=True)
    cand = order[:, : k - 1].clone()
    batch = ActiveBatch(images, labels, total=torch.zeros_like(images), cand=cand)

    def current():
        step = (1 + overshoot) * batch.state["total"]
        if eps is not None:
            step = project(step, eps, norm)
        return (batch.images + step).clamp(0, 1)

    for _ in range(steps + 1):
        x = current()
        logits, f, w = candidate_gradients(model, x, batch.labels, batch.state["cand"])
        fooled = logits.argmax(1) != batch.labels
        if bool(fooled.all()):
            batch.retire(fooled, x)
            break
        if early_stop and bool(fooled.any()):
            keep = ~fooled
            f, w = f[keep], w[:, keep]
            batch.retire(fooled, x)
            x, fooled = x[keep], fooled[keep]
        if _ == steps:  # the last pass only checks
            break
        flat = w.flatten(2)                                     # (k, N, D)
        dual = flat.norm(dim=2) if norm == "l2" else flat.abs().sum(2)   # (k, N)
        dist = f.abs().T / (dual + 1e-8)                        # (k, N)
        best = dist.argmin(0)                                   # (N,)
        cols = torch.arange(len(best), device=best.device)
        wb, fb, nb = w[best, cols], f.abs()[cols, best], dual[best, cols]
        shape = (-1, *([1] * (images.dim() - 1)))
        if norm == "l2":
            r = ((fb + 1e-4) / (nb ** 2 + 1e-8)).view(shape) * wb
        else:
            r = ((fb + 1e-4) / (nb + 1e-8)).view(shape) * wb.sign()
        if not early_stop:  # fooled images stay in the batch but do not move
            r = r * (~fooled).view(shape)
        batch.state["total"] = batch.state["total"] + r
    return batch.finish(current())


@register_attack
class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016), L2 or L-inf, projected onto an eps budget.

    Args: eps (budget; 8/255 L-inf; every iterate is projected onto the eps ball), norm ('linf'
    | 'l2'), steps (50), overshoot (0.02), candidates (top-k classes searched, 10),
    early_stop (True: fooled images leave the batch; DeepFool stops per image by definition,
    False only keeps them in the batch without moving them), seed (unused), batch_size.
    """

    name = "deepfool"
    norms = ("linf", "l2")

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", steps: int = 50,
                 overshoot: float = 0.02, candidates: int = 10, early_stop: bool = True,
                 seed: int = 0, batch_size: int = 256):
        super().__init__(eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps, self.overshoot, self.candidates = int(steps), float(overshoot), int(candidates)
        self.early_stop = bool(early_stop)
        if self.steps < 1 or self.candidates < 2 or self.overshoot < 0:
            raise AttackError(f"{self.name}: need steps >= 1, candidates >= 2, overshoot >= 0")

    def perturb(self, model, images, labels, generator):
        return deepfool(model, images, labels, norm=self.norm, steps=self.steps,
                        overshoot=self.overshoot, candidates=self.candidates, eps=self.eps,
                        early_stop=self.early_stop)
