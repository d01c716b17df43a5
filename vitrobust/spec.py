"""Load YAML specs, checking everything they say before anything runs. Every error is one line
naming the file, the line, the spec and the key, e.g.
``specs/quant.yaml:12: spec 'quantization': checks[2]: column 5: expected ...``.

A spec file holds one spec (a mapping) or a list of them::

    id: quantization                       # required, [a-z0-9][a-z0-9_-]*, at most 64 characters
    about: INT8 makes DeiT easier to attack (paper 7.2)    # required
    data: {source: digits, split: test, limit: 450}       # optional, see below
    attacks:                               # alias -> {name: registry name, ...params}; optional
                                           # when no check names an attack
      sp: {name: salt_and_pepper, steps: 100, eps: 4.0, norm: l2}
      pgd: {name: pgd, eps: 8/255, steps: 10, strategy: straight-through}
    matrix: {size: [tiny, small, base]}    # optional; {size} in checks is expanded
    confidence: 0.95                       # optional, in (0.5, 1)
    inconclusive: fail                     # optional: fail | skip | xfail
    checks:                                # required, non-empty
      - asr(deit_{size}:int8, sp) > asr(deit_{size}, sp)
      - check: size_mb(deit_{size}:int8) < 0.35 * size_mb(deit_{size})
        claim: "INT8 shrinks the {size} model about 4x"
        xfail: "measured reason it does not reproduce"
        inconclusive: skip
        only: {size: [tiny]}

A loaded spec's ``data`` always holds ``source`` (None: the run's data), ``split``, ``limit``,
``fit_split`` and ``fit_limit``, defaults (:mod:`vitrobust.defaults`) filled in. The sections
are read by :mod:`vitrobust.spec_fields` (data, matrix, confidence, inconclusive),
:mod:`vitrobust.spec_attacks` and :mod:`vitrobust.spec_checks`; this module reads the files.
YAML is read with a ``yaml.SafeLoader`` subclass that only records line numbers
(:mod:`vitrobust.yamllines`): no arbitrary objects are ever built.

What exists outside the spec is asked of two callbacks, so this module imports no torch:

- ``known_models(name) -> bool``: is this model name (a :class:`~vitrobust.names.ModelName`,
  base plus ``:suffix`` chain, passed whole) buildable? Asked once per name.
- ``check_attack(name, params)``: raises a :class:`~vitrobust.errors.VitrobustError` (optionally
  with ``.param``, the offending parameter key) if the attack, a parameter or a value is bad.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from . import defaults
from .spec_attacks import CheckAttack, parse_attacks, parse_number
from .spec_checks import CHECK_KEYS, expand_checks
from .spec_fields import DATA_KEYS, parse_choice, parse_confidence, parse_data, parse_matrix
from .spec_model import Check, Spec, SpecError, Where, known, suggest
from .yamllines import item_line, key_line, read_yaml_file, value_line

__all__ = ["SpecError", "Spec", "Check", "load_spec_file", "load_specs", "parse_number",
           "SPEC_KEYS", "CHECK_KEYS", "DATA_KEYS"]

SPEC_KEYS = ("id", "about", "data", "attacks", "matrix", "confidence", "inconclusive", "checks")
# An id names report files (plots/seed_effects_<id>.png), HTML anchors and pytest ids: no path
# separators, dots, spaces or brackets, no leading '-' (read as an option), and short enough for a
# file name on any file system.
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")

KnownModels = Callable[[str], bool]


def _shown(value) -> str:
    """``repr`` of a refused value, cut so a megabyte of it stays one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _memo(fn):
    if fn is None or getattr(fn, "_vitrobust_memo", False):
        return fn
    cache = {}

    def known_model(name):
        if name not in cache:
            cache[name] = bool(fn(name))
        return cache[name]
    known_model._vitrobust_memo = True
    return known_model


def _parse_spec(m: dict, where: Where, known_models, check_attack) -> Spec:
    line = getattr(m, "line", 0) or 1
    spec_id = m.get("id")
    if spec_id is not None:
        if not isinstance(spec_id, str) or not _ID.match(spec_id):
            raise where.error(value_line(m, "id", line), "id", f"must match [a-z0-9][a-z0-9_-]* in at most 64 characters (it names files "
                              f"and test ids), got {_shown(spec_id)}")
        where.spec_id = spec_id
    for key in m:
        if key not in SPEC_KEYS:
            raise where.error(key_line(m, key, line), "",
                              f"unknown key {key!r} (known: {known(SPEC_KEYS)}){suggest(key, SPEC_KEYS)}")
    for key in ("id", "about", "checks"):
        if m.get(key) is None:
            raise where.error(line, "", f"missing field {key!r}")
    about = m["about"]
    if not isinstance(about, str) or not about.strip():
        raise where.error(value_line(m, "about", line), "about", "must be a non-empty string")
    data = parse_data(m.get("data"), where, value_line(m, "data", line))
    # a spec whose checks name no attack (sizes, FLOPs, accuracy) needs no attacks: block; a
    # check that names one it does not declare is refused with the declared ones
    attacks = {} if "attacks" not in m else \
        parse_attacks(m["attacks"], where, value_line(m, "attacks", line), known_models, check_attack)
    matrix = parse_matrix(m.get("matrix"), where, value_line(m, "matrix", line))
    confidence = parse_confidence(m, where, line)
    inconclusive = parse_choice(m.get("inconclusive", defaults.INCONCLUSIVE), defaults.INCONCLUSIVE_POLICIES,
                                where, value_line(m, "inconclusive", line), "inconclusive")
    checks = expand_checks(m["checks"], where, value_line(m, "checks", line), spec_id, matrix,
                           attacks, inconclusive, known_models)
    return Spec(id=spec_id, about=about, path=where.path, data=data, attacks=attacks, matrix=matrix,
                confidence=confidence, inconclusive=inconclusive, checks=checks, line=line)


def load_spec_file(path, known_models: Optional[KnownModels] = None,
                   check_attack: Optional[CheckAttack] = None) -> list:
    """The spec(s) in one YAML file; anything wrong is a one-line :class:`SpecError`. The
    callbacks (see the module docstring) are optional: without them model names and attack
    parameters are not checked against what exists."""
    path = str(path)
    doc = read_yaml_file(path, SpecError, "spec")
    known_models = _memo(known_models)
    if doc is None:
        raise SpecError(f"{path}: empty spec file")
    if isinstance(doc, list):
        if not doc:
            raise SpecError(f"{path}:1: empty list of specs")
        items = list(enumerate(doc))
    elif isinstance(doc, dict):
        items = [(None, doc)]
    else:
        raise SpecError(f"{path}:1: a spec file holds a mapping or a list of mappings, got {type(doc).__name__}")
    specs, ids = [], {}
    for index, raw in items:
        where = Where(path, index)
        if not isinstance(raw, dict):
            raise where.error(item_line(doc, index or 0, 1), "", f"a spec must be a mapping, got {type(raw).__name__}")
        spec = _parse_spec(raw, where, known_models, check_attack)
        if spec.id in ids:
            raise where.error(spec.line, "", f"duplicate spec id (also at line {ids[spec.id]})")
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


def load_specs(paths_or_dirs: Union[str, Path, Iterable], known_models: Optional[KnownModels] = None,
               check_attack: Optional[CheckAttack] = None) -> list:
    """Every spec under the given files/directories (``*.yaml``/``*.yml``, sorted). Spec ids
    must be unique across all files."""
    known_models = _memo(known_models)
    specs, where = [], {}
    for f in _spec_files(paths_or_dirs):
        for spec in load_spec_file(f, known_models, check_attack):
            if spec.id in where:
                raise SpecError(f"{spec.path}:{spec.line}: spec {spec.id!r}: duplicate spec id "
                                f"(also in {where[spec.id]})")
            where[spec.id] = f"{spec.path}:{spec.line}"
            specs.append(spec)
    return specs
