"""Load and validate studies and search spaces.

Everything is checked before any trial runs, and every problem found is reported at once, each as
``file: key.path: what must hold, but got X`` (a :class:`hpo.errors.SpecError`, exit code 2).
Precedence of config values, lowest first: the model/trainer dataclass defaults, the study's
``training:``, the space's ``fixed:``, a baseline's overrides, sampled ``params``, ``derived:``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pydantic import TypeAdapter, ValidationError

from hpo.errors import Problem, SpecError, UnknownNameError, closest, name_rule
from hpo.spec.expr import Expression, ExpressionError
from hpo.spec.pydantic_errors import problems_from_validation, union_members
from hpo.spec.schema import SearchSpaceSpec, StudySpec
from hpo.spec.space import Baseline, CompiledSpace, Constraint, ParamDef
from hpo.spec.yaml_io import load_yaml, loads_yaml

if TYPE_CHECKING:
    from hpo.data.cache import DataCache
    from hpo.tasks.base import DatasetSpec, Task

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"
DEFAULT_ARTIFACTS = "runs/artifacts"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize | maximize


@dataclass
class Study:
    """A validated study: its spec, compiled space, task class and dataset spec."""

    spec: StudySpec
    file: Path | None
    space_file: Path | None
    space: CompiledSpace
    task_cls: type["Task"]
    dataset: "DatasetSpec"
    objectives: list[Objective]
    record: dict = field(default_factory=dict)  # JSON-able copy stored with the study
    raw: dict = field(default_factory=dict, repr=False)  # the study mapping it was built from (workers rebuild it)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def monitor(self) -> Objective:
        """The objective that drives early stopping, the best epoch and pruning (the first)."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def storage_url(self, override: str | None = None) -> str:
        return override or self.spec.storage or DEFAULT_STORAGE

    def artifacts_dir(self, override: str | None = None) -> str:
        return override or self.spec.artifacts or DEFAULT_ARTIFACTS

    def make_task(self, cache: "DataCache | None" = None) -> "Task":
        return self.task_cls(self.dataset, self.spec.task.target, cache)


def _config_problem(e: Exception, training: Mapping[str, Any], fixed: Mapping[str, Any], space_file: str | None,
                    space_prefix: str) -> Problem:
    """Where an invalid default config comes from: the key its error names, in ``fixed:`` of the space
    (its own file, or ``space.`` inline) or in ``training:`` of the study; else ``training`` as a whole."""
    import re

    msg = str(e)
    named = [k for k in sorted({**training, **fixed}, key=len, reverse=True) if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", msg)]
    if not named:
        return Problem("training", f"with the space's fixed values must make a valid config: {msg}", has_got=False)
    key = named[0]
    if key in fixed:
        return Problem(_join(_join(space_prefix, "fixed"), key), f"must make a valid config: {msg}", has_got=False,
                       file=space_file)
    return Problem(f"training.{key}", f"must make a valid config: {msg}", has_got=False)


# ------------------------------------------------------------------------------ entry points
def load_study(path: str | Path, sets: Iterable[str] = (), *, check_data: bool = True) -> Study:
    """Read, override (``--set key.path=value``) and validate a study file."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError([Problem("", "must be a mapping of study keys (name, task, space, objectives, ...)", raw)], str(path))
    raw = apply_sets(raw, sets, str(path))
    return study_from_dict(raw, base_dir=path.parent, file=path, check_data=check_data)


def load_space(path: str | Path, task_cls: type["Task"], training: Mapping[str, Any] | None = None) -> CompiledSpace:
    """Read and validate a search space file against a task's config keys."""
    path = Path(path)
    raw = load_yaml(path)
    problems: list[Problem] = []
    spec = _validate_space_structure(raw, str(path), "", problems)
    if spec is None:
        raise SpecError(problems, str(path))
    space = compile_space(spec, raw, task_cls, dict(training or {}), problems, file=str(path), prefix="")
    if problems:
        raise SpecError(problems, str(path))
    return space


def study_from_dict(raw: dict, *, base_dir: Path, file: Path | None = None, check_data: bool = True) -> Study:
    fname = str(file) if file else None
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(problems_from_validation(e, StudySpec, raw), fname) from None
    problems: list[Problem] = []

    # -- the search space (a file relative to the study, or inline)
    if isinstance(spec.space, str):
        space_path = (base_dir / spec.space).resolve() if not Path(spec.space).is_absolute() else Path(spec.space)
        try:
            space_raw = load_yaml(space_path)
        except SpecError as e:
            if space_path.is_file():  # the file is there but malformed: its own file, key and rule
                raise e.with_file(_rel(space_path)) from None
            raise SpecError([Problem("space", f"must name a readable search space file ({e.problems[0].message})", spec.space)], fname) from None
        space_file, space_prefix, space_fname = space_path, "", _rel(space_path)
    else:
        space_raw, space_file, space_prefix, space_fname = raw["space"], None, "space", None
    space_spec = _validate_space_structure(space_raw, space_fname, space_prefix, problems)

    # -- the task
    from hpo.tasks import available_task_names, get_task

    try:
        task_cls = get_task(spec.task.family)
    except UnknownNameError:
        problems.append(Problem("task.family", name_rule("task", spec.task.family, available_task_names()), spec.task.family))
        raise SpecError(problems, fname) from None
    try:
        dataset = task_cls.DatasetSpec.model_validate(spec.task.dataset, context={"base_dir": base_dir})
    except ValidationError as e:
        problems += problems_from_validation(e, task_cls.DatasetSpec, spec.task.dataset, prefix="task.dataset")
        dataset = None
    if task_cls.needs_target and not spec.task.target:
        problems.append(Problem("task.target", f"is required for task {task_cls.name}", has_got=False))

    # -- objectives
    objectives: list[Objective] = []
    names = task_cls.objective_names()
    for i, o in enumerate(spec.objectives):
        metric, direction = (o, None) if isinstance(o, str) else (o.metric, o.direction)
        where = f"objectives.{i}" if isinstance(o, str) else f"objectives.{i}.metric"
        if metric not in names:
            problems.append(Problem(where, name_rule(f"metric of task {task_cls.name}", metric, names), metric))
            continue
        natural = task_cls.direction_of(metric)
        if direction is None and natural is None:
            problems.append(Problem(f"objectives.{i}.direction", f"is required for {metric} (minimize or maximize)", has_got=False))
            continue
        if direction and natural and direction != natural:
            logger.warning("%s: objective %s is %sd although it is naturally %sd", fname, metric, direction, natural)
        objectives.append(Objective(metric, direction or natural))
    seen = [o.metric for o in objectives]
    for m in {m for m in seen if seen.count(m) > 1}:
        problems.append(Problem("objectives", "must not name a metric twice", m))
    if objectives and not objectives[0].metric.startswith("val_"):
        problems.append(Problem("objectives.0", "must be a validation metric (val_*): the first objective drives early stopping and pruning", objectives[0].metric))
    multi = len(spec.objectives) > 1
    if multi and spec.pruner.type != "none":
        problems.append(Problem("pruner.type", "must be none for a multi-objective study (Optuna cannot prune multi-objective trials; early stopping still applies)", spec.pruner.type))
    if multi and spec.sampler.type in ("cmaes",):
        problems.append(Problem("sampler.type", "must be one of tpe, nsga2, random, gp, grid for a multi-objective study", spec.sampler.type))
    if spec.backend == "ray" and spec.sampler.type == "grid":
        problems.append(Problem("sampler.type", "grid is not supported with backend: ray", "grid"))

    # -- training defaults and the space
    training = dict(spec.training)
    types = _KeyTypes(task_cls)
    for key, value in training.items():
        msg = types.check(key, value)
        if msg:
            problems.append(Problem(f"training.{key}", msg, key if key not in types.fields else value))
    space = None
    if space_spec is not None:
        space = compile_space(space_spec, space_raw, task_cls, training, problems, file=space_fname, prefix=space_prefix,
                              extra_baselines=spec.baselines, extra_file=fname)

    if spec.sampler.type == "grid" and space is not None:
        try:
            space.grid()
        except ValueError as e:
            problems.append(Problem("sampler.type", f"grid needs every parameter finite: {e}", "grid"))

    if check_data and dataset is not None and not problems:
        try:
            task = task_cls(dataset, spec.task.target)
            for p in task.check():
                problems.append(dataclasses.replace(p, path=_join("task.dataset", p.path) if not p.path.startswith("task.") else p.path))
        except Exception as e:  # a task whose check crashes must still say where
            problems.append(Problem("task.dataset", f"could not be checked: {type(e).__name__}: {e}", has_got=False))
    if problems:
        raise SpecError(problems, fname)

    record = {
        "format": RECORD_FORMAT,
        "file": str(file) if file else None,
        "space_file": str(space_file) if space_file else None,
        "spec": _jsonable({**raw, "space": space_raw}),
        "dataset": _jsonable(dataset.model_dump(mode="json")),
    }
    return Study(spec, file, space_file, space, task_cls, dataset, objectives, record, copy.deepcopy(raw))


def apply_sets(raw: dict, sets: Iterable[str], fname: str) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of ``raw``."""
    sets = list(sets)
    if not sets:
        return raw
    out = copy.deepcopy(raw)
    problems = []
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem("--set", "must be KEY.PATH=VALUE", item))
            continue
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = loads_yaml(text, "--set") if text.strip() else None
    if problems:
        raise SpecError(problems, fname)
    return out


# ------------------------------------------------------------------------------ the space
def _validate_space_structure(raw: Any, fname: str | None, prefix: str, problems: list[Problem]) -> SearchSpaceSpec | None:
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
    raw: dict,
    task_cls: type["Task"],
    training: dict,
    problems: list[Problem],
    *,
    file: str | None,
    prefix: str,
    extra_baselines: Mapping[str, dict] | None = None,
    extra_file: str | None = None,
) -> CompiledSpace | None:
    """``extra_baselines`` are the study's own plans (reported against ``extra_file``)."""
    """Semantic checks of a structurally valid space; appends problems; returns the compiled space."""
    n_before = len(problems)
    known = task_cls.config_keys()
    types = _KeyTypes(task_cls)

    def add(path: str, message: str, got: Any = None, has_got: bool = True) -> None:
        problems.append(Problem(_join(prefix, path), message, got, has_got, file=file))

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

    implicit = _implicit_defaults(task_cls)
    space = CompiledSpace(params, fixed, derived, constraints, {}, defaults=dict(training), implicit=implicit)
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
    raw_baselines = {**spec.baselines, **extra}
    space.baselines = _compile_baselines(raw_baselines, space, task_cls, types, known,
                                         lambda name: add_study if name in extra else add)
    if len(problems) > n_before:
        return None
    return space


def _check_param(name: str, p: Any, path: str, add, types: "_KeyTypes") -> bool:
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


def _compile_baselines(raw: Mapping[str, dict], space: CompiledSpace, task_cls, types, known, adder) -> dict[str, Baseline]:
    """``adder(name)`` is the problem reporter of the file the baseline is written in."""
    resolved: dict[str, dict] = {}
    explicit_keys: dict[str, set] = {}
    failed: set[str] = set()

    def resolve(name: str, stack: tuple) -> dict | None:
        if name in resolved:
            return resolved[name]
        if name in failed:
            return None
        values = dict(raw[name])
        parent_name = values.pop("extends", None)
        own = dict(values)
        add = adder(name)
        if parent_name is not None:
            if parent_name not in raw:
                add(f"baselines.{name}.extends", name_rule("baseline", parent_name, raw), parent_name)
                failed.add(name)
                return None
            if parent_name in stack or parent_name == name:
                add(f"baselines.{name}.extends", "must not form a cycle: " + " -> ".join([*stack, name, parent_name]), parent_name)
                failed.add(name)
                return None
            parent = resolve(parent_name, (*stack, name))
            if parent is None:
                failed.add(name)
                return None
            merged = {**parent, **own}
            # parameters inherited from the parent that this baseline's switches turn off are dropped
            overrides = {k: v for k, v in merged.items() if k not in space.param_names}
            active = set(space.active(merged, overrides))
            values = {k: v for k, v in merged.items() if k not in space.param_names or k in active or k in own}
        explicit_keys[name] = set(own)
        resolved[name] = values
        return values

    out: dict[str, Baseline] = {}
    for name in raw:
        values = resolve(name, ())
        if values is None:
            continue
        add = adder(name)
        path = f"baselines.{name}"
        bad = False
        for key, value in values.items():
            if key in space.param_names:
                p = space.param(key)
                if not p.contains(value):
                    add(f"{path}.{key}", f"must lie in params.{key}'s range {p.describe()} (widen the range to measure this baseline inside the study)", value)
                    bad = True
            elif key in dict(space.derived):
                add(f"{path}.{key}", "is derived from other keys and cannot be set", value)
                bad = True
            elif key not in known:
                add(f"{path}.{key}", name_rule(f"config key of task {task_cls.name}", key, known), key)
                bad = True
            else:
                msg = types.check(key, value)
                if msg:
                    add(f"{path}.{key}", msg, value)
                    bad = True
        if bad:
            continue
        params, overrides = space.split_baseline(values)
        given_inactive = [k for k in values if k in space.param_names and k not in params]
        for k in given_inactive:
            p = space.param(k)
            add(f"{path}.{k}", f"is inactive in this baseline (its condition `{p.when.source}` is false), so it must not be given", values[k])
            bad = True
        try:
            config = space.resolve(params, overrides)
        except KeyError as e:
            add(path, f"must give every active parameter: {e.args[0]}", has_got=False)
            continue
        except ExpressionError as e:
            add(path, f"derived values cannot be computed: {e}", has_got=False)
            continue
        for c in space.violated(config):
            add(path, f"must meet the constraint `{c}`", has_got=False)
            bad = True
        try:
            task_cls.split_config(config)
        except (ValueError, TypeError, KeyError) as e:
            add(path, f"must make a valid config: {e}", has_got=False)
            bad = True
        if not bad:
            out[name] = Baseline(name, params, overrides)
    return out


def _parse(source: Any, path: str, add) -> Expression | None:
    try:
        return Expression(source)
    except ExpressionError as e:
        add(path, f"must be a valid expression ({str(e)})", source)
        return None


# ------------------------------------------------------------------------------ key types
class _KeyTypes:
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


def _implicit_defaults(task_cls: type["Task"]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (_, f) in task_cls.config_fields().items():
        if f.default is not dataclasses.MISSING:
            out[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[key] = f.default_factory()  # type: ignore[misc]
    return out


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else (prefix or path)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))
