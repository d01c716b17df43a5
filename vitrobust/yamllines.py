"""YAML with line numbers, still safe: a ``yaml.SafeLoader`` subclass that builds only the plain
SafeLoader types (dict and list subclasses carrying the lines their keys and items start on), so
spec errors can name ``file:line``. Duplicate keys are rejected rather than silently overwritten.

Specs and zoo configs come from pull requests, so the document's shape is bounded before anything
is built (:func:`check_shape`): its size, its nesting (PyYAML's composer recurses once per level,
so a few thousand ``[`` would end in a ``RecursionError``), and its node count *after* alias
expansion. ``safe_load`` does expand aliases: it shares one object per anchor, but every walk over
the result (a repr in an error message, converting attack parameters) visits each reference, so a
"billion laughs" document of a few lines would take hours. A recursive alias (``&a [*a]``) is
refused outright. Integers beyond 64 bits and values the constructor cannot build (a timestamp
like ``2001-13-45``) are YAML errors with their line, not a bare ``ValueError``.
"""
from __future__ import annotations

import yaml

__all__ = ["load_yaml_with_lines", "key_line", "value_line", "item_line", "check_shape",
           "MAX_BYTES", "MAX_DEPTH", "MAX_NODES"]

MAX_BYTES = 1_000_000     # a spec is a page of YAML; the shipped ones are under 5 kB
MAX_DEPTH = 32            # shipped specs nest 4 deep (checks[i].only.size[j])
MAX_NODES = 100_000       # scalars and collections with every alias expanded
_INT_BITS = 64            # no count, seed or limit in a spec needs more
_INT_CHARS = 100          # 64 bits in any YAML spelling (0b..., with '_' separators) fit in this


class YAMLShapeError(yaml.MarkedYAMLError):
    """A document too large, too deep or with too many nodes once aliases are expanded."""


def _short(value) -> str:
    """A scalar's text for a message: quoted, cut to 40 characters."""
    text = value if isinstance(value, str) else type(value).__name__
    return repr(text if len(text) <= 40 else text[:40] + "...")


class _Map(dict):
    line = 0
    key_lines: dict
    value_lines: dict


class _Seq(list):
    line = 0
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    def construct_object(self, node, deep=False):
        # A scalar the resolver typed but Python refuses (an impossible date, an int too long
        # for str()) raises ValueError/OverflowError from inside PyYAML: give it the node's line.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot build value {_short(node.value)}: {exc}", node.start_mark) from None

    def construct_yaml_int(self, node):
        # checked on the text first: a long base-60 integer (1:2:3:...) costs quadratic time to build
        value = None if len(node.value) > _INT_CHARS else super().construct_yaml_int(node)
        if value is None or value.bit_length() > _INT_BITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"integer {_short(node.value)} is out of range (at most {_INT_BITS} bits)",
                node.start_mark)
        return value


def _expect(node, kind, what: str) -> None:
    # an explicit tag can put a scalar where a collection is built (`!!seq 0`): a YAML error,
    # as PyYAML's own constructors say it, not an AttributeError further down
    if not isinstance(node, kind):
        raise yaml.constructor.ConstructorError(None, None, f"expected {what}, but found {node.id}",
                                                node.start_mark)


def _construct_map(loader, node):
    _expect(node, yaml.MappingNode, "a mapping")
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
                None, None, f"duplicate key {key!r:.80} (also on line {data.key_lines[key]})",
                k_node.start_mark)
        data.key_lines[key] = k_node.start_mark.line + 1
        data.value_lines[key] = v_node.start_mark.line + 1
    data.update(loader.construct_mapping(node))   # flattens merge keys, rejects unhashable keys


def _construct_seq(loader, node):
    _expect(node, yaml.SequenceNode, "a sequence")
    data = _Seq()
    data.line, data.item_lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
    yield data
    data.extend(loader.construct_sequence(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _LineLoader.construct_yaml_int)


def key_line(m, key, default=0) -> int:
    return getattr(m, "key_lines", {}).get(key, getattr(m, "line", default) or default)


def value_line(m, key, default=0) -> int:
    return getattr(m, "value_lines", {}).get(key, getattr(m, "line", default) or default)


def item_line(seq, i, default=0) -> int:
    lines = getattr(seq, "item_lines", [])
    return lines[i] if i < len(lines) else (getattr(seq, "line", default) or default)


def _refuse(problem: str, event) -> YAMLShapeError:
    return YAMLShapeError(None, None, problem, event.start_mark if event is not None else None)


def check_shape(text: str) -> None:
    """Raise :class:`YAMLShapeError` (a ``yaml.MarkedYAMLError``) when ``text`` is larger than
    :data:`MAX_BYTES`, nests deeper than :data:`MAX_DEPTH` or holds more than :data:`MAX_NODES`
    nodes with aliases expanded. One pass over the parser's events (iterative, unlike the
    composer), stopping at the first bound crossed; other syntax errors are left to the loader."""
    if len(text) > MAX_BYTES:
        raise _refuse(f"document of {len(text):,} characters is larger than the {MAX_BYTES:,} allowed", None)
    open_nodes = []            # [expanded size so far, anchor] per open mapping / sequence
    sizes = {}                 # anchor -> expanded size of the finished node it names
    total = 0

    def add(size, event):
        nonlocal total
        if open_nodes:
            open_nodes[-1][0] += size
            size = open_nodes[-1][0]
        else:
            total += size
            size = total
        if size > MAX_NODES:
            raise _refuse(f"more than {MAX_NODES:,} nodes once aliases are expanded "
                          "(an alias bomb?)", event)

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(open_nodes) >= MAX_DEPTH:
                raise _refuse(f"nested more than {MAX_DEPTH} levels deep", event)
            open_nodes.append([1, event.anchor])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = size
            add(size, event)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(1, event)
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for _, anchor in open_nodes):
                raise _refuse(f"alias *{event.anchor} refers to a node that contains it", event)
            if event.anchor not in sizes:
                return             # undefined alias: the composer names it
            add(sizes[event.anchor], event)


def load_yaml_with_lines(text: str):
    """Parse ``text``; mappings and sequences remember their lines. Raises ``yaml.YAMLError``
    (:class:`YAMLShapeError` for a document over the bounds of :func:`check_shape`)."""
    check_shape(text)
    return yaml.load(text, Loader=_LineLoader)  # noqa: S506 -- a SafeLoader subclass


def read_yaml_file(path, error: type[Exception], what: str):
    """The document in the YAML file ``path`` (None when empty), with lines as
    :func:`load_yaml_with_lines`; anything wrong is one line of ``error`` naming the file (and
    the line, where YAML knows it). ``what`` names the file's kind: "spec", "zoo config"."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc.__class__.__name__})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return load_yaml_with_lines(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(x for x in (exc.context, exc.problem) if x)
        raise error(_one_line(f"{path}{f':{mark.line + 1}' if mark else ''}: YAML error: {problem}")) from None
    except yaml.YAMLError as exc:
        raise error(_one_line(f"{path}: YAML error: {exc}")) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
