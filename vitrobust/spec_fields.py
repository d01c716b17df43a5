"""A spec's plain sections: ``data``, ``matrix``, ``confidence`` and ``inconclusive``, checked and
filled in with the defaults of :mod:`vitrobust.defaults`, so every consumer reads one complete
value and no consumer repeats a default.
"""
from __future__ import annotations

import re

from . import defaults
from .spec_bounds import over_bound
from .spec_model import Where, known, suggest
from .yamllines import key_line, value_line

__all__ = ["DATA_KEYS", "parse_data", "parse_matrix", "parse_confidence", "parse_choice",
           "matrix_text"]

# fit_split / fit_limit: where universal perturbations (UAP) are fitted, disjoint from `split`.
DATA_KEYS = ("source", "split", "limit", "fit_split", "fit_limit")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")     # matrix keys name placeholders and test ids
# A matrix value is pasted into checks (model names, numbers) and into pytest ids (spec[size=tiny]):
# the characters of model names and numbers only, so an id cannot hold brackets, spaces or '/'.
_VALUE = re.compile(r"[A-Za-z0-9_.:@+-]{1,64}\Z")


def matrix_text(value) -> str:
    """How a matrix value reads inside a check: tiny, 0.7, 3."""
    return str(value)


def parse_data(raw, where: Where, line: int) -> dict:
    """Every data key, defaults filled in. ``source`` None means the run's data; ``limit`` or
    ``fit_limit`` written as ``null`` means the whole split; ``fit_split`` must differ from
    ``split`` (a universal perturbation is fitted on one and scored on the other)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise where.error(line, "data", f"must be a mapping ({', '.join(DATA_KEYS)}), got {type(raw).__name__}")
    for key in raw:
        if key not in DATA_KEYS:
            raise where.error(key_line(raw, key, line), "data",
                              f"unknown key {key!r} (known: {known(DATA_KEYS)}){suggest(key, DATA_KEYS)}")
    data = {"source": None, "split": defaults.SPLIT, "limit": defaults.IMAGE_LIMIT,
            "fit_split": defaults.FIT_SPLIT, "fit_limit": defaults.FIT_LIMIT}
    data.update(raw)
    for key in ("source", "split", "fit_split"):
        value = data[key]
        if (value is not None or key != "source") and not (isinstance(value, str) and value.strip()):
            raise where.error(value_line(raw, key, line), f"data.{key}",
                              f"must be a non-empty string, got {value!r}")
    for key in ("limit", "fit_limit"):
        v = data[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise where.error(value_line(raw, key, line), f"data.{key}",
                              f"must be a positive integer (or null: the whole split), got {v!r}")
        problem = over_bound("images", v)
        if problem:
            raise where.error(value_line(raw, key, line), f"data.{key}", problem)
    if data["fit_split"] == data["split"]:
        culprit = "fit_split" if "fit_split" in raw else "split"
        raise where.error(value_line(raw, culprit, line), "data.fit_split",
                          f"must differ from data.split (both {data['split']!r}): universal "
                          "perturbations are fitted on fit_split and scored on split")
    return dict(data)


def parse_matrix(raw, where: Where, line: int) -> dict:
    """``key -> list of values`` (names or numbers, distinct as they read in a check)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise where.error(line, "matrix", f"must be a mapping key -> list of values, got {type(raw).__name__}")
    matrix = {}
    for key, values in raw.items():
        kline = value_line(raw, key, line)
        if not isinstance(key, str) or not _IDENT.match(key):
            raise where.error(key_line(raw, key, line), "matrix", f"bad key {key!r} (up to 64 letters, digits and '_')")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise where.error(kline, f"matrix.{key}", "needs at least one value")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not _VALUE.match(matrix_text(v)):
                raise where.error(kline, f"matrix.{key}", "values must be names or numbers (up to 64 of "
                                  f"A-Z a-z 0-9 _ . : @ + -), got {v!r}")
        texts = [matrix_text(v) for v in values]
        if len(set(texts)) != len(texts):
            raise where.error(kline, f"matrix.{key}", "values must be distinct")
        matrix[key] = list(values)
    return matrix


def parse_confidence(m: dict, where: Where, line: int) -> float:
    confidence = m.get("confidence", defaults.CONFIDENCE)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 < confidence < 1:
        raise where.error(value_line(m, "confidence", line), "confidence",
                          f"must be a number in (0.5, 1), got {confidence!r}")
    return float(confidence)


def parse_choice(value, choices, where: Where, line: int, key: str) -> str:
    if value not in choices:
        raise where.error(line, key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value
