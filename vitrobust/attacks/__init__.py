"""Attacks: one registry, one protocol (see ``base.py``), one module per attack or family."""
from .base import (Attack, AttackError, UniversalAttack, attack_class, black_box_attacks,
                   check_applicable, list_attacks, make_attack, register_attack)

__all__ = ["Attack", "AttackError", "UniversalAttack", "attack_class", "black_box_attacks",
           "check_applicable", "list_attacks", "make_attack", "register_attack"]
