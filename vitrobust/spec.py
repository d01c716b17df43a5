"""Load and validate YAML specs. Every error is one line naming the file, the line, the spec
and the key, e.g. ``specs/quant.yaml:12: spec 'quantization': checks[2]: column 5: expected ...``.

A spec file holds one spec (a mapping) or a list of them::

    id: quantization                       # required, [a-z0-9_-]+
    about: INT8 makes DeiT easier to attack (paper 7.2)    # required
    data: {source: digits, split: test, limit: 450}       # optional (source None = run default)
    attacks:                               # required: alias -> {name: registry name, ...params}
      sp: {name: salt_and_pepper, steps: 100, eps: 4.0, norm: l2}
      pgd: {name: pgd, eps: 8/255, steps: 10, strategy: straight-through}
    matrix: {size: [tiny, small, base]}    # optional; {size} in checks is expanded
    confidence: 0.95                       # optional, in (0.5, 1)
    inconclusive: fail                     # optional: fail | skip | xfail
    checks:                                # required, non-empty
      - asr(deit_{size}:int8, sp) > asr(deit_{size}, sp)
      - check: size_mb(deit_{size}:int8) < 0.35 * size_mb(deit_{size})
        claim: "INT8 shrinks the model about 4x"
        xfail: "measured reason it does not reproduce"
        inconclusive: skip
        only: {size: [tiny]}

Numeric strings in attack parameters ("8/255", "0.5", "1e-3") become floats through a small
fraction parser (never ``eval``). An attack may also be given as ``alias: registry_name``.
Each check is expanded over the matrix keys it names as placeholders (restricted by its
``only:``); a check that names none is a single item. YAML is read with a subclass of
``yaml.SafeLoader`` that only records line numbers: no arbitrary objects are ever built.
"""
from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import yaml

from .expr import ExprError, measures, parse_check
from .yamllines import item_line, key_line, load_yaml_with_lines, value_line

__all__ = ["SpecError", "Spec", "Check", "load_spec_file", "load_specs", "parse_number",
           "SPEC_KEYS", "CHECK_KEYS", "DATA_KEYS", "INCONCLUSIVE", "STRATEGIES"]

SPEC_KEYS = ("id", "about", "data", "attacks", "matrix", "confidence", "inconclusive", "checks")
CHECK_KEYS = ("check", "claim", "xfail", "inconclusive", "only")
# fit_split / fit_limit: where universal perturbations (UAP) are fitted, disjoint from `split`.
DATA_KEYS = ("source", "split", "limit", "fit_split", "fit_limit")
INCONCLUSIVE = ("fail", "skip", "xfail")
STRATEGIES = ("white-box", "black-box", "straight-through", "transfer:<model>")

_ID = re.compile(r"[a-z0-9_-]+\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_FRACTION = re.compile(rf"\s*([+-]?{_NUM})\s*(?:/\s*({_NUM})\s*)?\Z")


class SpecError(ValueError):
    """An invalid spec; the message is one line: ``file:line: spec 'id': key: problem``."""


# --------------------------------------------------------------------------------------------
# data model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One expanded check: one pytest item."""
    spec_id: str
    text: str                 # expanded, e.g. asr(deit_tiny:int8, sp) > asr(deit_tiny, sp)
    template: str             # as written, e.g. asr(deit_{size}:int8, sp) > asr(deit_{size}, sp)
    params: dict              # this matrix cell, e.g. {"size": "tiny"} ({} without a matrix)
    claim: Optional[str]
    xfail: Optional[str]      # reason the claim is expected not to reproduce, or None
    inconclusive: str         # fail | skip | xfail
    node: object              # parsed AST (Chain or Monotonic)
    line: int                 # YAML line of the check

    def __hash__(self):
        return hash((self.spec_id, self.text, self.line))

    @property
    def param_id(self) -> str:
        """``size=tiny,keep=0.7`` ('' without matrix parameters), for readable test ids."""
        return ",".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def measures(self) -> list:
        return measures(self.node)


@dataclass(frozen=True)
class Spec:
    id: str
    about: str
    path: str
    data: dict                # source (None = the run's default), split, limit, ...
    attacks: dict             # alias -> {"name": registry name, **params}
    matrix: dict              # key -> list of values
    confidence: float
    inconclusive: str
    checks: list
    line: int = 1             # YAML line where the spec starts

    def __hash__(self):
        return hash((self.id, self.path))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
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


def _known(keys) -> str:
    return ", ".join(sorted(keys))


def _suggest(word, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _text(value) -> str:
    """How a matrix value reads inside a check: tiny, 0.7, 3."""
    return str(value)


class _Ctx:
    """Where we are, for one-line error messages."""

    def __init__(self, path: str, index: Optional[int] = None):
        self.path, self.index, self.spec_id = path, index, None

    def error(self, line: int, where: str, problem: str) -> SpecError:
        parts = [f"{self.path}:{line}" if line else self.path]
        if self.spec_id is not None:
            parts.append(f"spec {self.spec_id!r}")
        elif self.index is not None:
            parts.append(f"spec #{self.index + 1}")
        if where:
            parts.append(where)
        parts.append(problem)
        return SpecError(_one_line(": ".join(parts)))


def _memo(fn):
    if fn is None:
        return None
    cache = {}

    def known(name):
        if name not in cache:
            cache[name] = bool(fn(name))
        return cache[name]
    return known


# --------------------------------------------------------------------------------------------
# one spec
# --------------------------------------------------------------------------------------------
def _parse_data(raw, ctx, line) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ctx.error(line, "data", f"must be a mapping (source, split, limit), got {type(raw).__name__}")
    for key in raw:
        if key not in DATA_KEYS:
            raise ctx.error(key_line(raw, key, line), "data",
                            f"unknown key {key!r} (known: {_known(DATA_KEYS)}){_suggest(key, DATA_KEYS)}")
    data = {"source": None, "split": "test", "limit": None}
    data.update(raw)
    for key in ("source", "split", "fit_split"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ctx.error(value_line(raw, key, line), f"data.{key}", "must be a string")
    for key in ("limit", "fit_limit"):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ctx.error(value_line(raw, key, line), f"data.{key}", f"must be a positive integer, got {v!r}")
    return dict(data)


def _convert_params(value, ctx, line, where):
    if isinstance(value, list):
        return [_convert_params(v, ctx, line, where) for v in value]
    try:
        return parse_number(value)
    except ZeroDivisionError as e:
        raise ctx.error(line, where, str(e)) from None


def _parse_attacks(raw, ctx, line, known_models, known_attacks) -> dict:
    if raw is None or not isinstance(raw, dict) or not raw:
        raise ctx.error(line, "attacks", "must be a non-empty mapping alias -> {name: attack, ...}")
    attacks = {}
    for alias, entry in raw.items():
        where, eline = f"attacks.{alias}", value_line(raw, alias, line)
        if not isinstance(alias, str) or not _IDENT.match(alias) or alias == "any":
            raise ctx.error(key_line(raw, alias, line), "attacks",
                            f"bad alias {alias!r} (letters, digits, '_'; not 'any')")
        if isinstance(entry, str):            # shorthand: `fgsm: fgsm`
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise ctx.error(eline, where, f"must be a mapping with 'name', got {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ctx.error(eline, where, "missing field 'name' (the attack's registry name)")
        if known_attacks is not None and not known_attacks(name):
            raise ctx.error(value_line(entry, "name", eline), where, f"unknown attack {name!r}")
        params = {}
        for key, value in entry.items():
            if not isinstance(key, str):
                raise ctx.error(key_line(entry, key, eline), where, f"bad parameter name {key!r}")
            vline = value_line(entry, key, eline)
            if key in ("name", "strategy"):
                params[key] = value
            else:
                params[key] = _convert_params(value, ctx, vline, f"{where}.{key}")
        strategy = params.get("strategy")
        if strategy is not None:
            sline = value_line(entry, "strategy", eline)
            ok = isinstance(strategy, str) and (strategy in STRATEGIES[:3] or (
                strategy.startswith("transfer:") and len(strategy) > len("transfer:")))
            if not ok:
                raise ctx.error(sline, f"{where}.strategy",
                                f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
            surrogate = strategy[len("transfer:"):] if strategy.startswith("transfer:") else None
            if surrogate and known_models is not None and not known_models(surrogate):
                raise ctx.error(sline, f"{where}.strategy", f"unknown model {surrogate!r}")
        attacks[alias] = params
    return attacks


def _parse_matrix(raw, ctx, line) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ctx.error(line, "matrix", f"must be a mapping key -> list of values, got {type(raw).__name__}")
    matrix = {}
    for key, values in raw.items():
        kline = value_line(raw, key, line)
        if not isinstance(key, str) or not _IDENT.match(key):
            raise ctx.error(key_line(raw, key, line), "matrix", f"bad key {key!r} (letters, digits, '_')")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise ctx.error(kline, f"matrix.{key}", "needs at least one value")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ctx.error(kline, f"matrix.{key}", f"values must be names or numbers, got {v!r}")
        texts = [_text(v) for v in values]
        if len(set(texts)) != len(texts):
            raise ctx.error(kline, f"matrix.{key}", "values must be distinct")
        matrix[key] = list(values)
    return matrix


def _parse_choice(value, choices, ctx, line, where) -> str:
    if value not in choices:
        raise ctx.error(line, where, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _optional_text(item, key, ctx, line, where):
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(line, f"{where}.{key}", "must be a non-empty string")
    return value


def _substitute(text, params) -> str:
    return _PLACEHOLDER.sub(lambda m: _text(params[m.group(1)]) if m.group(1) in params else m.group(0), text)


def _expand_checks(raw, ctx, line, spec_id, matrix, attacks, inconclusive, known_models) -> list:
    if not isinstance(raw, list) or not raw:
        raise ctx.error(line, "checks", "must be a non-empty list of checks")
    out, seen = [], {}
    for i, item in enumerate(raw):
        where, iline = f"checks[{i}]", item_line(raw, i, line)
        if isinstance(item, str):
            item = {"check": item}
            item_map = None
        elif isinstance(item, dict):
            item_map = item
            for key in item:
                if key not in CHECK_KEYS:
                    raise ctx.error(key_line(item, key, iline), where,
                                    f"unknown key {key!r} (known: {_known(CHECK_KEYS)}){_suggest(key, CHECK_KEYS)}")
            if "check" not in item:
                raise ctx.error(iline, where, "missing field 'check'")
            iline = value_line(item, "check", iline)
        else:
            raise ctx.error(iline, where, f"must be a string or a mapping, got {type(item).__name__}")
        template = item["check"]
        if not isinstance(template, str) or not template.strip():
            raise ctx.error(iline, where, "check must be a non-empty string")
        claim = _optional_text(item, "claim", ctx, iline, where)
        xfail = _optional_text(item, "xfail", ctx, iline, where)
        mode = inconclusive
        if item.get("inconclusive") is not None:
            mode = _parse_choice(item["inconclusive"], INCONCLUSIVE, ctx,
                                 value_line(item_map, "inconclusive", iline), f"{where}.inconclusive")
        # placeholders: every {x} must name a matrix key
        for name in _PLACEHOLDER.findall(template):
            if name not in matrix:
                declared = f"matrix: {', '.join(matrix)}" if matrix else "no matrix declared"
                raise ctx.error(iline, where, f"unknown placeholder {{{name}}} ({declared})")
        # expand over the placeholders the check uses (and those its `only:` restricts), so a
        # check that names no placeholder is one item, measured and reported once
        names = set(_PLACEHOLDER.findall(template)) | set((item.get("only") or {}) if isinstance(item.get("only"), dict) else ())
        used = [k for k in matrix if k in names]
        choices = {k: list(matrix[k]) for k in used}
        only = item.get("only")
        if only is not None:
            oline = value_line(item_map, "only", iline)
            if not isinstance(only, dict):
                raise ctx.error(oline, f"{where}.only", "must be a mapping key -> list of values")
            for key, values in only.items():
                if key not in matrix:
                    raise ctx.error(key_line(only, key, oline), f"{where}.only",
                                    f"unknown matrix key {key!r} (matrix: {', '.join(matrix) or 'none'})")
                values = values if isinstance(values, list) else [values]
                allowed = {_text(v) for v in matrix[key]}
                for v in values:
                    if _text(v) not in allowed:
                        raise ctx.error(value_line(only, key, oline), f"{where}.only.{key}",
                                        f"value {v!r} is not in the matrix ({', '.join(map(_text, matrix[key]))})")
                wanted = {_text(v) for v in values}
                choices[key] = [v for v in choices[key] if _text(v) in wanted]
        for combo in itertools.product(*(choices[k] for k in used)):
            params = dict(zip(used, combo))
            label = f"{where} ({', '.join(f'{k}={_text(v)}' for k, v in params.items())})" if params else where
            text = _substitute(template, params)
            try:
                node = parse_check(text)
            except ExprError as e:
                hint = ""
                if text.count("(") != text.count(")"):   # `checks: [asr(m, x) > 0]` splits at ','
                    hint = " (unbalanced parentheses: quote a check that holds ',' inside a [...] list)"
                raise ctx.error(iline, label, f"{e}{hint}") from None
            for m in measures(node):
                if m.attack is not None:
                    for alias in m.attack.names:
                        if alias not in attacks:
                            raise ctx.error(iline, label, f"unknown attack alias {alias!r} "
                                                          f"(declared: {_known(attacks)})")
                if known_models is not None:
                    for model in (m.source, m.model):
                        if model is not None and not known_models(model):
                            raise ctx.error(iline, label, f"unknown model {model!r}")
            ident = text   # the item's name: one text, one item, whatever its matrix cell
            if ident in seen:
                raise ctx.error(iline, label, f"duplicate check {text!r} (also {seen[ident]})")
            seen[ident] = label
            out.append(Check(spec_id=spec_id, text=text, template=template, params=params,
                             claim=_substitute(claim, params) if claim else None,
                             xfail=_substitute(xfail, params) if xfail else None,
                             inconclusive=mode, node=node, line=iline))
    return out


def _parse_spec(m, ctx, known_models, known_attacks) -> Spec:
    line = getattr(m, "line", 0) or 1
    if not isinstance(m, dict):
        raise ctx.error(line, "", f"a spec must be a mapping, got {type(m).__name__}")
    spec_id = m.get("id")
    if spec_id is not None:
        if not isinstance(spec_id, str) or not _ID.match(spec_id):
            raise ctx.error(value_line(m, "id", line), "id", f"must match [a-z0-9_-]+, got {spec_id!r}")
        ctx.spec_id = spec_id
    for key in m:
        if key not in SPEC_KEYS:
            raise ctx.error(key_line(m, key, line), "",
                            f"unknown key {key!r} (known: {_known(SPEC_KEYS)}){_suggest(key, SPEC_KEYS)}")
    for key in ("id", "about", "attacks", "checks"):
        if m.get(key) is None:
            raise ctx.error(line, "", f"missing field {key!r}")
    about = m["about"]
    if not isinstance(about, str) or not about.strip():
        raise ctx.error(value_line(m, "about", line), "about", "must be a non-empty string")
    data = _parse_data(m.get("data"), ctx, value_line(m, "data", line))
    attacks = _parse_attacks(m["attacks"], ctx, value_line(m, "attacks", line), known_models, known_attacks)
    matrix = _parse_matrix(m.get("matrix"), ctx, value_line(m, "matrix", line))
    confidence = m.get("confidence", 0.95)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 < confidence < 1:
        raise ctx.error(value_line(m, "confidence", line), "confidence",
                        f"must be a number in (0.5, 1), got {confidence!r}")
    inconclusive = _parse_choice(m.get("inconclusive", "fail"), INCONCLUSIVE, ctx,
                                 value_line(m, "inconclusive", line), "inconclusive")
    checks = _expand_checks(m["checks"], ctx, value_line(m, "checks", line), spec_id, matrix,
                            attacks, inconclusive, known_models)
    return Spec(id=spec_id, about=about, path=ctx.path, data=data, attacks=attacks, matrix=matrix,
                confidence=float(confidence), inconclusive=inconclusive, checks=checks, line=line)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def _read_yaml(path: str):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return load_yaml_with_lines(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise SpecError(_one_line(f"{where}: YAML error: {what}")) from None
    except yaml.YAMLError as e:
        raise SpecError(_one_line(f"{path}: YAML error: {e}")) from None


def load_spec_file(path, known_models: Callable[[str], bool] = None,
                   known_attacks: Callable[[str], bool] = None) -> list:
    """Load the spec(s) in one YAML file. ``known_models(name)`` / ``known_attacks(name)``, if
    given, say whether a model name (base plus ``:suffix`` chain, passed whole) or an attack
    registry name exists; unknown ones are a :class:`SpecError`."""
    path = str(path)
    doc = _read_yaml(path)
    known_models, known_attacks = _memo(known_models), _memo(known_attacks)
    if doc is None:
        raise SpecError(f"{path}: empty spec file")
    if isinstance(doc, list):
        if not doc:
            raise SpecError(f"{path}:1: empty list of specs")
        items = [(i, d) for i, d in enumerate(doc)]
    elif isinstance(doc, dict):
        items = [(None, doc)]
    else:
        raise SpecError(f"{path}:1: a spec file holds a mapping or a list of mappings, got {type(doc).__name__}")
    specs, ids = [], {}
    for index, raw in items:
        ctx = _Ctx(path, index)
        if not isinstance(raw, dict):
            raise ctx.error(item_line(doc, index or 0, 1), "", f"a spec must be a mapping, got {type(raw).__name__}")
        spec = _parse_spec(raw, ctx, known_models, known_attacks)
        if spec.id in ids:
            raise ctx.error(spec.line, "", f"duplicate spec id (also at line {ids[spec.id]})")
        ids[spec.id] = spec.line
        specs.append(spec)
    return specs


def _spec_files(paths) -> list:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files, seen = [], set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        elif p.is_file():
            found = [p]
        else:
            raise SpecError(f"{p}: no such spec file or directory")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    return files


def load_specs(paths_or_dirs: Union[str, Path, Iterable], known_models=None, known_attacks=None) -> list:
    """Load every spec under the given files/directories (``*.yaml``/``*.yml``, sorted). Spec ids
    must be unique across all files."""
    known_models, known_attacks = _memo(known_models), _memo(known_attacks)
    specs, where = [], {}
    for f in _spec_files(paths_or_dirs):
        for spec in load_spec_file(f, known_models, known_attacks):
            if spec.id in where:
                raise SpecError(f"{spec.path}:{spec.line}: spec {spec.id!r}: duplicate spec id "
                                f"(also in {where[spec.id]})")
            where[spec.id] = f"{spec.path}:{spec.line}"
            specs.append(spec)
    return specs
