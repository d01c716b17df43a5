"""YAML with line numbers, still safe: a ``yaml.SafeLoader`` subclass that builds only the plain
SafeLoader types (dict and list subclasses carrying the lines their keys and items start on), so
spec errors can name ``file:line``. Duplicate keys are rejected rather than silently overwritten.
"""
from __future__ import annotations

import yaml

__all__ = ["load_yaml_with_lines", "key_line", "value_line", "item_line"]


class _Map(dict):
    line = 0
    key_lines: dict
    value_lines: dict


class _Seq(list):
    line = 0
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_map(loader, node):
    data = _Map()
    data.line, data.key_lines, data.value_lines = node.start_mark.line + 1, {}, {}
    yield data
    # Record lines (and reject duplicate keys) before merge keys (<<: *defaults) are flattened:
    # a key that overrides a merged one is not a duplicate.
    for k_node, v_node in node.value:
        if k_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(k_node)
        try:
            hash(key)
        except TypeError:
            continue                               # construct_mapping reports it
        if key in data.key_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", k_node.start_mark)
        data.key_lines[key] = k_node.start_mark.line + 1
        data.value_lines[key] = v_node.start_mark.line + 1
    data.update(loader.construct_mapping(node))   # flattens merge keys, rejects unhashable keys


def _construct_seq(loader, node):
    data = _Seq()
    data.line, data.item_lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def key_line(m, key, default=0) -> int:
    return getattr(m, "key_lines", {}).get(key, getattr(m, "line", default) or default)


def value_line(m, key, default=0) -> int:
    return getattr(m, "value_lines", {}).get(key, getattr(m, "line", default) or default)


def item_line(seq, i, default=0) -> int:
    lines = getattr(seq, "item_lines", [])
    return lines[i] if i < len(lines) else (getattr(seq, "line", default) or default)


def load_yaml_with_lines(text: str):
    """Parse ``text``; mappings and sequences remember their lines. Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_LineLoader)  # noqa: S506 -- a SafeLoader subclass
