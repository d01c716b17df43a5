"""A spec's ``attacks:`` section: alias -> registry name, parameters and strategy, each checked
when the spec is loaded, so a typo'd parameter is a one-line error naming its line rather than a
failure an hour into a run.

The attacks themselves are not known here (this side of the project imports no torch): the
loader is handed ``check_attack(name, params)``, which raises a
:class:`~vitrobust.errors.VitrobustError` for an unknown attack, an unknown parameter or a bad
value, optionally with an attribute ``param`` naming the offending parameter key. The plugin
passes :func:`vitrobust.attacks.validate_attack`.

Numeric strings in parameters (``"8/255"``, ``"0.5"``, ``"1e-3"``) become floats through a
small fraction parser, never ``eval``. An attack may be written as ``alias: registry_name``.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from .defaults import StrategyError, parse_strategy
from .errors import VitrobustError
from .names import ModelName, ModelNameError
from .spec_bounds import ATTACK_PARAMS, over_bound
from .spec_model import Where
from .yamllines import key_line, value_line

__all__ = ["parse_number", "parse_attacks", "CheckAttack"]

CheckAttack = Callable[[str, dict], None]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")     # an alias is part of check text and test ids
# ASCII digits only: '\d' would also read look-alikes such as '٨/٢٥٥' as 8/255
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_FRACTION = re.compile(rf"\s*([+-]?{_NUM})\s*(?:/\s*({_NUM})\s*)?\Z")


def parse_number(value):
    """``"8/255"`` -> 0.0313..., ``"1e-3"`` -> 0.001, ``"0.5"`` -> 0.5; numbers pass through;
    any other value is returned unchanged. Raises :class:`ZeroDivisionError` on ``x/0``."""
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            num = float(m.group(1))
            if m.group(2) is None:
                return num
            den = float(m.group(2))
            if den == 0:
                raise ZeroDivisionError(f"division by zero in {value!r}")
            return num / den
    return value


def _convert(value, where: Where, line: int, key: str):
    if isinstance(value, list):
        return [_convert(v, where, line, key) for v in value]
    try:
        return parse_number(value)
    except ZeroDivisionError as e:
        raise where.error(line, key, str(e)) from None


def _check_strategy(strategy, where: Where, line: int, key: str, known_models) -> None:
    """A strategy of :data:`vitrobust.defaults.STRATEGIES`; a named surrogate must be a model."""
    try:
        _, surrogate = parse_strategy(strategy)
    except StrategyError as e:
        raise where.error(line, key, str(e)) from None
    if surrogate is None:
        return
    try:
        surrogate = ModelName(surrogate)
    except ModelNameError as e:
        raise where.error(line, key, str(e)) from None
    if known_models is not None and not known_models(surrogate):
        raise where.error(line, key, f"unknown model {surrogate!r}")


def _one_attack(alias, entry, where: Where, eline: int, known_models,
                check_attack: Optional[CheckAttack]) -> dict:
    """One entry; ``eline`` is the line its alias is written on."""
    key = f"attacks.{alias}"
    if isinstance(entry, str):            # shorthand: `fgsm: fgsm`
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise where.error(eline, key, f"must be a mapping with 'name', got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise where.error(eline, key, "missing field 'name' (the attack's registry name)")
    params = {}
    for pkey, value in entry.items():
        if not isinstance(pkey, str):
            raise where.error(key_line(entry, pkey, eline), key, f"bad parameter name {pkey!r}")
        if pkey in ("name", "strategy"):
            params[pkey] = value
        else:
            params[pkey] = _convert(value, where, value_line(entry, pkey, eline), f"{key}.{pkey}")
    for pkey, kind in ATTACK_PARAMS.items():
        problem = over_bound(kind, params.get(pkey))
        if problem:
            raise where.error(value_line(entry, pkey, eline), f"{key}.{pkey}", problem)
    if "strategy" in params:
        _check_strategy(params["strategy"], where, value_line(entry, "strategy", eline),
                        f"{key}.strategy", known_models)
    if check_attack is not None:
        args = {k: v for k, v in params.items() if k not in ("name", "strategy")}
        try:
            check_attack(name, args)
        except VitrobustError as e:
            param = getattr(e, "param", None)
            if param is None:
                raise where.error(eline, key, str(e)) from None
            raise where.error(key_line(entry, param, eline), f"{key}.{param}", str(e)) from None
    return params


def parse_attacks(raw, where: Where, line: int, known_models=None,
                  check_attack: Optional[CheckAttack] = None) -> dict:
    """``alias -> {"name": registry name, "strategy"?: text, **params}`` with numbers converted."""
    if raw is None or not isinstance(raw, dict) or not raw:
        raise where.error(line, "attacks", "must be a non-empty mapping alias -> {name: attack, ...}")
    attacks = {}
    for alias, entry in raw.items():
        if not isinstance(alias, str) or not _IDENT.match(alias) or alias == "any":
            raise where.error(key_line(raw, alias, line), "attacks",
                              f"bad alias {alias!r} (up to 64 letters, digits and '_'; not 'any')")
        attacks[alias] = _one_attack(alias, entry, where, key_line(raw, alias, line),
                                     known_models, check_attack)
    return attacks
