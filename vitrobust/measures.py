"""The measure registry: every quantity a check can name, declared once (no torch).

A measure is a function registered with :func:`register_measure`, which states

- its **arguments**: ``model``, ``model, attack`` or ``source -> model, attack`` (the check
  language parses exactly these shapes, see :mod:`vitrobust.expr`);
- whether it is a **rate** over the images of the data slice: then it returns per-image outcomes
  and gets Wilson intervals, paired McNemar tests and the gate's paired comparison;
- which **direction is worse** (``"higher"``, ``"lower"`` or ``None``): the release gate flags a
  move that way beyond its margin as a regression; ``None`` is never gated;
- and **how it is computed**: the function itself, called as ``fn(ctx, measure)``.

``ctx`` is the session's engine (:class:`vitrobust.engine.Engine`); a measure uses only these
methods of it, all returning numpy arrays or numbers, so this module needs no torch:

- ``ctx.clean_correct(model)``: bool per image, the model is right on the clean image;
- ``ctx.fooled(source, target, aliases)``: bool per image, an adversarial input made on ``source``
  by any of the attack ``aliases`` makes ``target`` misclassify it (worst case per image);
- ``ctx.model_value(model, key)``: one number of the model summary (``params``, ``size_mb``...).

A rate returns an :class:`Observation` whose outcomes are 1.0 (success),
0.0 or NaN (not in the denominator); a constant returns a float. Adding a measure is one
function here (or in a module that registers its own) plus its test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .errors import VitrobustError

SIGNATURES = ("model", "model, attack", "source -> model, attack")
DIRECTIONS = ("higher", "lower", None)
RESERVED = ("monotonic", "any")   # words the check language gives another meaning


class MeasureError(VitrobustError):
    """An unknown measure or a bad declaration."""


@dataclass(eq=False)
class Observation:
    """One measured quantity: its value and, for rates, per-image outcomes (1.0 success, 0.0
    not, NaN not in the denominator). Outcomes are checked here, so a bad array fails early."""

    value: float
    outcomes: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.outcomes is not None:
            o = np.asarray(self.outcomes, dtype=float)
            if o.ndim != 1:
                raise MeasureError(f"outcomes must be 1-D (one per image), got shape {o.shape}")
            ok = np.isnan(o) | (o == 0) | (o == 1)
            if not ok.all():
                raise MeasureError("outcomes must be 1.0, 0.0 or NaN, got "
                                   f"{o[~ok][0]!r} at image {int(np.flatnonzero(~ok)[0])}")
            self.outcomes = o

    @property
    def counts(self) -> Optional[tuple]:
        """``(k, n)``: successes and denominator (non-NaN images); None without outcomes."""
        if self.outcomes is None:
            return None
        valid = ~np.isnan(self.outcomes)
        return int(self.outcomes[valid].sum()), int(valid.sum())


@dataclass(frozen=True)
class MeasureKind:
    """One registered measure (see the module docstring)."""

    name: str
    args: str                      # one of SIGNATURES
    rate: bool                     # a fraction over images, with per-image outcomes
    worse: str | None              # "higher" | "lower" | None: which way the gate flags
    about: str
    compute: Callable

    @property
    def takes_attack(self) -> bool:
        return self.args != "model"

    @property
    def takes_source(self) -> bool:
        return self.args.startswith("source")


_MEASURES: dict[str, MeasureKind] = {}


def register_measure(*, args: str = "model", rate: bool = False, worse: str | None = None):
    """Register the decorated ``fn(ctx, measure)`` under its own name."""
    if args not in SIGNATURES:
        raise MeasureError(f"measure args must be one of {SIGNATURES}, got {args!r}")
    if worse not in DIRECTIONS:
        raise MeasureError(f"measure worse must be one of {DIRECTIONS}, got {worse!r}")

    def wrap(fn):
        if fn.__name__ in RESERVED:
            raise MeasureError(f"{fn.__name__!r} is a word of the check language, not a measure name")
        doc = (fn.__doc__ or "").strip().splitlines()
        _MEASURES[fn.__name__] = MeasureKind(fn.__name__, args, rate, worse, doc[0] if doc else "", fn)
        return fn

    return wrap


def measure_kind(name: str) -> MeasureKind:
    try:
        return _MEASURES[name]
    except KeyError:
        raise MeasureError(f"unknown measure {name!r} (known: {', '.join(list_measures())})") from None


def list_measures() -> list[str]:
    return list(_MEASURES)


def is_measure(name: str) -> bool:
    return name in _MEASURES


def rate_kinds(worse: str | None | bool = False) -> tuple[str, ...]:
    """Names of the rate measures; with ``worse`` given, only those worse in that direction."""
    return tuple(k.name for k in _MEASURES.values()
                 if k.rate and (worse is False or k.worse == worse))


def rate(outcomes: np.ndarray) -> Observation:
    """An observation from per-image outcomes (1.0 / 0.0 / NaN): value = successes / denominator."""
    outcomes = np.asarray(outcomes, dtype=float)
    valid = ~np.isnan(outcomes)
    n = int(valid.sum())
    return Observation(float(outcomes[valid].sum()) / n if n else float("nan"), outcomes)


def _over_correct(clean: np.ndarray, success: np.ndarray) -> Observation:
    """Success among the images ``clean`` marks correct; the others are NaN (not counted)."""
    return rate(np.where(clean, success.astype(float), np.nan))


# -- rates over images ---------------------------------------------------------------------------
@register_measure(args="model, attack", rate=True, worse="higher")
def asr(ctx, m) -> Observation:
    """Attack success rate: among images MODEL gets right clean, the fraction the attack fools."""
    clean = ctx.clean_correct(m.model)
    return _over_correct(clean, clean & ctx.fooled(m.model, m.model, m.attack.names))


@register_measure(args="source -> model, attack", rate=True, worse="higher")
def transfer(ctx, m) -> Observation:
    """Transfer ASR: adversarial inputs made on SOURCE, scored on MODEL over images it gets right clean."""
    clean = ctx.clean_correct(m.model)
    return _over_correct(clean, clean & ctx.fooled(m.source, m.model, m.attack.names))


@register_measure(args="model", rate=True, worse="lower")
def acc(ctx, m) -> Observation:
    """Clean accuracy over every image of the slice."""
    return rate(ctx.clean_correct(m.model).astype(float))


@register_measure(args="model, attack", rate=True, worse="lower")
def robust_acc(ctx, m) -> Observation:
    """Robust accuracy: over every image of the slice, right clean and still right under attack."""
    clean = ctx.clean_correct(m.model)
    return rate((clean & ~ctx.fooled(m.model, m.model, m.attack.names)).astype(float))


# -- one number per model ------------------------------------------------------------------------
@register_measure()
def size_mb(ctx, m) -> float:
    """Serialized state_dict size in MB (1e6 bytes)."""
    return ctx.model_value(m.model, "size_mb")


@register_measure()
def gflops(ctx, m) -> float:
    """Multiply-accumulates per image, in G (attention included even where fused)."""
    return ctx.model_value(m.model, "gflops")


@register_measure()
def throughput(ctx, m) -> float:
    """Images per second (compared side by side when a check names several)."""
    return ctx.model_value(m.model, "throughput")


@register_measure()
def params(ctx, m) -> float:
    """Parameters, each shared tensor once."""
    return ctx.model_value(m.model, "params")


@register_measure()
def keep_ratio(ctx, m) -> float:
    """Fraction of patch tokens kept, mean over the pruning stages, measured on the slice (1.0 unpruned)."""
    return ctx.keep_ratio(m.model)
