"""Task registry: ``@register_task("name")`` on a :class:`Task` subclass; ``get_task(name)``.

Built-in families live in the ``models`` package and are imported on first lookup, so ``hpo --help``
stays fast. Third-party tasks register through the entry-point group ``fusion_hpo.tasks``
(``name = "package.module:TaskClass"``) or are named directly as ``"package.module:TaskClass"``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

from hpo.errors import UnknownNameError
from hpo.registry import Registry
from hpo.tasks.base import DataPath, DatasetSpec, NoDataConfig, Splits, StepOutput, Task

TASKS: Registry[type[Task]] = Registry("task")

#: built-in task name -> module that registers it on import
BUILTIN_TASKS = {
    "crystal_text": "models.crystal_text",
    "traffic": "models.traffic",
    "drug_target": "models.drug_target",
    "face3d": "models.face3d",
    "toy": "models.toy",
}


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
        if name in BUILTIN_TASKS:
            try:
                importlib.import_module(BUILTIN_TASKS[name])
            except ModuleNotFoundError as e:  # family not present in this checkout
                if e.name and BUILTIN_TASKS[name].startswith(e.name):
                    raise UnknownNameError("task", name, available_task_names()) from None
                raise
        else:
            _load_entry_points(name)
    return TASKS.get(name)


def available_task_names() -> list[str]:
    names = set(TASKS.names())
    for name, module in BUILTIN_TASKS.items():
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            try:
                if importlib.util.find_spec(module) is not None:
                    names.add(name)
            except ModuleNotFoundError:
                pass
    return sorted(names)


def list_tasks() -> list[str]:
    return available_task_names()


def _load_entry_points(name: str) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="fusion_hpo.tasks"):
        if ep.name == name:
            cls = ep.load()
            if name not in TASKS:
                TASKS.add(name, cls)


__all__ = [
    "BUILTIN_TASKS",
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
