"""Sanity checks that make a robustness number trustworthy, as warning dicts for the report.

Each function returns a list of ``{"kind", "message"}`` dicts (empty when all is well):

- ``zero-gradient``: zero or NaN input gradients on a batch (gradient masking, a detached or
  quantized path): gradient attacks then fail silently and robustness looks better than it is.
- ``black-box-beats-white-box``: on a differentiable model a black-box attack should not beat
  every white-box attack at a comparable budget; if it does, the gradient attacks are likely
  broken or masked (Carlini et al., "On Evaluating Adversarial Robustness", 2019).
- ``nondeterministic``: two identical calls give different logits (dropout left on, per-batch
  quantization scales): per-image outcomes are then not reproducible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_warnings(model, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Warn when the loss's input gradient is NaN, or exactly zero, for some images."""
    if not getattr(model.info, "differentiable", True):
        return []
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        grad = torch.autograd.grad(loss, x, allow_unused=True)[0]
    name = model.info.name
    if grad is None:
        return [{"kind": "zero-gradient", "message": f"{name}: the loss has no gradient w.r.t. the input"}]
    flat = grad.flatten(1)
    nan = int(torch.isnan(flat).any(1).sum())
    zero = int((flat.abs().amax(1) == 0).sum())
    out = []
    if nan:
        out.append({"kind": "zero-gradient",
                    "message": f"{name}: NaN input gradient on {nan}/{len(flat)} images"})
    if zero:
        out.append({"kind": "zero-gradient",
                    "message": f"{name}: zero input gradient on {zero}/{len(flat)} images "
                               f"(gradient masking? gradient attacks will report false robustness)"})
    return out


def black_box_beats_white_box(results: dict, model_name: str, margin: float = 0.0) -> list[dict]:
    """Warn where a black-box attack beat every white-box attack that had at least its budget.

    ``results``: attack name -> ``(asr, needs_grad, norm, eps)`` on one differentiable model and
    one data slice. A gradient attack with the same norm and an equal or larger eps should do at
    least as well as a query attack; when it does not, its gradients are suspect (masking, too
    few steps). Attacks of other threat models (L2 vs L-inf, rotations) are not comparable.
    """
    warnings = []
    for name, (asr, needs_grad, norm, eps) in sorted(results.items()):
        if needs_grad or eps is None:
            continue
        rivals = {w: r[0] for w, r in results.items()
                  if r[1] and r[2] == norm and r[3] is not None and r[3] >= eps - 1e-12}
        if not rivals:
            continue
        best = max(rivals, key=rivals.get)
        if asr > rivals[best] + margin:
            warnings.append({
                "kind": "black-box-beats-white-box",
                "message": f"{model_name}: black-box {name} (ASR {asr:.3f}, {norm} eps {eps:.4g}) beats "
                           f"every white-box attack with at least its budget, best {best} (ASR "
                           f"{rivals[best]:.3f}); check the gradient attacks (masked gradients, too few steps?)"})
    return warnings


def determinism_warning(model, images: torch.Tensor, atol: float = 1e-5) -> list[dict]:
    """Warn when two identical forward passes disagree by more than ``atol``."""
    model.eval()
    with torch.inference_mode():
        first, second = model(images), model(images)
    diff = (first - second).abs().max().item()
    if diff > atol or torch.isnan(first).any():
        return [{"kind": "nondeterministic",
                 "message": f"{model.info.name}: two identical calls differ by up to {diff:.3g} "
                            f"(dropout in eval, stochastic layers?); per-image outcomes are not reproducible"}]
    return []
