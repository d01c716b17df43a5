"""Norm-ball geometry shared by gradient attacks: step directions, projections, random starts."""
from __future__ import annotations

import math

import torch


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def normalized_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size in ``norm``."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        return grad / _flat_norm(grad)
    raise ValueError(f"no gradient step for norm {norm!r}")


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The closest point to ``delta`` inside the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        return delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    raise ValueError(f"no projection for norm {norm!r}")


def random_start(shape, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniform sample from the ``norm`` ball (L-inf: per pixel; L2: direction x radius), on
    the generator's device (the caller moves it)."""
    where = generator.device
    if norm == "linf":
        return (torch.rand(shape, generator=generator, device=where) * 2 - 1) * eps
    if norm == "l2":
        direction = torch.randn(shape, generator=generator, device=where)
        direction = direction / _flat_norm(direction)
        dims = math.prod(shape[1:])
        radius = torch.rand(shape[0], generator=generator, device=where) ** (1.0 / dims) * eps
        return direction * radius.view(-1, *([1] * (len(shape) - 1)))
    raise ValueError(f"no random start for norm {norm!r}")


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image size of ``delta`` in ``norm`` (l0 counts changed pixels over channels)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l0":
        return (delta.abs().amax(1) > 0).flatten(1).sum(1).float()
    raise ValueError(f"no measure for norm {norm!r}")
