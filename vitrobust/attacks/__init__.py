"""Attacks: one registry, one protocol (see ``base.py``), one module per attack or family."""
from .base import (Attack, AttackError, UniversalAttack, attack_class, black_box_attacks,
                   check_applicable, describe, list_attacks, make_attack, register_attack)
from .strategy import resolve_strategy

__all__ = ["Attack", "AttackError", "UniversalAttack", "attack_class", "black_box_attacks",
           "check_applicable", "describe", "list_attacks", "make_attack", "register_attack",
           "resolve_strategy"]
