"""One protocol for every attack: a threat model, a seed, and ``attack(model, images, labels)``.

An attack is configured once (its threat model: norm, eps and the rest, every argument with a
default) and then called on a model and a batch of pixel-space images in [0, 1]. It returns
adversarial images of the same shape. Scoring (which images were fooled, on which target) is the
engine's job, so one set of adversarial images serves every target model.

Universal attacks (``universal = True``) are fitted on one split and applied to another; they
implement :meth:`UniversalAttack.fit` and return the perturbation.
"""
from __future__ import annotations

import inspect
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..zoo.wrapper import ModelWrapper

NORMS = ("linf", "l2", "l0", "spatial", "none")


class AttackError(ValueError):
    """A bad attack request: unknown name or argument, or a gradient attack on a model without
    gradients. The message is one line and names what to do instead."""


class Attack:
    """Base class. Subclasses set the class attributes and implement :meth:`perturb`."""

    name: ClassVar[str] = ""
    needs_grad: ClassVar[bool] = True    # white-box: needs d(loss)/d(input)
    universal: ClassVar[bool] = False    # one perturbation for all images (fit/eval splits)
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", seed: int = 0,
                 batch_size: int = 256):
        if norm not in self.norms:
            raise AttackError(f"{self.name}: norm {norm!r} not supported; use one of {', '.join(self.norms)}")
        if not eps > 0:
            raise AttackError(f"{self.name}: eps must be > 0 (an unbounded attack says nothing), got {eps}")
        self.eps, self.norm, self.seed, self.batch_size = float(eps), norm, int(seed), int(batch_size)

    # -- the threat model, as the report and the adversarial cache see it -----------------------
    def threat_model(self) -> dict:
        """Every constructor argument with its value: the attack's identity."""
        return {"attack": self.name, **{k: getattr(self, k) for k in sorted(init_parameters(type(self)))}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.threat_model().items() if k != "attack")
        return f"{self.name}({args})"

    # -- running -------------------------------------------------------------------------------
    def __call__(self, model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_applicable(self, model)
        model.eval()
        generator = torch.Generator().manual_seed(self.seed)
        chunks = [self.perturb(model, x, y, generator)
                  for x, y in zip(images.split(self.batch_size), labels.split(self.batch_size))]
        return torch.cat(chunks).detach().clamp_(0, 1)

    def perturb(self, model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class UniversalAttack(Attack):
    """One perturbation fitted on a fit split, then added to every image of a disjoint split."""

    universal = True

    def fit(self, model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def apply(delta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return (images + delta).clamp(0, 1)


def check_applicable(attack: Attack, model: ModelWrapper) -> None:
    if attack.needs_grad and not model.info.differentiable:
        raise AttackError(
            f"{attack.name} needs gradients, but {model.name} has none (quantized); attack it with "
            f"a black-box attack ({', '.join(black_box_attacks()) or 'none registered'}), by "
            f"transfer from a surrogate, or with a straight-through strategy")


def input_gradient(model: ModelWrapper, images: torch.Tensor, labels: torch.Tensor,
                   loss: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d images, logits) for a batch: one forward and one backward pass."""
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        value = F.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(value, x)
    return grad, logits.detach()


def init_parameters(cls: type) -> set[str]:
    """Names of every constructor argument along the class hierarchy."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not object:
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kwargs"}
    return names


# -- the registry -------------------------------------------------------------------------------
_ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    _ATTACKS[cls.name] = cls
    return cls


def attack_class(name: str) -> type[Attack]:
    _ensure_loaded()
    try:
        return _ATTACKS[name]
    except KeyError:
        raise AttackError(f"unknown attack {name!r}; known: {', '.join(sorted(_ATTACKS))}") from None


def make_attack(name: str, **params) -> Attack:
    """Build attack ``name`` from spec parameters; unknown parameters are a clear error."""
    cls = attack_class(name)
    accepted = init_parameters(cls)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise AttackError(f"{name}: unknown parameter {unknown[0]!r}; accepted: {', '.join(sorted(accepted))}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise AttackError(f"{name}: {exc}") from None


def list_attacks() -> list[str]:
    _ensure_loaded()
    return sorted(_ATTACKS)


def black_box_attacks() -> list[str]:
    return sorted(n for n, c in _ATTACKS.items() if not c.needs_grad)


def _ensure_loaded() -> None:
    from . import fgsm, pgd  # noqa: F401  (importing runs @register_attack)
