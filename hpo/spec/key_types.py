"""The types of a task's config keys: :class:`KeyTypes` checks a value against the annotation of the
dataclass field it sets (train / model / data sections, and ``lr_<group>`` keys), and
:func:`implicit_defaults` gives every key's dataclass default (visible to a space's expressions).
"""

from __future__ import annotations

import dataclasses
import typing
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from hpo.errors import name_rule
from hpo.spec.pydantic_errors import union_members

if TYPE_CHECKING:
    from hpo.tasks.base import Task


class KeyTypes:
    """Checks values against the type of a config key (the dataclass field's annotation)."""

    def __init__(self, task_cls: type["Task"]) -> None:
        self.task_cls = task_cls
        self.fields = task_cls.config_fields()

    def kind(self, key: str) -> str | None:
        hint = self._hint(key)
        if hint is None:
            return None
        base = [a for a in union_members(hint) if a is not type(None)]
        if base == [bool]:
            return "bool"
        if base == [int]:
            return "int"
        return None

    def _hint(self, key: str) -> Any:
        if key.startswith("lr_") and key[3:] in self.task_cls.param_groups:
            return float
        if key not in self.fields:
            return None
        section, f = self.fields[key]
        owner = {"train": None, "model": self.task_cls.ModelConfig, "data": self.task_cls.DataConfig}[section]
        if owner is None:
            from hpo.train.config import TrainConfig

            owner = TrainConfig
        return _hints(owner).get(key, Any)

    def check(self, key: str, value: Any) -> str | None:
        hint = self._hint(key)
        if hint is None:
            if key not in self.task_cls.config_keys():
                return name_rule(f"config key of task {self.task_cls.name}", key, self.task_cls.config_keys())
            return None
        try:
            _adapter(hint).validate_python(value, strict=True)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            msg = err["msg"].replace("Input should be", "must be")
            if len(e.errors()) > 1:
                words = sorted({x["msg"].replace("Input should be ", "") for x in e.errors(include_url=False)})
                msg = "must be " + " or ".join(words)
            return msg
        except Exception:  # an annotation pydantic cannot check: accept
            return None
        if key.startswith("lr_") and not value > 0:
            return "must be > 0"
        return None


def implicit_defaults(task_cls: type["Task"]) -> dict[str, Any]:
    """Every config key's dataclass default (keys without one are left out)."""
    out: dict[str, Any] = {}
    for key, (_, f) in task_cls.config_fields().items():
        if f.default is not dataclasses.MISSING:
            out[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[key] = f.default_factory()  # type: ignore[misc]
    return out


@lru_cache(maxsize=None)
def _hints(dc: type) -> dict:
    return typing.get_type_hints(dc)


@lru_cache(maxsize=None)
def _adapter_cached(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


def _adapter(hint: Any) -> TypeAdapter:
    try:
        return _adapter_cached(hint)
    except TypeError:  # unhashable annotation
        return TypeAdapter(hint)
