"""A search space file -> a :class:`hpo.spec.space.CompiledSpace`, with every semantic check.

:func:`validate_space_structure` checks a space mapping against :class:`hpo.spec.schema.SearchSpaceSpec`;
:func:`compile_space` then checks what needs the task (config key names and types, ranges, ``when:``
conditions, ``derived:`` and ``constraints:`` expressions, the defaults making a valid config) and
compiles the baselines (:mod:`hpo.spec.baselines`); :func:`load_space` does both for a file. Every
problem is appended to the caller's list as ``file: key.path: rule, but got X``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import ValidationError

from hpo.errors import Problem, SpecError, closest, name_rule
from hpo.spec.baselines import compile_baselines
from hpo.spec.expr import Expression, ExpressionError
from hpo.spec.key_types import KeyTypes, implicit_defaults
from hpo.spec.pydantic_errors import problems_from_validation
from hpo.spec.schema import SearchSpaceSpec
from hpo.spec.space import CompiledSpace, Constraint, ParamDef
from hpo.spec.yaml_io import load_yaml

if TYPE_CHECKING:
    from hpo.tasks.base import Task


def load_space(path: str | Path, task_cls: type["Task"], training: Mapping[str, Any] | None = None) -> CompiledSpace:
    """Read and validate a search space file against a task's config keys."""
    path = Path(path)
    raw = load_yaml(path)
    problems: list[Problem] = []
    spec = validate_space_structure(raw, str(path), "", problems)
    if spec is None:
        raise SpecError(problems, str(path))
    space = compile_space(spec, task_cls, dict(training or {}), problems, file=str(path), prefix="")
    if problems:
        raise SpecError(problems, str(path))
    return space


def validate_space_structure(raw: Any, fname: str | None, prefix: str, problems: list[Problem]) -> SearchSpaceSpec | None:
    if not isinstance(raw, dict):
        problems.append(Problem(prefix, "must be a mapping with params, fixed, derived, constraints, baselines", raw, file=fname))
        return None
    try:
        return SearchSpaceSpec.model_validate(raw)
    except ValidationError as e:
        for p in problems_from_validation(e, SearchSpaceSpec, raw, prefix=prefix):
            problems.append(dataclasses.replace(p, file=fname))
        return None


def compile_space(
    spec: SearchSpaceSpec,
    task_cls: type["Task"],
    training: dict,
    problems: list[Problem],
    *,
    file: str | None,
    prefix: str,
    extra_baselines: Mapping[str, dict] | None = None,
    extra_file: str | None = None,
) -> CompiledSpace | None:
    """Semantic checks of a structurally valid space; appends problems; returns the compiled space.
    ``extra_baselines`` are the study's own plans (reported against ``extra_file``)."""
    n_before = len(problems)
    known = task_cls.config_keys()
    types = KeyTypes(task_cls)

    def add(path: str, message: str, got: Any = None, has_got: bool = True) -> None:
        problems.append(Problem(join_key(prefix, path), message, got, has_got, file=file))

    def unknown_key(path: str, key: str) -> None:
        add(path, name_rule(f"config key of task {task_cls.name}", key, known), key)

    params: list[ParamDef] = []
    declared: list[str] = []
    all_params = list(spec.params)
    for name, p in spec.params.items():
        path = f"params.{name}"
        if name not in known:
            unknown_key(path, name)
            continue
        if name in spec.fixed:
            add(path, "is also in fixed: a key is either sampled or fixed", has_got=False)
        if name in spec.derived:
            add(path, "is also in derived: a key is either sampled or derived", has_got=False)
        when = _parse(p.when, f"{path}.when", add) if p.when is not None else None
        if when is not None:
            for n in sorted(when.names):
                if n in declared:
                    continue
                if n in all_params:
                    add(f"{path}.when", f"names {n!r}, which is declared after {name!r}; a condition may only use parameters declared before it", p.when)
                elif n not in known:
                    near = closest(n, declared) or closest(n, known)
                    hint = f" (did you mean {near!r}?)" if near else ""
                    add(f"{path}.when", f"names {n!r}, which is not a parameter declared before {name!r} nor a config key{hint}", p.when)
        ok = _check_param(name, p, path, add, types)
        declared.append(name)
        if ok:
            params.append(
                ParamDef(
                    name=name,
                    kind=p.type,
                    low=getattr(p, "low", None),
                    high=getattr(p, "high", None),
                    log=getattr(p, "log", False),
                    step=getattr(p, "step", None),
                    choices=tuple(getattr(p, "choices", ()) or ()),
                    when=when,
                )
            )

    fixed: dict[str, Any] = {}
    for key, value in spec.fixed.items():
        if key not in known:
            unknown_key(f"fixed.{key}", key)
            continue
        msg = types.check(key, value)
        if msg:
            add(f"fixed.{key}", msg, value)
        fixed[key] = value

    visible = sorted(set(known) | set(all_params))

    def parse_over_keys(source: Any, path: str) -> Expression | None:
        """An expression whose names must all be config keys or parameters."""
        expr = _parse(source, path, add)
        for n in sorted(expr.names - set(visible)) if expr is not None else ():
            near = closest(n, visible)
            add(path, f"names {n!r}, which is not a config key" + (f" (did you mean {near!r}?)" if near else ""), source)
        return expr

    derived: list[tuple[str, Expression]] = []
    for key, source in spec.derived.items():
        path = f"derived.{key}"
        if key not in known:
            unknown_key(path, key)
            continue
        if key in spec.fixed:
            add(path, "is also in fixed: a key is either derived or fixed", has_got=False)
        expr = parse_over_keys(source, path)
        if expr is not None:
            derived.append((key, expr))

    constraints: list[Constraint] = []
    for i, c in enumerate(spec.constraints):
        source, message = (c, None) if isinstance(c, str) else (c.expr, c.message)
        expr = parse_over_keys(source, f"constraints.{i}")
        if expr is not None:
            constraints.append(Constraint(expr, message))

    space = CompiledSpace(params, fixed, derived, constraints, {}, defaults=dict(training), implicit=implicit_defaults(task_cls))
    if len(problems) > n_before:
        return None
    if not problems:
        try:  # the defaults themselves must make a valid config (else every baseline fails the same way)
            task_cls.split_config({**training, **fixed})
        except (ValueError, TypeError) as e:
            problems.append(_config_problem(e, training, fixed, file, prefix))
            return None
    extra = dict(extra_baselines or {})

    def add_study(path: str, message: str, got: Any = None, has_got: bool = True) -> None:
        problems.append(Problem(path, message, got, has_got, file=extra_file))

    for name in extra:
        if name in spec.baselines:
            add_study(f"baselines.{name}", f"is also a baseline of the search space ({file or 'inline'}); give it another name", has_got=False)
    if len(problems) > n_before:
        return None
    space.baselines = compile_baselines({**spec.baselines, **extra}, space, task_cls, types,
                                        lambda name: add_study if name in extra else add)
    if len(problems) > n_before:
        return None
    return space


def _check_param(name: str, p: Any, path: str, add, types: KeyTypes) -> bool:
    n = 0

    def bad(sub: str, msg: str, got: Any) -> None:
        nonlocal n
        n += 1
        add(f"{path}.{sub}" if sub else path, msg, got)

    kind = types.kind(name)
    if p.type in ("float", "int"):
        if p.low > p.high:
            bad("high", f"must be >= low ({p.low})", p.high)
        if p.type == "float":
            if p.log and p.low <= 0:
                bad("low", "must be > 0 with log: true", p.low)
            if p.step is not None and p.step <= 0:
                bad("step", "must be > 0", p.step)
            if p.log and p.step is not None:
                bad("step", "must be null with log: true (a log-scaled float has no step)", p.step)
            if p.step and p.step > 0 and p.low <= p.high:
                k = (p.high - p.low) / p.step
                if abs(k - round(k)) > 1e-9:
                    bad("high", f"must be low plus a whole number of steps ({p.step}) so that both bounds are included", p.high)
            if kind == "int":
                bad("type", f"must be int or categorical: {name} is an integer key", "float")
        else:
            if p.log and p.low < 1:
                bad("low", "must be >= 1 with log: true", p.low)
            if p.step < 1:
                bad("step", "must be >= 1", p.step)
            if p.log and p.step != 1:
                bad("step", "must be 1 with log: true", p.step)
            if p.step >= 1 and p.low <= p.high and (p.high - p.low) % p.step:
                bad("high", f"must be low plus a whole number of steps ({p.step}) so that both bounds are included", p.high)
        if n == 0:
            for sub in ("low", "high"):
                msg = types.check(name, getattr(p, sub))
                if msg:
                    bad(sub, msg, getattr(p, sub))
    elif p.type == "categorical":
        if not p.choices:
            bad("choices", "must list at least one choice", p.choices)
        for i, c in enumerate(p.choices):
            if any(type(c) is type(d) and c == d for d in p.choices[:i]):
                bad(f"choices.{i}", "must not repeat an earlier choice", c)
            msg = types.check(name, c)
            if msg:
                bad(f"choices.{i}", msg, c)
    elif p.type == "bool":
        msg = types.check(name, True)
        if msg:
            bad("type", f"must not be bool: {name} {msg}", "bool")
    return n == 0


def _parse(source: Any, path: str, add) -> Expression | None:
    try:
        return Expression(source)
    except ExpressionError as e:
        add(path, f"must be a valid expression ({str(e)})", source)
        return None


def _config_problem(e: Exception, training: Mapping[str, Any], fixed: Mapping[str, Any], space_file: str | None,
                    space_prefix: str) -> Problem:
    """Where an invalid default config comes from: the key its error names, in ``fixed:`` of the space
    (its own file, or ``space.`` inline) or in ``training:`` of the study; else ``training`` as a whole."""
    msg = str(e)
    named = [k for k in sorted({**training, **fixed}, key=len, reverse=True) if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", msg)]
    if not named:
        return Problem("training", f"with the space's fixed values must make a valid config: {msg}", has_got=False)
    key = named[0]
    if key in fixed:
        return Problem(join_key(join_key(space_prefix, "fixed"), key), f"must make a valid config: {msg}", has_got=False,
                       file=space_file)
    return Problem(f"training.{key}", f"must make a valid config: {msg}", has_got=False)


def join_key(prefix: str, path: str) -> str:
    """``prefix.path`` (either may be empty)."""
    return f"{prefix}.{path}" if prefix and path else (prefix or path)
