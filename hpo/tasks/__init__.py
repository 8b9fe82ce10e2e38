"""Task registry: ``@register_task("name")`` on a :class:`Task` subclass; ``get_task(name)``.

Every family registers the same way, built-in or third-party: an entry point in the group
``fusion_hpo.tasks`` (``name = "package.module:TaskClass"``, in ``pyproject.toml``), loaded on first lookup
so ``hpo --help`` stays fast. The built-ins in ``models/`` are declared there like any other package's;
``hpo`` itself never names them. A task can also be named directly as ``"package.module:TaskClass"``, or
registered by importing a module that applies :func:`register_task`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from hpo.errors import UnknownNameError
from hpo.registry import Registry
from hpo.data.dataset import DataPath, DatasetSpec
from hpo.tasks.base import NoDataConfig, StepOutput, Task
from hpo.tasks.splits import Splits

TASKS: Registry[type[Task]] = Registry("task")

ENTRY_POINT_GROUP = "fusion_hpo.tasks"


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        cls.config_fields()  # fail at import if two config sections share a key
        TASKS.add(name, cls)
        return cls

    return deco


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        if ":" in name:
            module, _, attr = name.partition(":")
            cls = getattr(importlib.import_module(module), attr)
            if not (isinstance(cls, type) and issubclass(cls, Task)):
                raise TypeError(f"{name} is not a Task subclass")
            if not cls.name:
                cls.name = name
            return cls
        else:
            _load_entry_point(name)
    return TASKS.get(name)


def available_task_names() -> list[str]:
    """Registered tasks and every task an installed package declares (without importing it)."""
    return sorted(set(TASKS.names()) | {ep.name for ep in _entry_points()})


def list_tasks() -> list[str]:
    return available_task_names()


def _entry_points():
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


DISTRIBUTION = "fusion-hpo"  # the distribution that ships hpo and the built-in families (import name ``models``)


def _check_not_shadowed(ep) -> None:
    """Refuse a built-in family whose import package is hidden: the built-ins import as ``models.*``, a common
    name, so a user's own ``models/`` folder earlier on ``sys.path`` (the current folder, PYTHONPATH) would be
    imported instead. An entry point of the distribution fusion-hpo must resolve inside it (next to ``hpo``);
    else a :class:`~hpo.errors.UsageError` names both paths. Nothing of the found package is imported."""
    import importlib.util
    from pathlib import Path

    dist = getattr(ep, "dist", None)
    if dist is None or (dist.metadata["Name"] or "").lower().replace("_", "-") != DISTRIBUTION:
        return
    top = ep.value.partition(":")[0].strip().split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return  # not importable at all: the loader reports it
    found = Path(next(iter(spec.submodule_search_locations or []), None) or spec.origin or "").resolve()
    import hpo

    # hpo and the built-ins are installed side by side (site-packages, or the checkout of an editable install);
    # not the distribution's own location: an editable install's metadata lies in site-packages, its code not
    home = Path(hpo.__file__).resolve().parent.parent
    if not (found == home / top or home / top in found.parents):
        from hpo.errors import UsageError

        raise UsageError(
            f"task {ep.name}: the import name {top!r} resolves to {found}, which hides {DISTRIBUTION}'s built-in "
            f"families at {home / top} (a folder named {top}/ earlier on sys.path: the current folder or "
            f"PYTHONPATH); rename that folder or take it off the path")


def _load_entry_point(name: str) -> None:
    for ep in _entry_points():
        if ep.name == name:
            _check_not_shadowed(ep)
            try:
                cls = ep.load()
            except ModuleNotFoundError as e:  # declared by a package whose code is gone (e.g. a deleted family)
                raise UnknownNameError("task", name, available_task_names()) from e
            if not (isinstance(cls, type) and issubclass(cls, Task)):
                raise TypeError(f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP} is not a Task subclass")
            if name not in TASKS:
                if not cls.name:
                    cls.name = name
                TASKS.add(name, cls)
            return


__all__ = [
    "ENTRY_POINT_GROUP",
    "DataPath",
    "DatasetSpec",
    "NoDataConfig",
    "Splits",
    "StepOutput",
    "TASKS",
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
]
