"""How to attack a model: white-box, black-box, straight-through, or transfer from a surrogate.

A model without gradients (INT8) cannot be attacked with a gradient attack directly; the spec
says which strategy to use instead (:data:`vitrobust.defaults.STRATEGIES`), and the chosen
label goes to the report and into the adversarial cache key:

- ``None``: white-box for gradient attacks on a differentiable model; black-box for attacks
  that need no gradients; otherwise an AttackError naming the model and what applies.
- ``"white-box"``: the attack's own gradients; the model must be differentiable.
- ``"black-box"``: only for attacks that need no gradients.
- ``"straight-through"``: the model's forward with the gradients of the surrogate it declares
  (``ModelInfo.surrogate``, e.g. ``deit_tiny:int8`` -> ``deit_tiny``); see
  :mod:`.straight_through`.
- ``"transfer"``: attack the model's declared surrogate; the caller scores the inputs on the
  target. Labelled ``transfer:<surrogate>``, as if the surrogate had been named.
- ``"transfer:<model>"``: attack the named model instead.

A spec attack with ``straight-through`` or bare ``transfer`` also serves differentiable targets
(one attack for ``deit_tiny`` and ``deit_tiny:int8``): a differentiable model that declares no
surrogate is attacked white-box, through its own gradients. Surrogates are loaded with the
``load_model`` callable the caller passes (the engine's, which knows the run's zoo).
"""
from __future__ import annotations

from typing import Callable

from ..defaults import StrategyError, parse_strategy
from ..zoo.wrapper import ModelWrapper
from .base import Attack, AttackError, check_applicable
from .registry import black_box_attacks
from .straight_through import straight_through

LoadModel = Callable[[str], ModelWrapper]


def resolve_strategy(attack: Attack, model: ModelWrapper, strategy: str | None,
                     load_model: LoadModel) -> tuple[ModelWrapper, str]:
    """``(model to run the attack on, strategy label)`` for ``attack`` against ``model``."""
    if strategy is None:
        if not attack.needs_grad:
            return model, "black-box"
        if model.info.differentiable:
            return model, "white-box"
        raise AttackError(
            f"{attack.name} needs gradients, but {model.name} has none; use a black-box attack "
            f"({', '.join(black_box_attacks())}) or set strategy 'straight-through', 'transfer' "
            f"(from its declared surrogate) or 'transfer:<model>'")
    try:
        kind, named = parse_strategy(strategy)
    except StrategyError as exc:
        raise AttackError(str(exc)) from None
    if kind == "white-box":
        check_applicable(attack, model)
        return model, "white-box"
    if kind == "black-box":
        if attack.needs_grad:
            raise AttackError(f"strategy black-box: {attack.name} needs gradients; use one of "
                              f"{', '.join(black_box_attacks())}")
        return model, "black-box"
    if kind == "straight-through":
        if model.info.differentiable:   # one spec attack serves FP32 and INT8 targets alike
            check_applicable(attack, model)
            return model, "white-box"
        surrogate = _surrogate(attack, kind, declared_surrogate(model, kind), load_model)
        return straight_through(model, surrogate), "straight-through"
    # transfer
    if named is None:
        if model.info.surrogate is None and model.info.differentiable:
            check_applicable(attack, model)
            return model, "white-box"
        named = declared_surrogate(model, kind)
    return _surrogate(attack, f"transfer:{named}", named, load_model), f"transfer:{named}"


def declared_surrogate(model: ModelWrapper, strategy: str) -> str:
    """The surrogate ``model`` declares, or an AttackError saying what to use instead."""
    if model.info.surrogate is None:
        raise AttackError(f"strategy {strategy}: {model.name} declares no gradient surrogate "
                          f"(a compression declares one with register_compression(..., "
                          f"surrogate='parent')); name one with 'transfer:<model>' or use a "
                          f"black-box attack")
    return model.info.surrogate


def _surrogate(attack: Attack, strategy: str, name: str, load_model: LoadModel) -> ModelWrapper:
    surrogate = load_model(name)
    if attack.needs_grad and not surrogate.info.differentiable:
        raise AttackError(f"strategy {strategy}: surrogate {name} has no gradients either; "
                          f"pick a differentiable surrogate")
    return surrogate
