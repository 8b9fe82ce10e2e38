"""Staged studies: ``stages:`` of a study file, each stage a flat study of its own (named ``STUDY/STAGE`` in
the store) derived from the study's keys, and the rules that pick the next stage.

A stage's flat mapping is the study's, with the stage's keys over it: ``training`` and ``budget`` are merged
key by key (the stage's fidelity: ``training: {epochs: 10}``); ``space``, ``sampler``, ``pruner``, ``gates``,
``ablations``, ``stop_at_target``, ``protect_baselines`` and ``description`` replace the study's;
``baselines`` are added (a stage's own named runs always run; of the study's and the space's, the first
stage runs what ``run_baselines`` says, later stages none unless their ``run_baselines`` lists them).
``narrow`` stages start from the previous stage's space and are rebuilt with the narrowed space when the
stage begins (:func:`rebuild_stage`, called by :mod:`hpo.plan`). Only the first stage inherits the study's
``ablations``. The runner (:mod:`hpo.plan.runner`) runs the stages and records each one's decision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpo.errors import Problem, SpecError, name_rule
from hpo.spec.expr import Expression, ExpressionError

if TYPE_CHECKING:
    from hpo.spec.schema import NarrowSpec, StageSpec
    from hpo.spec.study import Study

END = "end"
#: names a ``next`` rule's ``when`` may read (plus one per target level: true when met)
RULE_NAMES = ("best", "previous", "baseline", "improvement", "trials")
#: stage keys that replace the study's; ``training`` and ``budget`` are merged instead
_REPLACED = ("space", "sampler", "pruner", "gates", "stop_at_target", "protect_baselines", "description")
#: stage keys of the plan only (not part of the stage's flat study)
_PLAN_ONLY = ("name", "narrow", "warm_start", "next")


def stage_study_name(plan: str, stage: str) -> str:
    """The store name of a stage's study: ``PLAN/STAGE``."""
    return f"{plan}/{stage}"


@dataclass(frozen=True)
class Rule:
    """``when`` (None: always) -> ``goto`` (a stage name or ``end``)."""

    when: Expression | None
    goto: str

    def describe(self) -> str:
        return f"when {self.when.source} -> goto {self.goto}" if self.when is not None else f"-> goto {self.goto}"

    def matches(self, values: dict[str, Any]) -> bool:
        """Whether the rule holds for a stage's result; a comparison with a missing value (None) does not hold."""
        if self.when is None:
            return True
        try:
            return bool(self.when.evaluate(values))
        except (ExpressionError, TypeError):
            return False


@dataclass
class Stage:
    name: str
    index: int
    study: "Study"  # the stage's flat study (its name is the plan's: run it as stage_study_name(plan, name))
    raw: dict  # the flat mapping it was compiled from
    narrow: "NarrowSpec | None" = None
    warm_start: bool = False
    next: list[Rule] = field(default_factory=list)
    compile: Callable[..., "Study"] | None = field(default=None, repr=False)  # study_from_dict (no import cycle)

    @property
    def stop_at_target(self) -> str | None:
        return self.study.stop_at_target


def stage_raw(raw: dict, index: int, previous_space: Any = None) -> dict:
    """The flat study mapping of stage ``index`` of the study mapping ``raw`` (``previous_space``: the
    space a narrow stage starts from)."""
    st = raw["stages"][index]
    flat = {k: copy.deepcopy(v) for k, v in raw.items() if k != "stages"}
    for key in _REPLACED:
        if key in st and st[key] is not None:
            flat[key] = copy.deepcopy(st[key])
    if st.get("narrow") is not None and previous_space is not None:
        flat["space"] = copy.deepcopy(previous_space)
    for key in ("training", "budget"):
        flat[key] = {**(raw.get(key) or {}), **(st.get(key) or {})}
    own = dict(st.get("baselines") or {})
    flat["baselines"] = {**(raw.get("baselines") or {}), **copy.deepcopy(own)}
    inherited = st.get("run_baselines")
    if inherited is None:
        inherited = raw.get("run_baselines", True) if index == 0 else False
    flat["run_baselines"] = (True if inherited is True else list(own) if inherited is False
                             else list(dict.fromkeys([*inherited, *own])))
    if st.get("ablations") is not None:
        flat["ablations"] = copy.deepcopy(st["ablations"])
    elif index > 0:
        flat.pop("ablations", None)
    if flat["run_baselines"] is not True:  # the study's baselines this stage neither runs nor builds on are left out
        flat["baselines"] = _needed(flat["baselines"], [*flat["run_baselines"], (flat.get("ablations") or {}).get("baseline")])
    return flat


def _needed(baselines: dict, roots: list) -> dict:
    """The baselines named in ``roots`` and every one they extend (a stage's space need not hold the others)."""
    keep: set[str] = set()
    todo = [r for r in roots if isinstance(r, str)]
    while todo:
        name = todo.pop()
        if name in keep or name not in baselines:
            continue
        keep.add(name)
        parent = (baselines[name] or {}).get("extends")
        if isinstance(parent, str):
            todo.append(parent)
    return {n: b for n, b in baselines.items() if n in keep}


def compile_stages(study: "Study", base_dir: Path, fname: str | None, compile: Callable[..., "Study"]) -> list[Stage]:
    """Check the plan's stage rules and compile each stage's flat study; every problem at once, each
    at its key (``stages.N.KEY``) or, when it comes from the study's own keys, at that key once."""
    spec, raw = study.spec, study.raw
    problems: list[Problem] = []
    names = [s.name for s in spec.stages]
    for i, s in enumerate(spec.stages):
        if names.count(s.name) > 1 and names.index(s.name) != i:
            problems.append(Problem(f"stages.{i}.name", "must be unique among the stages", s.name))
        if s.name == END:
            problems.append(Problem(f"stages.{i}.name", f"must not be {END!r} (it means: stop the plan)", s.name))
    levels = [t.name for t in study.targets]
    stages: list[Stage] = []
    spaces: list[Any] = []
    seen: set[str] = set()
    for i, s in enumerate(spec.stages):
        path = f"stages.{i}"
        if s.narrow is not None and i == 0:
            problems.append(Problem(f"{path}.narrow", "needs a previous stage to narrow (the first stage cannot narrow)", has_got=False))
        if s.narrow is not None and s.space is not None:
            problems.append(Problem(f"{path}.narrow", "and space: are exclusive (narrow starts from the previous stage's space)", has_got=False))
        rules = []
        for j, r in enumerate(s.next):
            if r.goto != END and r.goto not in names:
                problems.append(Problem(f"{path}.next.{j}.goto", name_rule("stage (or end)", r.goto, [*names, END]), r.goto))
            when = None
            if r.when is not None:
                try:
                    when = Expression(r.when)
                except ExpressionError as e:
                    problems.append(Problem(f"{path}.next.{j}.when", f"must be a valid expression ({e})", r.when))
                    continue
                unknown = sorted(when.names - set(RULE_NAMES) - set(levels))
                if unknown:
                    problems.append(Problem(f"{path}.next.{j}.when", name_rule("stage result (or target level)", unknown[0], [*RULE_NAMES, *levels]), unknown[0]))
                    continue
            rules.append(Rule(when, r.goto))
        flat = stage_raw(raw, i, spaces[i - 1] if i else None)
        spaces.append(flat.get("space"))
        try:
            sub = compile(flat, base_dir=base_dir, file=study.file, check_data=False)
        except SpecError as e:
            for p in e.problems:
                q = _stage_problem(p, raw["stages"][i], path, fname)
                key = q.render(fname)
                if key not in seen:
                    seen.add(key)
                    problems.append(q)
            continue
        stages.append(Stage(s.name, i, sub, flat, s.narrow, s.warm_start, rules, compile))
    if problems:
        raise SpecError(problems, fname)
    return stages


def _stage_problem(p: Problem, stage: dict, path: str, fname: str | None) -> Problem:
    """A problem of a stage's flat study, placed at the stage's key when the stage set it."""
    if p.file is not None and p.file != fname:  # in a space file of its own
        return p
    head = p.path.split(".", 1)[0]
    if head in stage and head not in _PLAN_ONLY:
        if head == "baselines":
            name = p.path.split(".")[1] if p.path.count(".") else ""
            if name not in (stage.get("baselines") or {}):
                return _in_stage(p, stage)
        return Problem(f"{path}.{p.path}", p.message, p.got, p.has_got, p.file)
    return _in_stage(p, stage)


def _in_stage(p: Problem, stage: dict) -> Problem:
    """A problem of the study's own key that only a stage meets (e.g. a baseline outside the stage's space): say which."""
    return Problem(p.path, f"{p.message} (in stage {stage.get('name')})", p.got, p.has_got, p.file)


def rebuild_stage(plan: "Study", stage: Stage, space: dict, *, promote: list[str] = ()) -> "Study":
    """The stage's study with an inline ``space`` (e.g. the previous stage's, narrowed), also running the
    baselines named in ``promote`` (the narrowed space's top trials)."""
    flat = copy.deepcopy(stage.raw)
    flat["space"] = widen_for_runs(space, flat)
    if promote:
        run = flat.get("run_baselines", True)
        if run is not True:
            flat["run_baselines"] = list(dict.fromkeys([*(run or []), *promote]))
    base_dir = plan.file.parent if plan.file else Path.cwd()
    return stage.compile(flat, base_dir=base_dir, file=plan.file, check_data=False)


def widen_for_runs(space: dict, flat: dict) -> dict:
    """A copy of ``space`` whose parameters also hold the values the stage's own named runs set (its
    ``baselines:`` and ``ablations:`` values): narrowing around the previous stage's best trials must not
    shut out the runs the plan names for this stage (a choice is added, a range extended to the value)."""
    from hpo.spec.space import resolve_extends

    space = copy.deepcopy(space)
    params = space.get("params") or {}
    baselines = {**(space.get("baselines") or {}), **(flat.get("baselines") or {})}
    resolved = resolve_extends(baselines)
    run = flat.get("run_baselines", True)
    names = list(flat.get("baselines") or {}) if run is True else [n for n in (run or []) if n in (flat.get("baselines") or {})]
    wanted = [resolved[n] for n in names if n in resolved]
    ablation = flat.get("ablations") or {}
    if ablation.get("baseline") in resolved:
        base = resolved[ablation["baseline"]]
        wanted.append(base)
        wanted += [{**base, knob: v} for knob, values in (ablation.get("knobs") or {}).items() for v in values or ()]
    for values in wanted:
        for key, value in values.items():
            p = params.get(key)
            if isinstance(p, list):
                p = params[key] = {"type": "categorical", "choices": p}
            if not isinstance(p, dict):
                continue
            if p.get("type") == "categorical" and value not in p.get("choices", []):
                p["choices"] = [*p.get("choices", []), value]
            elif p.get("type") in ("float", "int") and isinstance(value, (int, float)) and not isinstance(value, bool):
                p["low"], p["high"] = min(p["low"], value), max(p["high"], value)
    return space
