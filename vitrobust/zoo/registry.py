"""A timm-style registry: ``@register_model`` on a builder function registers it by its name."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..errors import VitrobustError


class UnknownModelError(VitrobustError):
    """A model name whose base is not registered; the message lists the registered ones."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered base model: how to build it and, for the default zoo, how to train it."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    data: str | None            # data source it is trained on; None: random weights or checkpoint
    recipe: dict = field(default_factory=dict)   # training recipe (part of the cache key)
    input_size: int = 32
    about: str = ""
    # (mean, std) the net expects; None: ImageNet's for random/checkpoint models, 0.5 for trained
    mean_std: tuple | None = None


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn=None, *, family: str = "vit", data: str | None = "digits",
                   recipe: dict | None = None, input_size: int = 32):
    """Register ``fn`` under its own name. Usable bare or with keyword arguments."""

    def wrap(builder):
        doc = (builder.__doc__ or "").strip().splitlines()
        _MODELS[builder.__name__] = ModelEntry(
            builder.__name__, builder, family, data, dict(recipe or {}), input_size,
            doc[0] if doc else "")
        return builder

    return wrap(fn) if fn is not None else wrap


def model_entry(name: str) -> ModelEntry:
    """The registered base ``name`` (no suffixes), or UnknownModelError listing the known ones."""
    _ensure_loaded()
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models(pattern: str = "*") -> list[str]:
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_registered(name: str) -> bool:
    _ensure_loaded()
    return name in _MODELS


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators.
    from . import cnn, deit  # noqa: F401
