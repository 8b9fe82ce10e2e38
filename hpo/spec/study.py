"""A study file -> a validated :class:`Study`: the task, its dataset, objectives, the study rules and
the compiled space; and ``--set key.path=value`` overrides (:func:`apply_sets`).

Everything is checked before any trial runs, and every problem found is reported at once, each as
``file: key.path: what must hold, but got X`` (a :class:`hpo.errors.SpecError`, exit code 2).
Precedence of config values, lowest first: the model/trainer dataclass defaults, the study's
``training:``, the space's ``fixed:``, a baseline's overrides, sampled ``params``, ``derived:``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import ValidationError

from hpo.errors import Problem, SpecError, UnknownNameError, name_rule
from hpo.spec.compile import compile_space, join_key, validate_space_structure
from hpo.spec.key_types import KeyTypes
from hpo.spec.pydantic_errors import problems_from_validation
from hpo.spec.schema import StudySpec
from hpo.spec.space import CompiledSpace
from hpo.spec.yaml_io import load_yaml, loads_yaml

if TYPE_CHECKING:
    from hpo.data.cache import DataCache
    from hpo.spec.gates import Gate
    from hpo.spec.schema import AblationSpec
    from hpo.spec.stages import Stage
    from hpo.spec.targets import TargetLevel
    from hpo.tasks import DatasetSpec, Task

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"
DEFAULT_ARTIFACTS = "runs/artifacts"


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
    primary_index: int = 0  # the objective that prunes, gates and early-stops (``primary: true``, else the first)
    gates: list["Gate"] = field(default_factory=list)
    targets: list["TargetLevel"] = field(default_factory=list)
    run_baselines: list[str] = field(default_factory=list)  # the named runs prepare() enqueues, in order
    stages: list["Stage"] = field(default_factory=list)  # a staged plan's stages (empty: a flat study)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def primary(self) -> Objective:
        """The objective that drives early stopping, the best epoch, pruning and gates (``primary: true``,
        else the first); a multi-objective study records the others and their Pareto front."""
        return self.objectives[self.primary_index]

    @property
    def monitor(self) -> Objective:
        """The same as :attr:`primary`."""
        return self.primary

    @property
    def protect_baselines(self) -> bool:
        """Whether baselines and ablation runs train to their own epochs (no pruner or gate stops them)."""
        return self.spec.protect_baselines

    @property
    def stop_at_target(self) -> str | None:
        return self.spec.stop_at_target

    @property
    def ablation(self) -> "AblationSpec | None":
        return self.spec.ablations

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def storage_url(self, override: str | None = None) -> str:
        """Where the study is stored: ``override`` (``--storage``), else ``$HPO_STORAGE`` (refused, redacted,
        when it holds a secret), else the study file's ``storage:``, else ``sqlite:///runs/hpo.db``."""
        if override:
            return override
        import os

        env = os.environ.get("HPO_STORAGE", "").strip()
        if env:
            from hpo.spec.urls import check_url

            check_url(env)
            return env
        return self.spec.storage or DEFAULT_STORAGE

    def artifacts_dir(self, override: str | None = None) -> str:
        return override or self.spec.artifacts or DEFAULT_ARTIFACTS

    def make_task(self, cache: "DataCache | None" = None) -> "Task":
        return self.task_cls(self.dataset, self.spec.task.target, cache)


def load_study(path: str | Path, sets: Iterable[str] = (), *, check_data: bool = True) -> Study:
    """Read, override (``--set key.path=value``) and validate a study file."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError([Problem("", "must be a mapping of study keys (name, task, space, objectives, ...)", raw)], str(path))
    raw = apply_sets(raw, sets, str(path))
    return study_from_dict(raw, base_dir=path.parent, file=path, check_data=check_data)


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
    space_spec = validate_space_structure(space_raw, space_fname, space_prefix, problems)

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

    objectives, primary_index = _objectives(spec, task_cls, fname, problems)
    _study_rules(spec, problems)
    from hpo.spec.gates import compile_gates
    from hpo.spec.targets import compile_targets

    def add(path: str, message: str, got: Any = None, has_got: bool = True) -> None:
        problems.append(Problem(path, message, got, has_got))

    gates = compile_gates(spec.gates, task_cls, add)
    targets = compile_targets(spec.targets, objectives, task_cls, add)
    if spec.stop_at_target is not None and spec.stop_at_target not in spec.targets:
        add("stop_at_target", name_rule("target level (targets:)", spec.stop_at_target, spec.targets), spec.stop_at_target)
    for i, st in enumerate(spec.stages):
        if st.stop_at_target is not None and st.stop_at_target not in spec.targets:
            add(f"stages.{i}.stop_at_target", name_rule("target level (targets:)", st.stop_at_target, spec.targets), st.stop_at_target)

    # -- training defaults and the space
    training = dict(spec.training)
    types = KeyTypes(task_cls)
    for key, value in training.items():
        msg = types.check(key, value)
        if msg:
            problems.append(Problem(f"training.{key}", msg, key if key not in types.fields else value))
    space = None
    ablation_meta: dict[str, dict] = {}
    extra = dict(spec.baselines)
    if space_spec is not None and spec.ablations is not None:
        from hpo.spec.ablations import expand_ablations

        runs, ablation_meta, ablation_paths = expand_ablations(spec.ablations, [*space_spec.baselines, *spec.baselines], task_cls, add)
        extra.update(runs)
    if space_spec is not None:
        n_before = len(problems)
        space = compile_space(space_spec, task_cls, training, problems, file=space_fname, prefix=space_prefix,
                              extra_baselines=extra, extra_file=fname)
        if ablation_meta:
            problems[n_before:] = [_ablation_problem(p, ablation_paths) for p in problems[n_before:]]
    run_baselines: list[str] = []
    if space is not None:
        run_baselines = _run_baselines(spec, space, ablation_meta, add)

    if spec.sampler.type == "grid" and space is not None:
        try:
            space.grid()
        except ValueError as e:
            problems.append(Problem("sampler.type", f"grid needs every parameter finite: {e}", "grid"))

    if check_data and dataset is not None and not problems:
        try:
            task = task_cls(dataset, spec.task.target)
            for p in task.check():
                problems.append(dataclasses.replace(p, path=join_key("task.dataset", p.path) if not p.path.startswith("task.") else p.path))
        except Exception as e:  # a task whose check crashes must still say where
            problems.append(Problem("task.dataset", f"could not be checked: {type(e).__name__}: {e}", has_got=False))
    if problems:
        raise SpecError(problems, fname)
    for i, g in enumerate(gates):
        if spec.budget.max_epochs is not None and g.epoch > spec.budget.max_epochs:
            problems.append(Problem(f"gates.{i}.epoch", f"must be at most budget.max_epochs ({spec.budget.max_epochs}), or the gate never applies", g.epoch))
    if problems:
        raise SpecError(problems, fname)

    record = {
        "file": str(file) if file else None,
        "space_file": str(space_file) if space_file else None,
        "spec": _jsonable({**raw, "space": space_raw}),
        "dataset": _jsonable(dataset.model_dump(mode="json")),
    }
    n_trials = spec.budget.n_trials
    if n_trials is not None and len(run_baselines) > n_trials and not spec.stages:
        logger.warning("%s: budget.n_trials (%d) is below the named runs the study enqueues (%d: %s); the last %d run "
                       "only if the budget is raised", fname or "study", n_trials, len(run_baselines),
                       ", ".join(run_baselines[:6]) + (", ..." if len(run_baselines) > 6 else ""), len(run_baselines) - n_trials)
    study = Study(spec, file, space_file, space, task_cls, dataset, objectives, record, copy.deepcopy(raw),
                  primary_index=primary_index, gates=gates, targets=targets, run_baselines=run_baselines)
    if spec.stages:
        from hpo.spec.stages import compile_stages

        study.stages = compile_stages(study, base_dir, fname, study_from_dict)
    return study


def _run_baselines(spec: StudySpec, space: CompiledSpace, ablation_meta: dict[str, dict], add) -> list[str]:
    """The named runs to enqueue, in order: the baselines ``run_baselines`` selects, then the ablation runs
    (each marked with its ablation facts)."""
    import dataclasses as dc

    from hpo.spec.ablations import PREFIX

    named = [n for n in space.baselines if not n.startswith(PREFIX)]
    if spec.run_baselines is True:
        chosen = list(named)
    elif spec.run_baselines is False:
        chosen = []
    else:
        chosen = []
        for i, n in enumerate(spec.run_baselines):
            if n not in named:
                add(f"run_baselines.{i}", name_rule("baseline of the study or its space", n, named), n)
            elif n not in chosen:
                chosen.append(n)
    for name, meta in ablation_meta.items():
        if name in space.baselines:
            space.baselines[name] = dc.replace(space.baselines[name], ablation=meta)
            if name not in chosen:
                chosen.append(name)
    return chosen


def _ablation_problem(p: Problem, paths: dict[str, str]) -> Problem:
    """A problem of an expanded ablation run, placed at the value in ``ablations:`` that made it."""
    parts = p.path.split(".")
    if len(parts) >= 2 and parts[0] == "baselines":
        for name, path in paths.items():
            if p.path == f"baselines.{name}" or p.path.startswith(f"baselines.{name}."):
                return dataclasses.replace(p, path=path)
    return p


def _objectives(spec: StudySpec, task_cls: type["Task"], fname: str | None, problems: list[Problem]) -> tuple[list[Objective], int]:
    """The study's objectives (known metrics of the task, each with a direction, none twice) and the index
    of the primary one."""
    objectives: list[Objective] = []
    marked = [i for i, o in enumerate(spec.objectives) if not isinstance(o, str) and o.primary]
    if len(marked) > 1:
        problems.append(Problem(f"objectives.{marked[1]}.primary", "must be set on one objective only", True))
    primary = marked[0] if marked else 0
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
    if len(objectives) != len(spec.objectives):
        return objectives, 0
    if not objectives[primary].metric.startswith("val_"):
        where = f"objectives.{primary}" + (".metric" if marked else "")
        problems.append(Problem(where, "must be a validation metric (val_*): the primary objective (primary: true, else the first) "
                                "drives early stopping, pruning and gates", objectives[primary].metric))
    return objectives, primary


MULTI_OBJECTIVE_PRUNERS = ("median", "percentile", "threshold", "patient", "none")


def _prunes_on_primary(pruner: Any) -> bool:
    """Whether a pruner can serve a multi-objective study on its primary objective (patient: its wrapped one too)."""
    if pruner.type == "patient":
        return pruner.wrapped is None or _prunes_on_primary(pruner.wrapped)
    return pruner.type in MULTI_OBJECTIVE_PRUNERS


def _study_rules(spec: StudySpec, problems: list[Problem]) -> None:
    """What the sampler, pruner and backend allow together."""
    multi = len(spec.objectives) > 1
    pruners = [("pruner", spec.pruner)] + [(f"stages.{i}.pruner", s.pruner) for i, s in enumerate(spec.stages) if s.pruner is not None]
    for where, pruner in pruners:
        if multi and not _prunes_on_primary(pruner):
            problems.append(Problem(f"{where}.type", f"must be one of {', '.join(MULTI_OBJECTIVE_PRUNERS)} for a multi-objective study "
                                    "(they prune on the primary objective; the others need the study's single direction)", pruner.type))
    if multi and spec.sampler.type in ("cmaes",):
        problems.append(Problem("sampler.type", "must be one of tpe, nsga2, random, gp, grid for a multi-objective study", spec.sampler.type))
    if spec.backend == "ray" and spec.sampler.type == "grid":
        problems.append(Problem("sampler.type", "grid is not supported with backend: ray", "grid"))


def apply_sets(raw: dict, sets: Iterable[str], fname: str) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of ``raw``.

    A new key, or a value of the same kind as the one it replaces (mapping, list, or scalar: any string, number,
    bool), is set; a list item is addressed by its index (``objectives.0.metric``). Replacing a mapping or a
    list with a value of another kind (``--set space=x`` when ``space:`` is a mapping), or a path through a
    scalar (``--set seed.x=1``), is refused (``Problem("--set", ..., item)``, exit 2): it would silently drop
    what the file says. A key that holds null takes any value."""
    from hpo.errors import show

    def kind(value: Any) -> str:
        return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else "a scalar"

    def slot(node: Any, part: str, where: list[str]) -> tuple[Any, str | None]:
        """(the key or index of ``part`` in ``node``, None), or (None, the problem)."""
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                return int(part), None
            return None, (f"{'.'.join(where)} is a list of {len(node)} items: address an item by its index "
                          f"0..{len(node) - 1}, not {part!r}")
        return part, None

    sets = list(sets)
    if not sets:
        return raw
    out = copy.deepcopy(raw)
    problems = []
    for item in sets:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.strip().split(".")]
        if not sep or not key.strip() or not all(parts):
            problems.append(Problem("--set", "must be KEY.PATH=VALUE", item))
            continue
        value = loads_yaml(text, "--set") if text.strip() else None
        node: Any = out
        where: list[str] = []
        problem = None
        for part in parts[:-1]:
            index, problem = slot(node, part, where)
            if problem:
                break
            where.append(part)
            if isinstance(node, dict) and node.get(index) is None:
                node[index] = {}
            child = node[index]
            if not isinstance(child, (dict, list)):
                problem = (f"{'.'.join(where)} is a scalar ({show(child)}) in the file: a key path cannot go "
                           "through it (set the whole value instead)")
                break
            node = child
        if problem is None:
            index, problem = slot(node, parts[-1], where)
        if problem is None:
            old = node[index] if isinstance(node, list) else node.get(index)
            if old is not None and kind(old) != kind(value):
                problem = (f"{'.'.join(parts)} is {kind(old)} in the file and cannot be replaced by {kind(value)} "
                           f"({show(value)}); set a value of the same kind, or a key inside it")
            else:
                node[index] = value
        if problem:
            problems.append(Problem("--set", problem, item))
    if problems:
        raise SpecError(problems, fname)
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
