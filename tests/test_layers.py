"""Imports inside ``hpo/`` run one way: a package imports only from packages below it.

The layers, lowest first (``../README.md``'s Layout section says why ``train`` sits below ``tasks``)::

    errors, registry  <-  data  <-  train  <-  tasks  <-  spec  <-  search  <-  store  <-  run  <-  plan  <-  analysis  <-  cli

Every import counts, at module level or inside a function (a lazy import is still a dependency); only
imports under ``if TYPE_CHECKING:`` are free (they never run). ``hpo`` never imports the built-in families
(``models``): they register through entry points like any third-party family.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = (("errors", "registry"), ("data",), ("train",), ("tasks",), ("spec",), ("search",), ("store",), ("run",),
          ("plan",), ("analysis",), ("cli",))
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import that runs, resolved to absolute names."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    package = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}" if base in ("hpo",) else base) for a in node.names]
    return out


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "hpo" and len(parts) > 1 and parts[1] in RANK else None


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "hpo").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")] + ".__init__"
        here = layer_of(module)
        for line, name in imports_of(path.read_text(), module):
            rel = f"{path.relative_to(root)}:{line}"
            if name == "models" or name.startswith("models."):
                found.append(f"{rel}: imports the built-in families ({name}); use the task registry")
                continue
            there = layer_of(name)
            if here is None or there is None or here == there:
                continue
            if RANK[there] > RANK[here]:
                found.append(f"{rel}: {here} imports {name} from the higher layer {there}")
    return found


def test_imports_inside_hpo_run_one_way():
    found = violations(ROOT)
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_the_check_fails_on_an_upward_import(tmp_path):
    """The check itself: a planted upward import (lazy, inside a function) and a family import are found;
    one under TYPE_CHECKING is not."""
    pkg = tmp_path / "hpo"
    for sub in ("data", "run"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hpo.run import loop\n"
        "def f():\n    from hpo.run.loop import x\n    import models.toy\n")
    found = violations(tmp_path)
    assert len(found) == 2, found
    assert "data imports hpo.run.loop from the higher layer run" in found[0]
    assert "built-in families" in found[1]


@pytest.mark.parametrize("layer", sorted(RANK))
def test_every_layer_is_a_package_or_module(layer):
    assert (ROOT / "hpo" / layer / "__init__.py").exists() or (ROOT / "hpo" / f"{layer}.py").exists()


def import_graph(root: Path) -> dict[str, set[str]]:
    """hpo module -> the hpo modules it imports when it runs (lazy imports included)."""
    modules = {}
    for path in (root / "hpo").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = name + ".__init__" if path.name == "__init__.py" else name
        edges = set()
        for _, imported in imports_of(path.read_text(), own):
            while imported and imported not in modules:  # hpo.x.y.name -> the module hpo.x.y
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported.startswith("hpo"):
                edges.add(imported)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_inside_hpo():
    """No two hpo modules import each other, directly or through others (lazy imports count: a cycle broken
    only by putting an import inside a function is still a cycle in the design). A package's ``__init__``
    re-exporting its own modules is not a cycle unless one of those modules imports the package back."""
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_cycle_check_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
