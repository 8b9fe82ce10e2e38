"""Turn pydantic's ValidationError into :class:`hpo.errors.Problem`s: ``key.path: rule, but got X``.

Pydantic's locations contain union member names (``params.lr.float.low``) and one error per union
member; here locations follow the user's file (members dropped), errors on the same key are merged,
and unknown keys list the valid keys of the section with the closest one.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from hpo.errors import Problem, closest

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}


def problems_from_validation(error: ValidationError, root: type[BaseModel], data: Any, prefix: str = "") -> list[Problem]:
    grouped: dict[tuple, list[dict]] = {}
    for err in error.errors(include_url=False):
        loc = _user_loc(err["loc"], data, err["type"])
        grouped.setdefault(loc, []).append(err)
    problems = []
    for loc, errs in grouped.items():
        path = ".".join(str(x) for x in loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        problems.append(_problem(path, loc, errs, root, data))
    return problems


def _problem(path: str, loc: tuple, errs: list[dict], root: type[BaseModel], data: Any) -> Problem:
    kinds = {e["type"] for e in errs}
    first = errs[0]
    got = _value_at(data, loc)
    if isinstance(got, str) and "://" in got:  # a URL is shown without its secrets (storage: ...?password=)
        from hpo.spec.urls import redact

        got = redact(got)
    if "extra_forbidden" in kinds:
        model = _model_at(root, loc[:-1], data)
        valid = sorted(model.model_fields) if model is not None else []
        msg = "is not a known key"
        if valid:
            msg += f"; valid keys here: {', '.join(valid)}"
            near = closest(str(loc[-1]), valid)
            if near:
                msg += f" (did you mean {near!r}?)"
        return Problem(path, msg, has_got=False)
    if "missing" in kinds:
        return Problem(path, "is required", has_got=False)
    if "union_tag_not_found" in kinds:
        ctx = first.get("ctx") or {}
        disc = str(ctx.get("discriminator", "type")).strip("'")
        return Problem(f"{path}.{disc}" if path else disc, "is required", has_got=False)
    if "union_tag_invalid" in kinds:
        from hpo.errors import name_rule

        ctx = first.get("ctx") or {}
        disc = str(ctx.get("discriminator", "type")).strip("'")
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        msg = name_rule(disc, ctx.get("tag"), expected)
        return Problem(f"{path}.{disc}" if path else disc, msg, ctx.get("tag"))
    if kinds <= set(_TYPE_WORDS) or kinds <= set(_TYPE_WORDS) | {"literal_error"}:
        words = []
        for e in errs:
            w = _TYPE_WORDS.get(e["type"])
            if e["type"] == "literal_error":
                w = "one of " + str((e.get("ctx") or {}).get("expected", ""))
            if w and w not in words:
                words.append(w)
        if words == ["an integer", "a number"] or set(words) == {"an integer", "a number"}:
            words = ["a number"]
        return Problem(path, "must be " + " or ".join(words), got)
    msgs = []
    for e in errs:
        m = e["msg"]
        for pre in ("Value error, ", "Assertion failed, "):
            if m.startswith(pre):
                m = m[len(pre):]
        m = m[0].lower() + m[1:] if m else m
        m = m.replace("input should be", "must be").replace("string should match", "must match").replace("should be", "must be")
        if m not in msgs:
            msgs.append(m)
    return Problem(path, " or ".join(msgs), got)


def _user_loc(loc: tuple, data: Any, kind: str) -> tuple:
    """Keep only location parts that index into the user's data (drops union member names)."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif last and kind in ("missing", "extra_forbidden") and isinstance(node, dict):
            out.append(part)
            node = None
        # else: a union member name or a tag; not part of the user's file
    return tuple(out)


def _value_at(data: Any, loc: Iterable) -> Any:
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _model_at(root: type[BaseModel], loc: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``loc`` of ``data``."""
    ann: Any = root
    node = data
    for part in loc:
        model = _pick_model(ann, node)
        if model is not None:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            ann = field.annotation
        else:
            ann = _container_item(ann)
            if ann is None:
                return None
        node = _value_at(node, [part])
    return _pick_model(ann, node)


def union_members(ann: Any) -> list:
    """The members of a (possibly Annotated, Optional, nested) union annotation."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return union_members(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        out = []
        for a in typing.get_args(ann):
            out += union_members(a)
        return out
    return [ann]


def _pick_model(ann: Any, node: Any) -> type[BaseModel] | None:
    models = [a for a in union_members(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    if not models:
        return None
    if len(models) == 1:
        m = models[0]
        return m.variant_for(node) if hasattr(m, "variant_for") else m
    if not isinstance(node, dict):
        return None
    for m in models:  # the member whose Literal-typed tag field (type, format, ...) matches the data
        for name, f in m.model_fields.items():
            if typing.get_origin(f.annotation) is typing.Literal and node.get(name) in typing.get_args(f.annotation):
                return m
    return None


def _container_item(ann: Any) -> Any:
    for a in union_members(ann):
        origin = typing.get_origin(a)
        if origin in (dict, typing.Dict):
            return typing.get_args(a)[1]
        if origin in (list, typing.List):
            return typing.get_args(a)[0]
    return None
