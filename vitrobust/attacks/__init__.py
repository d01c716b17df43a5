"""Attacks: one protocol (``base.py``), one registry (``registry.py``), one module per attack or
family, and the strategies that reach models without gradients (``strategy.py``)."""
from .base import Attack, AttackError, UniversalAttack, check_applicable
from .registry import (attack_class, black_box_attacks, describe, list_attacks, make_attack,
                       register_attack, validate_attack)
from .straight_through import straight_through
from .strategy import resolve_strategy

__all__ = ["Attack", "AttackError", "UniversalAttack", "attack_class", "black_box_attacks",
           "check_applicable", "describe", "list_attacks", "make_attack", "register_attack",
           "resolve_strategy", "straight_through", "validate_attack"]
