"""The attack registry: names to classes, building an attack from spec parameters, checking a
request before any model exists.

``@register_attack`` on an :class:`~.base.Attack` subclass registers it under its ``name``.
:func:`make_attack` builds one from a spec's parameters; :func:`validate_attack` is the same
check without keeping the result, so a spec loader can refuse a typo'd parameter or a bad value
at collection, naming the file and line, instead of an hour into a run. Both raise
:class:`~.base.AttackError` with ``param`` set to the offending key where one is identifiable.
"""
from __future__ import annotations

import difflib

from .base import Attack, AttackError, init_defaults, init_parameters

_ATTACKS: dict[str, type[Attack]] = {}
_MODULES = ("fgsm", "pgd", "iterative", "deepfool", "uap", "square", "blackbox")
# What a constructor raises for a value it cannot take (int("x"), eps / 0, ...), besides AttackError.
_BAD_VALUE = (TypeError, ValueError, ZeroDivisionError, OverflowError)


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    _ATTACKS[cls.name] = cls
    return cls


def attack_class(name: str) -> type[Attack]:
    _ensure_loaded()
    if name not in _ATTACKS:
        raise AttackError(f"unknown attack {name!r}; known: {', '.join(sorted(_ATTACKS))}")
    return _ATTACKS[name]


def make_attack(name: str, **params) -> Attack:
    """Build attack ``name`` from spec parameters.

    An unknown attack, an unknown parameter (with the closest known one suggested) or a value
    the constructor refuses is an AttackError; its ``param`` is the offending key when one is
    identifiable.
    """
    cls = attack_class(name)
    _check_names(name, cls, params)
    try:
        return cls(**params)
    except AttackError as exc:
        if exc.param is None:
            exc.param = _culprit(cls, params)
        raise
    except _BAD_VALUE as exc:
        param = _culprit(cls, params)
        where = f" {param}={params[param]!r}:" if param else ""
        raise AttackError(f"{name}:{where} {exc}", param) from None


def validate_attack(name: str, params: dict) -> None:
    """Check a request for attack ``name`` with ``params`` (no model needed); AttackError if bad.

    ``params`` are the constructor arguments only (a spec's ``name`` and ``strategy`` keys are
    not attack parameters). The check is :func:`make_attack` itself, so what passes here builds.
    """
    if not isinstance(name, str):
        raise AttackError(f"an attack name must be a string, got {type(name).__name__}")
    if not isinstance(params, dict):
        raise AttackError(f"{name}: parameters must be a mapping, got {type(params).__name__}")
    for key in params:
        if not isinstance(key, str):
            raise AttackError(f"{name}: bad parameter name {key!r}")
    make_attack(name, **params)


def _check_names(name: str, cls: type[Attack], params: dict) -> None:
    known = sorted(init_parameters(cls))
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AttackError(f"{name}: unknown argument {key!r}{hint} (known: {', '.join(known)})", key)


def _culprit(cls: type[Attack], params: dict) -> str | None:
    """The first parameter the constructor refuses on its own (the others at their defaults);
    None when only a combination is refused (e.g. spatial's two budgets both zero)."""
    for key, value in params.items():
        try:
            cls(**{key: value})
        except (AttackError, *_BAD_VALUE):
            return key
    return None


def list_attacks() -> list[str]:
    _ensure_loaded()
    return sorted(_ATTACKS)


def black_box_attacks() -> list[str]:
    _ensure_loaded()
    return sorted(n for n, c in _ATTACKS.items() if not c.needs_grad)


def describe(name: str | None = None) -> list[dict]:
    """What ``vitrobust attacks list`` shows: one dict per attack (or only ``name``).

    Keys: name, needs_grad, universal, norms, defaults (every constructor argument), about (the
    docstring's first line, which names the paper).
    """
    names = [name] if name else list_attacks()
    rows = []
    for n in names:
        cls = attack_class(n)
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append({"name": n, "needs_grad": cls.needs_grad, "universal": cls.universal,
                     "norms": list(cls.norms), "defaults": init_defaults(cls),
                     "about": doc[0] if doc else ""})
    return rows


def _ensure_loaded() -> None:
    # importing a module runs its @register_attack decorators
    import importlib

    for module in _MODULES:
        importlib.import_module(f"{__package__}.{module}")
