"""YAML reading with YAML 1.2 numbers, and writing of configs.

PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a *string*: a learning rate written the way
everyone writes it would silently become text. :class:`Loader` resolves YAML 1.2 floats
(``3e-4``, ``1E5``, ``.5``) as floats. Duplicate keys are an error, not a silent overwrite.

Every document is bounded before it is built, so a crafted file gets one clear error at once instead of
hanging or exhausting memory: its size (:data:`MAX_BYTES`; PyYAML reads about 100 KB a second), its
nesting (:data:`MAX_DEPTH` levels, counted while composing, before Python's recursion limit), and the
nodes it expands to through aliases (:data:`MAX_NODES`: a 750-byte "billion laughs" file expands to
10**9); an alias may not refer to a node that contains it.
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
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


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


# Replace the float resolver: remove YAML 1.1's, add YAML 1.2's.
Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _construct_mapping(loader: Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
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


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
