"""Imports inside ``hpo/`` run one way: a package imports only from packages below it.

The layers, lowest first (``../README.md``'s Layout section says why ``train`` sits below ``tasks``)::

    errors, registry  <-  data  <-  train  <-  tasks  <-  spec  <-  search  <-  store  <-  run  <-  analysis  <-  cli

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
          ("analysis",), ("cli",))
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
