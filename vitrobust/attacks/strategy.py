"""How to attack a model: white-box, black-box, transfer from a surrogate, or straight-through.

A model without gradients (INT8) cannot be attacked with a gradient attack directly; the spec
says which strategy to use instead, and the chosen label goes to the report:

- ``None``: white-box for gradient attacks on a differentiable model; black-box for attacks
  that need no gradients; otherwise an AttackError naming the model and what applies.
- ``"white-box"``: the attack's own gradients; the model must be differentiable.
- ``"black-box"``: only for attacks that need no gradients.
- ``"transfer:<surrogate>"``: attack the surrogate (loaded via ``load_model``); the caller
  scores the resulting inputs on the target.
- ``"straight-through"``: ``vitrobust.compress.quantize.straight_through(int8, fp32)``: INT8
  forward, FP32 gradient; the FP32 model is the target's name without its ``:int8`` suffix.
"""
from __future__ import annotations

from typing import Callable

from ..zoo.wrapper import ModelWrapper
from .base import Attack, AttackError, black_box_attacks, check_applicable

STRATEGIES = ("white-box", "black-box", "transfer:<surrogate>", "straight-through")


def resolve_strategy(attack: Attack, model: ModelWrapper, strategy: str | None,
                     load_model: Callable[[str], ModelWrapper]) -> tuple[ModelWrapper, str]:
    """``(model to run the attack on, strategy label)`` for ``attack`` against ``model``."""
    if strategy is None:
        if not attack.needs_grad:
            return model, "black-box"
        if model.info.differentiable:
            return model, "white-box"
        raise AttackError(
            f"{attack.name} needs gradients, but {model.name} has none; use a black-box attack "
            f"({', '.join(black_box_attacks())}) or set strategy 'transfer:<surrogate>' or "
            f"'straight-through'")
    if strategy == "white-box":
        check_applicable(attack, model)
        return model, "white-box"
    if strategy == "black-box":
        if attack.needs_grad:
            raise AttackError(f"strategy black-box: {attack.name} needs gradients; use one of "
                              f"{', '.join(black_box_attacks())}")
        return model, "black-box"
    if strategy.startswith("transfer:"):
        surrogate_name = strategy.split(":", 1)[1].strip()
        if not surrogate_name:
            raise AttackError("strategy transfer: name the surrogate model, e.g. 'transfer:deit_small'")
        surrogate = load_model(surrogate_name)
        if attack.needs_grad and not surrogate.info.differentiable:
            raise AttackError(f"strategy {strategy}: surrogate {surrogate_name} has no gradients "
                              f"either; pick a differentiable surrogate")
        return surrogate, f"transfer:{surrogate_name}"
    if strategy == "straight-through":
        if model.info.differentiable:   # one spec attack serves FP32 and INT8 targets alike
            check_applicable(attack, model)
            return model, "white-box"
        if not model.name.endswith(":int8"):
            raise AttackError(f"strategy straight-through needs an ':int8' model, got {model.name}")
        try:
            from ..compress.quantize import straight_through
        except ImportError:
            raise AttackError("strategy straight-through: vitrobust.compress.quantize.straight_through "
                              "is not available") from None
        fp32 = load_model(model.name[: -len(":int8")])
        return straight_through(model, fp32), "straight-through"
    raise AttackError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
