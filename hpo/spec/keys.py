"""Every YAML key a study of a task accepts, with its section, type, default and help (``hpo keys TASK``).

Two kinds of keys: the study file's own sections, derived from the pydantic models of
:mod:`hpo.spec.schema` (top-level keys in section ``study``, nested ones under their key, e.g. ``budget``;
a tagged union such as ``sampler`` gives one section per ``type``, e.g. ``sampler (tpe)``; the task's
``dataset`` keys come from its own ``DatasetSpec``), and the config keys of a trial (``training:``
defaults, search-space parameters, exported configs), derived from ``Task.config_fields()`` (sections
``train``, ``model``, ``data``) plus ``lr_<group>`` for each of ``Task.param_groups``. Help texts are the
pydantic field descriptions (where a model gives them) and the config fields' ``metadata["help"]``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hpo.spec.schema import StudySpec
from hpo.tasks import Task
from hpo.train.config import TrainConfig

#: study keys whose value is a document of its own, not listed key by key
_NOT_NESTED = frozenset({"space", "training"})


@dataclass(frozen=True)
class Key:
    """One YAML key: where it goes (``section``), its name, type, default and one-line help."""

    section: str
    key: str
    type: str
    default: Any
    help: str
    required: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def task_keys(task_cls: type[Task]) -> list[Key]:
    """The study keys, then the config keys, of a study of ``task_cls``."""
    return [*study_keys(task_cls), *config_keys(task_cls)]


def config_keys(task_cls: type[Task]) -> list[Key]:
    """The flat config keys of ``task_cls``: TrainConfig, ModelConfig and DataConfig fields, then ``lr_<group>``."""
    out = []
    hints: dict[type, dict[str, Any]] = {}
    for name, (section, f) in task_cls.config_fields().items():
        owner = _owner(task_cls, section)
        if owner not in hints:
            hints[owner] = typing.get_type_hints(owner)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        required = default is dataclasses.MISSING
        out.append(Key(section, name, type_name(hints[owner].get(name, f.type)), None if required else default,
                       f.metadata.get("help", ""), required))
    for group in task_cls.param_groups:
        out.append(Key("train", f"lr_{group}", "float", None,
                       f"learning rate of the parameter group {group!r} (default: lr)"))
    return out


def study_keys(task_cls: type[Task] | None = None) -> list[Key]:
    """The keys of a study file; with ``task_cls``, ``task.dataset`` lists that task's dataset keys."""
    out = list(_model_keys(StudySpec, "study", skip=_NOT_NESTED))
    if task_cls is not None:
        spec = task_cls.DatasetSpec
        variants = spec.formats() or {None: spec}
        for fmt, model in sorted(variants.items(), key=lambda kv: str(kv[0])):
            section = "task.dataset" if fmt is None else f"task.dataset ({fmt})"
            out.extend(_model_keys(model, section, nested=False))
    return out


def _owner(task_cls: type[Task], section: str) -> type:
    return {"train": TrainConfig, "model": task_cls.ModelConfig, "data": task_cls.DataConfig}[section]


def _model_keys(model: type[BaseModel], section: str, skip: frozenset[str] = frozenset(), nested: bool = True,
                seen: set[type] | None = None) -> Iterator[Key]:
    """Rows for every field of ``model`` in ``section``, then (``nested``) the sections of its sub-models that
    no earlier section lists (``seen``: a recursive union such as a patient pruner's ``wrapped`` is listed once)."""
    seen = {model} if seen is None else seen
    later: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            default = info.default_factory()
        else:
            default = None if info.default is PydanticUndefined else info.default
        if isinstance(default, BaseModel):
            default = default.model_dump(exclude_defaults=True)
        help_text = info.description or ""
        if not help_text and name == "type" and "(" in section:  # the tag of a tagged union: `sampler (tpe)`
            help_text = f"selects this {section.split(' (')[0]}: {section.split(' (', 1)[1].rstrip(')')}"
        yield Key(section, name, type_name(info.annotation), default, help_text, info.is_required())
        subs = [m for m in _sub_models(info.annotation) if m not in seen] if nested and name not in skip else []
        seen.update(subs)
        sub_section = name if section == "study" else f"{section}.{name}"
        tagged = len(subs) > 1 and all("type" in m.model_fields for m in subs)
        for sub in subs:
            tag = ", ".join(map(str, typing.get_args(sub.model_fields["type"].annotation))) if tagged else ""
            later.append((f"{sub_section} ({tag})" if tag else sub_section, sub))
    for sub_section, sub in later:
        yield from _model_keys(sub, sub_section, skip=skip, nested=nested, seen=seen)


def _sub_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's value may be (through Optional, Union, Annotated and list; not dict values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is dict:
        return []
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for m in _sub_models(arg):
            if m not in out:
                out.append(m)
    return out


def type_name(annotation: Any) -> str:
    """A short, readable name of a type annotation: ``int``, ``float or null``, ``one of: a, b``, ``list of str``."""
    if annotation is type(None) or annotation is None:
        return "null"
    if isinstance(annotation, str):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin is typing.Union or _is_union_type(origin):
        names = [type_name(a) for a in args if a is not type(None)]
        if "int" in names and "float" in names:  # StrictInt | StrictFloat
            names = ["number" if n == "int" else n for n in names if n != "float"]
        nullable = any(a is type(None) for a in args)
        text = " or ".join(dict.fromkeys(names))
        return f"{text} or null" if nullable else text
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _is_union_type(origin: Any) -> bool:
    return origin is types.UnionType
