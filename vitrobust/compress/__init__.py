"""Compressions as name suffixes: ``deit_small:int8``, ``deit_small:prune0.7``, ``:mini``...

Each compression lives in its own module and registers an ``apply`` function with
``@register_compression``. ``apply(base, name=..., progress=..., **params)`` receives the built
base :class:`ModelWrapper` and returns a new wrapper for the compressed variant (trained from
the base and cached through :func:`vitrobust.zoo.build.trained_variant` where training is needed).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..zoo.wrapper import ModelWrapper

# The variants every default-zoo size gets (see `vitrobust zoo list`).
DEFAULT_VARIANTS = ("int8", "prune0.7", "prune0.6", "prune0.5", "mini", "distilled", "bornagain")


class CompressionError(ValueError):
    """An unknown or malformed suffix; the message is one line and lists the known ones."""


@dataclass(frozen=True)
class Compression:
    prefix: str
    pattern: re.Pattern
    apply: Callable[..., ModelWrapper]
    about: str


_COMPRESSIONS: dict[str, Compression] = {}


def register_compression(prefix: str, pattern: str | None = None, about: str = ""):
    """Register ``apply`` for suffixes matching ``pattern`` (default: exactly ``prefix``).

    Named groups of the pattern become keyword arguments of ``apply`` (as floats when numeric).
    """

    def wrap(apply):
        regex = re.compile(pattern or re.escape(prefix))
        doc = (apply.__doc__ or "").strip().splitlines()
        _COMPRESSIONS[prefix] = Compression(prefix, regex, apply, about or (doc[0] if doc else ""))
        return apply

    return wrap


def parse_suffix(suffix: str) -> tuple[Compression, dict]:
    _ensure_loaded()
    for comp in _COMPRESSIONS.values():
        match = comp.pattern.fullmatch(suffix)
        if match:
            return comp, {k: _number(v) for k, v in match.groupdict().items() if v is not None}
    known = ", ".join(sorted(c.pattern.pattern for c in _COMPRESSIONS.values()))
    raise CompressionError(f"unknown compression suffix {suffix!r}; known: {known}")


def apply_compression(model: ModelWrapper, suffix: str, name: str, progress: bool = True) -> ModelWrapper:
    comp, params = parse_suffix(suffix)
    return comp.apply(model, name=name, progress=progress, **params)


def list_compressions() -> list[Compression]:
    _ensure_loaded()
    return sorted(_COMPRESSIONS.values(), key=lambda c: c.prefix)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _ensure_loaded() -> None:
    # Importing a compression module runs its @register_compression. Each module is optional
    # while the set grows: a missing one simply is not registered.
    import importlib

    for module in ("quantize", "prune", "multiplex", "distill", "advtrain"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise
