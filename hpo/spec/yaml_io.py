"""YAML reading (YAML 1.2 core schema, bounded), writing, and round-trip editing of configs.

PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a *string*, ``no``/``on``/``y`` are booleans, ``010`` is
8 and ``1:30`` is 90: a learning rate, a scheduler named ``on`` or a layer list ``010`` would silently change
meaning. :class:`Loader` resolves plain scalars by the YAML 1.2 core schema instead: ``null``/``Null``/``NULL``/
``~``/empty; ``true``/``True``/``TRUE``/``false``/``False``/``FALSE`` (every other word is a string); ints
``[-+]?[0-9]+`` (decimal, so ``010`` is 10), ``0o10`` (8) and ``0x10`` (16); floats ``3e-4``, ``1E5``, ``.5``,
``1.0e-3``, ``.inf``/``-.inf``/``.nan``. Digits may be grouped with ``_`` (``1_000``), as before. ``1:30`` and
dates are strings. Explicit tags (``!!int``, ``!!float``, ``!!bool``) follow the same rules. ``<<`` merge keys
still work. Duplicate keys are an error, not a silent overwrite.

Every document is bounded before it is built, so a crafted file gets one clear error at once instead of
hanging or exhausting memory: its size (:data:`MAX_BYTES`; PyYAML reads about 100 KB a second), its
nesting (:data:`MAX_DEPTH` levels, counted while composing, before Python's recursion limit), and the
nodes it expands to through aliases (:data:`MAX_NODES`: a 750-byte "billion laughs" file expands to
10**9); an alias may not refer to a node that contains it.

:func:`dump_yaml` quotes every string that YAML 1.1 *or* 1.2 would read as something else, so what it writes
means the same to this loader and to a YAML 1.1 reader. :func:`edit_yaml` rewrites a document to new data by
editing a round-trip copy (ruamel.yaml): comments, key order and layout of everything unchanged are kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hpo.errors import Problem, SpecError

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_FLOAT_TAGGED = re.compile(rf"{_FLOAT_12.pattern}|^[-+]?[0-9][0-9_]*$", re.X)
_INT_12 = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7][0-7_]*|0x[0-9a-fA-F][0-9a-fA-F_]*)$")
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_12 = re.compile(r"^(?:~|null|Null|NULL|)$")
_MERGE = re.compile(r"^(?:<<)$")


MAX_BYTES = 128 * 1024  # the largest study/space file (the shipped ones are under 6 KB; parsing 128 KB takes about 1 s)
MAX_DEPTH = 64  # levels of nested mappings/sequences
MAX_NODES = 100_000  # nodes of the document with every alias expanded


class _Bound(Exception):
    def __init__(self, where: str, message: str, got: Any = None, has_got: bool = True) -> None:
        super().__init__(message)
        self.where, self.message, self.got, self.has_got = where, message, got, has_got


class Loader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent, index):  # counts nesting before recursing (PyYAML's composer recurses)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Bound(f"line {mark.line + 1}, column {mark.column + 1}",
                             f"YAML must nest at most {MAX_DEPTH} levels deep", MAX_DEPTH + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass):  # [[[[... : refused by the scanner, which looks ahead
        if self.flow_level >= MAX_DEPTH:
            mark = self.get_mark()
            raise _Bound(f"line {mark.line + 1}, column {mark.column + 1}", f"YAML must nest at most {MAX_DEPTH} levels deep",
                         MAX_DEPTH + 1)
        return super().fetch_flow_collection_start(TokenClass)


# The YAML 1.2 core schema's resolvers replace every implicit one of YAML 1.1 (bool yes/no/on/off/y/n,
# octal 010, sexagesimal 1:30, timestamps, ``=``), keeping the merge key ``<<``.
Loader.yaml_implicit_resolvers = {}
for _tag, _rx, _first in (
    ("tag:yaml.org,2002:null", _NULL_12, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF")),
    ("tag:yaml.org,2002:int", _INT_12, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789.")),
    ("tag:yaml.org,2002:merge", _MERGE, ["<"]),
):
    Loader.add_implicit_resolver(_tag, _rx, _first)


def _scalar_rule(loader: Loader, node: yaml.ScalarNode, kind: str, rx: re.Pattern) -> str:
    value = loader.construct_scalar(node)
    if not isinstance(value, str) or not rx.match(value) or (kind != "null" and value == ""):
        raise yaml.constructor.ConstructorError(None, None, f"{value!r} is not a YAML 1.2 {kind}", node.start_mark)
    return value


def _construct_int(loader: Loader, node: yaml.ScalarNode) -> int:
    value = _scalar_rule(loader, node, "int", _INT_12).replace("_", "")
    base = {"0o": 8, "0x": 16}.get(value[:2], 10)  # decimal: a leading zero is not octal
    return int(value[2:] if base != 10 else value, base)


def _construct_float(loader: Loader, node: yaml.ScalarNode) -> float:
    value = _scalar_rule(loader, node, "float", _FLOAT_TAGGED).replace("_", "").lower()  # !!float 1 is 1.0
    if value.endswith(".inf"):
        return float("-inf") if value.startswith("-") else float("inf")
    if value == ".nan":
        return float("nan")
    return float(value)


def _construct_bool(loader: Loader, node: yaml.ScalarNode) -> bool:
    return _scalar_rule(loader, node, "bool", _BOOL_12).lower() == "true"


Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def _construct_mapping(loader: Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: its keys may be overridden here
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error becomes a :class:`SpecError` naming file and line."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more than the bound (a huge file, /dev/zero)
        if len(data) > MAX_BYTES:
            size = path.stat().st_size if path.is_file() else 0
            got = f"{size} bytes" if size > MAX_BYTES else "more (it does not end)"
            raise SpecError([Problem("", f"must be at most {MAX_BYTES} bytes (a study, space or config file), but got {got}",
                                     has_got=False)], file=str(path))
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([Problem("", f"must be UTF-8 text, but byte {e.start} is not", has_got=False)], file=str(path)) from None
    except FileNotFoundError:
        raise SpecError([Problem("", "file not found", has_got=False)], file=str(path)) from None
    except IsADirectoryError:
        raise SpecError([Problem("", "is a directory, not a YAML file", has_got=False)], file=str(path)) from None
    return loads_yaml(text, str(path))


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Nodes under each node (itself included) with aliases expanded, by id; iterative, memoised,
    so a bomb is measured in the time of its few composed nodes. Raises on an alias cycle."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Bound(f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}",
                         "an alias must not refer to a node that contains it", has_got=False)
        on_path.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in on_path:
                raise _Bound(f"line {c.start_mark.line + 1}, column {c.start_mark.column + 1}",
                             "an alias must not refer to a node that contains it", has_got=False)
            if id(c) not in sizes:
                stack.append((c, False))
    return sizes


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    sizes = _expanded_sizes(root)
    total = sizes[id(root)]
    if total <= MAX_NODES:
        return
    path, node = [], root  # name the key whose value is too big (through mappings)
    while isinstance(node, yaml.MappingNode):
        big = [(k, v) for k, v in node.value if sizes[id(v)] > MAX_NODES]
        if not big:
            break
        k, node = big[0]
        path.append(str(k.value) if isinstance(k, yaml.ScalarNode) else "?")
    where = ".".join(path) or f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"
    size = sizes[id(node)] if path else total
    raise _Bound(where, f"aliases must expand to at most {MAX_NODES} nodes", size)


def loads_yaml(text: str, name: str = "<string>") -> Any:
    if len(text) > MAX_BYTES:
        raise SpecError([Problem("", f"must be at most {MAX_BYTES} characters (a study, space or config file), but got {len(text)}",
                                 has_got=False)], file=name)
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except _Bound as e:
        raise SpecError([Problem(e.where, e.message, e.got, has_got=e.has_got)], file=name) from None
    except RecursionError:  # not expected within MAX_DEPTH; never a traceback
        raise SpecError([Problem("", f"YAML must nest at most {MAX_DEPTH} levels deep", has_got=False)], file=name) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError([Problem("", f"invalid YAML at {where}: {problem}", has_got=False)], file=name) from None
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    """Quotes a string that YAML 1.1 (PyYAML's resolvers) or 1.2 (:class:`Loader`'s) would read as another type."""


_Dumper.yaml_implicit_resolvers = {ch: list(rs) for ch, rs in yaml.SafeDumper.yaml_implicit_resolvers.items()}
for _ch, _rs in Loader.yaml_implicit_resolvers.items():
    _Dumper.yaml_implicit_resolvers.setdefault(_ch, []).extend(_rs)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _same(a: Any, b: Any) -> bool:
    """Equal as data, with bools, ints and floats told apart (``True == 1`` is not the same value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list, tuple)) or isinstance(b, (dict, list, tuple)):
        return False
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # nan
        return True
    kind = lambda v: bool if isinstance(v, bool) else int if isinstance(v, int) else float if isinstance(v, float) else type(v)
    return kind(a) is kind(b) and a == b


def _edit(node: Any, new: Any) -> Any:
    """``node`` (a round-trip mapping/sequence/scalar) made equal to ``new``, edited in place where both are
    containers of one kind, so the comments and layout of what did not change stay; returns the node to keep."""
    from collections.abc import MutableMapping, MutableSequence

    if _same(_plain(node), new):
        return node
    if isinstance(node, MutableMapping) and isinstance(new, dict):
        for key in [k for k in node if k not in new]:
            del node[key]
        previous = None
        for key, value in new.items():
            if key in node:
                kept = _edit(node[key], value)
                if kept is not node[key]:
                    node[key] = kept  # an existing key keeps its place (and its comments)
            elif hasattr(node, "insert"):  # a new key goes where ``new`` has it: after the key before it
                node.insert(list(node).index(previous) + 1 if previous in node else 0, key, _rt_value(value))
            else:
                node[key] = _rt_value(value)
            previous = key
        return node
    if isinstance(node, MutableSequence) and isinstance(new, list):
        old = [_plain(x) for x in node]
        j, keep = 0, []  # ``new`` a subsequence of ``node`` (choices dropped): delete the others in place
        for i, x in enumerate(old):
            if j < len(new) and _same(x, new[j]):
                keep.append(i)
                j += 1
        if j == len(new):
            for i in reversed([i for i in range(len(old)) if i not in keep]):
                del node[i]
            return node
        if len(old) == len(new):
            for i, value in enumerate(new):
                kept = _edit(node[i], value)
                if kept is not node[i]:
                    node[i] = kept
            return node
        del node[:]
        node.extend(_rt_value(v) for v in new)
        return node
    return _rt_value(new)


def _ambiguous(text: str) -> bool:
    """Whether a plain ``text`` would read as something other than a string in YAML 1.1 or 1.2."""
    return any(rx.match(text) for _, rx in _Dumper.yaml_implicit_resolvers.get(text[:1], []))


def _rt_value(value: Any) -> Any:
    """New data for a round-trip document, its ambiguous strings single-quoted (``'no'``, ``'010'``)."""
    from ruamel.yaml.scalarstring import SingleQuotedScalarString

    if isinstance(value, dict):
        return {k: _rt_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rt_value(v) for v in value]
    if isinstance(value, str) and _ambiguous(value):
        return SingleQuotedScalarString(value)
    return value


def _plain(node: Any) -> Any:
    from collections.abc import Mapping

    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _mapping_indent(text: str) -> int:
    """The indentation of block mappings in ``text``: the first ``key:`` line opening a nested mapping, and
    the line under it (2 where none nests)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for a, b in zip(lines, lines[1:]):
        head = re.match(r"^( *)[^\s#-][^#]*:\s*(#.*)?$", a)
        under = re.match(r"^( *)[^\s#-]", b)
        if head and under and len(under.group(1)) > len(head.group(1)):
            return len(under.group(1)) - len(head.group(1))
    return 2


def edit_yaml(text: str, new: Any, name: str = "<string>") -> str | None:
    """``text`` rewritten so that it loads as ``new``, keeping the comments, key order and layout of every part
    that did not change (a round-trip edit with ruamel.yaml); None where that cannot be done faithfully (the
    document uses anchors that an edit would change twice, a construct the round trip reads differently):
    the caller then writes :func:`dump_yaml`. ``text`` passes :func:`loads_yaml`'s bounds first."""
    import io
    import logging

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from ruamel.yaml.util import load_yaml_guess_indent

    loads_yaml(text, name)  # size, depth, alias expansion, duplicate keys: refused as when it was loaded
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # rewritten long strings (a description) stay on one line
    try:
        _, seq_indent, offset = load_yaml_guess_indent(text)  # of block sequences (ruamel's guess)
        mapping = _mapping_indent(text)
        if offset is None:
            rt.indent(mapping=mapping, sequence=mapping, offset=0)
        else:
            rt.indent(mapping=mapping, sequence=seq_indent, offset=offset)
        doc = rt.load(text)
        doc = _edit(doc, new)
        buf = io.StringIO()
        rt.dump(doc, buf)
    except (YAMLError, ValueError, TypeError) as e:
        logging.getLogger(__name__).warning("%s: cannot be edited in place (%s); writing it anew", name, e)
        return None
    result = buf.getvalue()
    try:
        faithful = _same(loads_yaml(result, name), new)
    except Exception:
        faithful = False
    if not faithful:
        logging.getLogger(__name__).warning("%s: an in-place edit would not read back as the new data; writing it anew", name)
        return None
    return result
