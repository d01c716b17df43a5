"""One protocol for every attack: a threat model, a seed, and ``attack(model, images, labels)``.

An attack is configured once (its threat model: norm, eps and the rest, every argument with a
default) and then called on a model and a batch of pixel-space images in [0, 1]. It returns
adversarial images of the same shape. Scoring (which images were fooled, on which target) is the
engine's job, so one set of adversarial images serves every target model.

Every attack class declares: ``name``, ``norms`` (the first is its default), ``needs_grad``
(white-box) and ``universal`` (one perturbation fitted on a fit split, scored on another); its
constructor takes ``eps``, ``norm``, ``seed`` and its own parameters, every one with a default.
The class docstring names the paper, the norm and the arguments. :func:`describe` lists them.

Universal attacks (``universal = True``) are fitted on one split and applied to another; they
implement :meth:`UniversalAttack.fit` and return the perturbation.

The registry (names, building from spec parameters, validation) is :mod:`.registry`.
"""
from __future__ import annotations

import hashlib
import inspect
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import VitrobustError
from ..zoo.wrapper import ModelWrapper

NORMS = ("linf", "l2", "l0", "spatial", "none")
UNBOUNDED = "an unbounded minimization attack succeeds almost always and says nothing"


class AttackError(VitrobustError):
    """A bad attack request: unknown name, argument or value, or a gradient attack on a model
    without gradients. The message is one line and names what to do instead.

    ``param`` is the offending parameter key where one is identifiable (a spec loader points at
    its line), else None.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def check_budget(name: str, eps) -> float:
    """``eps`` as a float, or AttackError unless it is a finite positive number."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise AttackError(f"{name}: eps must be a finite positive number ({UNBOUNDED}), got {eps!r}",
                          "eps") from None
    if not (math.isfinite(value) and value > 0):
        raise AttackError(f"{name}: eps must be a finite positive number ({UNBOUNDED}), got {eps!r}", "eps")
    return value


class Attack:
    """Base class. Subclasses set the class attributes and implement :meth:`perturb`."""

    name: ClassVar[str] = ""
    needs_grad: ClassVar[bool] = True    # white-box: needs d(loss)/d(input)
    universal: ClassVar[bool] = False    # one perturbation for all images (fit/eval splits)
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", seed: int = 0,
                 batch_size: int = 256):
        if norm not in self.norms:
            raise AttackError(f"{self.name}: norm {norm!r} not supported; use one of {', '.join(self.norms)}",
                              "norm")
        self.eps = check_budget(self.name, eps)
        self.norm, self.seed, self.batch_size = norm, int(seed), int(batch_size)
        if self.batch_size < 1:
            raise AttackError(f"{self.name}: batch_size must be >= 1, got {batch_size}", "batch_size")

    # -- the threat model, as the report and the adversarial cache see it -----------------------
    def threat_model(self) -> dict:
        """Every constructor argument with its value: the attack's identity.

        ``batch_size`` stays in: random attacks draw their noise per batch, so it can change
        the result (gradient attacks sum the loss over images and do not depend on it).
        """
        return {"attack": self.name, **{k: getattr(self, k) for k in sorted(init_parameters(type(self)))}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.threat_model().items() if k != "attack")
        return f"{self.name}({args})"

    # -- running -------------------------------------------------------------------------------
    def __call__(self, model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Adversarial images, on ``images``' device; each batch is attacked on ``device``
        (default: where ``images`` are). Noise comes from a CPU generator seeded with ``seed``
        and is moved, so a seed gives the same draws on every device."""
        check_applicable(self, model)
        model.eval()
        device = torch.device(device) if device is not None else images.device
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        chunks = [self.perturb(model, x.to(device), y.to(device), generator).to(images.device)
                  for x, y in zip(images.split(self.batch_size), labels.split(self.batch_size))]
        return torch.cat(chunks).detach().clamp_(0, 1)

    def perturb(self, model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class UniversalAttack(Attack):
    """One perturbation fitted on a fit split, then added to every image of a disjoint split.

    Calling a universal attack like any other (``attack(model, images, labels)``) fits on those
    same images and applies to them: that is an upper bound, not a UAP score. The engine uses
    :meth:`fit_eval`, which refuses overlapping splits.
    """

    universal = True

    def fit(self, model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The universal perturbation, shape (1, C, H, W), inside the eps ball."""
        raise NotImplementedError

    @staticmethod
    def apply(delta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return (images + delta).clamp(0, 1)

    def perturb(self, model, images, labels, generator):
        return self.apply(self.fit(model, images, labels), images)

    def __call__(self, model, images, labels, device=None):
        check_applicable(self, model)
        model.eval()
        device = torch.device(device) if device is not None else images.device
        delta = self.fit(model, images.to(device), labels.to(device)).to(images.device)
        return self.apply(delta, images)

    def fit_eval(self, model: ModelWrapper, fit_data, eval_data,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit on ``fit_data``, apply to ``eval_data``; ``(delta, adversarial eval images)``.

        Each data argument is a ``Dataset`` (``.images``, ``.labels``) or an ``(images, labels)``
        pair. An image present in both splits (same content hash) is an AttackError: a UAP
        scored on its own fit images measures memorization, not universality. The fit runs on
        ``device`` (default: where the fit images are); delta and images come back beside
        ``eval_data``.
        """
        fit_x, fit_y = _unpack(fit_data)
        eval_x, _ = _unpack(eval_data)
        shared = set(image_hashes(fit_x)) & set(image_hashes(eval_x))
        if shared:
            raise AttackError(f"{self.name}: fit and eval splits share {len(shared)} image(s); "
                              f"fit a universal perturbation on a disjoint split (e.g. val) and score on test")
        check_applicable(self, model)
        model.eval()
        device = torch.device(device) if device is not None else fit_x.device
        delta = self.fit(model, fit_x.to(device), fit_y.to(device)).detach().to(eval_x.device)
        return delta, self.apply(delta, eval_x)


def _unpack(data) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    images, labels = data
    return images, labels


def image_hashes(images: torch.Tensor) -> list[str]:
    """A sha256 of each image's float32 bytes: equal content, equal hash."""
    array = np.ascontiguousarray(images.detach().to(torch.float32).cpu().numpy())
    return [hashlib.sha256(a.tobytes()).hexdigest() for a in array]


def check_applicable(attack: Attack, model: ModelWrapper) -> None:
    """AttackError unless ``model`` can take ``attack`` directly (gradients where it needs them)."""
    if attack.needs_grad and not model.info.differentiable:
        from .registry import black_box_attacks   # the registry imports this module

        raise AttackError(
            f"{attack.name} needs gradients, but {model.name} has none (quantized); attack it with "
            f"a black-box attack ({', '.join(black_box_attacks()) or 'none registered'}), by "
            f"transfer from a surrogate (strategy 'transfer:<model>'), or with strategy 'straight-through'")


def input_gradient(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor,
                   loss: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d images, logits) for a batch: one forward and one backward pass.

    The loss is summed over images, so each image's gradient is its own (batch-independent).
    """
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        value = F.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(value, x)
    if grad is None:  # a model without gradients that slipped past check_applicable
        raise AttackError(f"{model.name}: no input gradient (non-differentiable model)")
    return grad, logits.detach()


def _signatures(cls: type) -> list[inspect.Signature]:
    """Constructor signatures from ``cls`` up the hierarchy, stopping at the first one without
    ``**kwargs`` (a subclass that lists its arguments hides its parents' ones)."""
    sigs = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not object:
            sig = inspect.signature(klass.__init__)
            sigs.append(sig)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
                break
    return sigs


def _arguments(cls: type):
    for sig in _signatures(cls):
        for p in sig.parameters.values():
            if p.name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                   inspect.Parameter.VAR_KEYWORD):
                yield p


def init_parameters(cls: type) -> set[str]:
    """Names of every constructor argument ``cls`` accepts."""
    return {p.name for p in _arguments(cls)}


def init_defaults(cls: type) -> dict:
    """Every constructor argument with its default (the most derived class wins)."""
    defaults: dict = {}
    for p in _arguments(cls):
        if p.name not in defaults and p.default is not inspect.Parameter.empty:
            defaults[p.name] = p.default
    return {k: defaults[k] for k in sorted(defaults)}
