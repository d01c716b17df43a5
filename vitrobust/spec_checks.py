"""A spec's ``checks:`` section: each check expanded over the matrix into pytest items, parsed,
and checked against the spec (attack aliases) and the zoo (model names) when it is loaded.

A check is expanded over the matrix keys it names as ``{placeholders}`` (restricted by its
``only:``); a check that names none is one item, measured and reported once. Its ``claim``,
``xfail``, ``varies`` and ``xfail_one_build`` texts may use the same placeholders.

``xfail: REASON``: the claim is expected not to hold (a strict xfail: if it starts to hold, the
item fails). ``varies: REASON``: the claim is expected to vary with the training seed, which only
a run across seed replicas can show (``--vitrobust-seeds K``): there the item is xfailed when the
verdict is "varies" and fails otherwise; in a single-build run it is xfailed whatever that one
build gives, since one build cannot decide it. ``xfail_one_build: REASON``: a strict xfail in
single-build runs only, for a claim that holds across seeds but that the default zoo's one build
does not decide (inconclusive there). A check has at most one of the three.
"""
from __future__ import annotations

import itertools
import re
from typing import Optional

from . import defaults
from .exprparse import parse_check
from .exprtree import ExprError, measures
from .spec_bounds import over_bound
from .spec_fields import matrix_text, parse_choice
from .spec_model import Check, Where, known, suggest
from .yamllines import item_line, key_line, value_line

__all__ = ["CHECK_KEYS", "expand_checks"]

CHECK_KEYS = ("check", "claim", "xfail", "varies", "xfail_one_build", "inconclusive", "only")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAMED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")     # placeholders in claim / xfail prose


def _substitute(text, params) -> str:
    return _PLACEHOLDER.sub(lambda m: matrix_text(params[m.group(1)]) if m.group(1) in params
                            else m.group(0), text)


def _cells(choices: dict) -> int:
    count = 1
    for values in choices.values():
        count *= len(values)
    return count


def _optional_text(item: dict, key: str, where: Where, line: int, label: str) -> Optional[str]:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise where.error(line, f"{label}.{key}", "must be a non-empty string")
    return value


def _item(raw, i, where: Where, line: int):
    """``(mapping, its line, the check's line)`` for ``checks[i]`` (a string or a mapping)."""
    item, iline = raw[i], item_line(raw, i, line)
    label = f"checks[{i}]"
    if isinstance(item, str):
        return {"check": item}, iline, iline
    if not isinstance(item, dict):
        raise where.error(iline, label, f"must be a string or a mapping, got {type(item).__name__}")
    for key in item:
        if key not in CHECK_KEYS:
            raise where.error(key_line(item, key, iline), label,
                              f"unknown key {key!r} (known: {known(CHECK_KEYS)}){suggest(key, CHECK_KEYS)}")
    if "check" not in item:
        raise where.error(iline, label, "missing field 'check'")
    return item, iline, value_line(item, "check", iline)


def _choices(item: dict, template: str, matrix: dict, where: Where, line: int, label: str) -> dict:
    """The matrix values this check expands over: the keys it names, restricted by ``only:``."""
    for name in _PLACEHOLDER.findall(template):
        if name not in matrix:
            declared = f"matrix: {', '.join(matrix)}" if matrix else "no matrix declared"
            raise where.error(line, label, f"unknown placeholder {{{name}}} ({declared})")
    only = item.get("only")
    names = set(_PLACEHOLDER.findall(template))
    if only is not None:
        oline = value_line(item, "only", line)
        if not isinstance(only, dict):
            raise where.error(oline, f"{label}.only", "must be a mapping key -> list of values")
        names |= set(only)
    choices = {k: list(v) for k, v in matrix.items() if k in names}
    for key, values in (only or {}).items():
        if key not in matrix:
            raise where.error(key_line(only, key, oline), f"{label}.only",
                              f"unknown matrix key {key!r} (matrix: {', '.join(matrix) or 'none'})")
        values = values if isinstance(values, list) else [values]
        allowed = {matrix_text(v) for v in matrix[key]}
        for v in values:
            if matrix_text(v) not in allowed:
                raise where.error(value_line(only, key, oline), f"{label}.only.{key}",
                                  f"value {v!r} is not in the matrix ({', '.join(map(matrix_text, matrix[key]))})")
        wanted = {matrix_text(v) for v in values}
        choices[key] = [v for v in choices[key] if matrix_text(v) in wanted]
    return choices


def _check_prose(item: dict, key: str, used, where: Where, line: int, label: str):
    """``claim`` / ``xfail``: text whose placeholders are matrix keys the check expands over."""
    line = value_line(item, key, line)
    text = _optional_text(item, key, where, line, label)
    for name in _NAMED.findall(text or ""):
        if name not in used:
            expands = f"this check expands over: {', '.join(used)}" if used else "this check names no placeholder"
            raise where.error(line, f"{label}.{key}", f"unknown placeholder {{{name}}} ({expands})")
    return text


def _parse(text: str, where: Where, line: int, label: str, attacks: dict, known_models):
    try:
        node = parse_check(text)
    except ExprError as e:
        hint = ""
        if text.count("(") != text.count(")"):   # `checks: [asr(m, x) > 0]` splits at ','
            hint = " (unbalanced parentheses: quote a check that holds ',' inside a [...] list)"
        raise where.error(line, label, f"{e}{hint}") from None
    for m in measures(node):
        for alias in (m.attack.names if m.attack is not None else ()):
            if alias not in attacks:
                declared = f"declared: {known(attacks)}" if attacks else "the spec has no attacks: block"
                raise where.error(line, label, f"unknown attack alias {alias!r} ({declared})")
        if known_models is not None:
            for model in (m.source, m.model):
                if model is not None and not known_models(model):
                    raise where.error(line, label, f"unknown model {model!r}")
    return node


def expand_checks(raw, where: Where, line: int, spec_id: str, matrix: dict, attacks: dict,
                  inconclusive: str, known_models=None) -> list:
    """Every :class:`Check` of a spec, in order: items in the order written, each expanded over
    its matrix cells in the matrix's declared order."""
    if not isinstance(raw, list) or not raw:
        raise where.error(line, "checks", "must be a non-empty list of checks")
    out, seen = [], {}
    planned = 0
    for i in range(len(raw)):
        item, iline, cline = _item(raw, i, where, line)
        label = f"checks[{i}]"
        template = item["check"]
        if not isinstance(template, str) or not template.strip():
            raise where.error(cline, label, "check must be a non-empty string")
        mode = inconclusive
        if item.get("inconclusive") is not None:
            mode = parse_choice(item["inconclusive"], defaults.INCONCLUSIVE_POLICIES, where,
                                value_line(item, "inconclusive", cline), f"{label}.inconclusive")
        choices = _choices(item, template, matrix, where, cline, label)
        claim = _check_prose(item, "claim", list(choices), where, cline, label)
        xfail = _check_prose(item, "xfail", list(choices), where, cline, label)
        varies = _check_prose(item, "varies", list(choices), where, cline, label)
        one_build = _check_prose(item, "xfail_one_build", list(choices), where, cline, label)
        given = [key for key, text in (("xfail", xfail), ("varies", varies), ("xfail_one_build", one_build)) if text]
        if len(given) > 1:
            raise where.error(value_line(item, given[1], cline), f"{label}.{given[1]}",
                              f"a check has at most one expectation: {given[0]}: and {given[1]}: are both given")
        # counted before expanding: three keys of 100 values would be a million items
        planned += _cells(choices)
        problem = over_bound("matrix", planned)
        if problem:
            raise where.error(cline, label, f"checks the spec expands to: {problem}")
        for combo in itertools.product(*choices.values()):
            params = dict(zip(choices, combo))
            cell = f"{label} ({', '.join(f'{k}={matrix_text(v)}' for k, v in params.items())})" if params else label
            text = _substitute(template, params)
            node = _parse(text, where, cline, cell, attacks, known_models)
            if text in seen:     # the item's name: one text, one item, whatever its matrix cell
                raise where.error(cline, cell, f"duplicate check {text!r} (also {seen[text]})")
            seen[text] = cell
            out.append(Check(spec_id=spec_id, text=text, template=template, params=params,
                             claim=_substitute(claim, params) if claim else None,
                             xfail=_substitute(xfail, params) if xfail else None,
                             varies=_substitute(varies, params) if varies else None,
                             xfail_one_build=_substitute(one_build, params) if one_build else None,
                             inconclusive=mode, node=node, line=cline))
    return out
