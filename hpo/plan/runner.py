"""Run a staged plan: its stages in order, each a flat study ``PLAN/STAGE`` in the same store, resumable.

:func:`run_plan` walks the plan from its first stage. For each stage it:

1. takes the stage's study as it is stored when the stage study exists and is ``done`` (study user attr
   ``STAGE``): it is not run again, and its recorded decision picks the next stage, so a second
   ``hpo run`` replays the path the first one took and resumes where it stopped;
2. otherwise builds the stage's flat study: a ``narrow`` stage narrows the previous stage's stored study
   (:func:`hpo.plan.narrow.narrow_space`) and is rebuilt with that space (its top trials enqueued with
   ``narrow.promote``); a stage study that exists already is rebuilt with the space recorded with it, so
   the stage means the same whenever it resumes;
3. creates (or loads) the stage study, records the spec and ``STAGE`` (state ``running``) and, with
   ``warm_start``, tells it the COMPLETE trials of the stages that ran before it (:mod:`hpo.plan.warm`);
4. runs it with the backend to its budget: the stage's own ``budget:``, unless ``--trials`` /
   ``--timeout`` are given, which then apply to every stage (each stage gets that many trials / seconds);
5. when the stage ran to its end (budget, grid exhausted, target met; a deadline when the stage has no
   trial budget) it measures the result, evaluates the ``next`` rules (:mod:`hpo.plan.decide`) and
   records ``STAGE = {..., "state": "done", "decision": ...}``. A stage stopped by its deadline before its
   trial budget is used up is not decided: the plan stops and says so (run again to finish it).

The next stage is the one the decision names (``end`` stops). A rule may go back to an earlier stage or
stay on the same one: that stage then runs again as a NEW study ``PLAN/STAGE~2`` (``~3``...), narrowing
and warm-starting from the stages before it on the path. A stage runs at most :data:`MAX_VISITS` times
in one plan: a decision that would run it once more stops the plan with a message. "Previous stage"
always means the stage that ran just before on the path (not the one above it in the file).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hpo.errors import UsageError
from hpo.plan.decide import DEFAULT_RULE, DONE, END, RUNNING, decide, stage_values
from hpo.spec.stages import Stage, rebuild_stage, stage_study_name
from hpo.spec.urls import redact
from hpo.store.record import RECORD_ATTR, SPEC, STAGE

if TYPE_CHECKING:
    import optuna

    from hpo.run.backends._base import Backend
    from hpo.run.options import RunOptions, RunSummary
    from hpo.spec import Study

logger = logging.getLogger(__name__)

MAX_VISITS = 3  # the most runs of one stage in a plan (a rule that loops back stops the plan after that)
STOPPED = "stopped"  # StageRun.state of a stage that did not reach its end (not decided)
VISIT_MARK = "~"  # PLAN/STAGE~2: the second run of a stage in a plan
PROMOTED_PREFIX = "phase1_trial_"  # the narrowed space's baselines made of the previous stage's top trials

StageCallback = Callable[[str, "StageRun"], None]


@dataclass
class StageRun:
    """One stage on the plan's path, as this run of the plan saw it."""

    name: str
    study_name: str
    index: int
    visit: int = 1
    state: str = RUNNING  # done (decided) | stopped (not decided: run again to resume) | running
    ran: bool = False  # False: done before this run (taken from the store)
    best: float | None = None
    decision: dict | None = None
    stopped_because: str | None = None  # why its trials stopped: budget, timeout, target met, grid exhausted
    summary: "RunSummary | None" = None  # the backend's summary when it ran in this run of the plan
    narrowed: dict | None = None  # {"from": study, "top": [...], "promote": [...], "changed": {...}}
    told: int = 0  # warm-start trials told to it in this run
    study: "Study | None" = field(default=None, repr=False)  # its flat study when it ran in this run


@dataclass
class PlanSummary:
    """What a run of a plan did: the stages on its path, and why it stopped."""

    plan: str
    storage: str
    stages: list[StageRun] = field(default_factory=list)
    stopped_because: str = ""
    finished: bool = False  # the plan reached its end (a rule's goto end, or after its last stage)
    seconds: float = 0.0


def visit_name(plan: str, stage: str, visit: int) -> str:
    """The store name of the ``visit``-th run of a stage: ``PLAN/STAGE``, then ``PLAN/STAGE~2``, ..."""
    base = stage_study_name(plan, stage)
    return base if visit <= 1 else f"{base}{VISIT_MARK}{visit}"


class _Plan:
    """The plan being run: the study, its store and name, and the stage studies the store holds."""

    def __init__(self, study: "Study", opts: "RunOptions") -> None:
        if not study.stages:
            raise UsageError(f"{study.file or study.name}: not a staged study (no stages:)")
        self.study, self.opts = study, opts
        self.name = opts.study_name or study.name
        self.url = study.storage_url(opts.storage)
        self.by_name = {s.name: s for s in study.stages}

    def storage(self):
        from hpo.store.storage import open_storage

        return open_storage(self.url, heartbeat=False)

    def stage_attr(self, study_name: str) -> dict | None:
        """The stored study's ``STAGE`` attr (``{}`` when it exists without one), None when it does not exist."""
        for s in self.storage().get_all_studies():
            if s.study_name == study_name:
                return dict(s.user_attrs.get(STAGE) or {})
        return None

    def load(self, study_name: str) -> "optuna.Study":
        from hpo.store.stored import load_stored_study

        return load_stored_study(self.url, study_name)


# -- one stage -----------------------------------------------------------------------------------------
def stage_study(plan: _Plan, stage: Stage, study_name: str, previous: StageRun | None) -> tuple["Study", dict | None]:
    """The stage's flat study, and for a narrow stage what was narrowed (the space recorded with an
    existing stage study, else the previous stage's stored study narrowed now)."""
    if stage.narrow is None:
        return stage.study, None
    attr = plan.stage_attr(study_name)
    if attr is not None:
        record = plan.load(study_name).user_attrs.get(RECORD_ATTR) or {}
        space = (record.get(SPEC) or {}).get("space")
        if isinstance(space, dict):
            narrowed = attr.get("narrowed") or {}
            return rebuild_stage(plan.study, stage, space, promote=list(narrowed.get("promote") or [])), narrowed
    if previous is None:
        raise UsageError(f"stage {stage.name} narrows the previous stage, but no stage ran before it")
    from hpo.plan.narrow import narrow_space

    space, facts = narrow_space(plan.load(previous.study_name), stage.narrow.top, stage.narrow.margin)
    promote = promoted(space, facts) if stage.narrow.promote else []
    narrowed = {"from": previous.study_name, "top": facts["top"], "promote": promote, "changed": facts["changed"]}
    logger.info("stage %s: space narrowed around trials #%s of %s%s", stage.name, ", #".join(map(str, facts["top"])),
                previous.study_name, f"; re-training {', '.join(promote)}" if promote else "")
    return rebuild_stage(plan.study, stage, space, promote=promote), narrowed


def promoted(space: dict, facts: dict) -> list[str]:
    """The narrowed space's baselines that are the previous stage's top trials: ``phase1_trial_N`` for each
    top trial N, or the top trial's own baseline name where narrowing kept it under that name."""
    baselines = space.get("baselines") or {}
    wanted = {f"{PROMOTED_PREFIX}{n}" for n in facts.get("top", ())} | set(facts.get("top_plans", ()))
    return [n for n in baselines if n in wanted]


def open_stage(plan: _Plan, stage: Stage, flat: "Study", study_name: str, visit: int, previous: StageRun | None,
               narrowed: dict | None) -> tuple["optuna.Study", dict]:
    """Create or load the stage study, record its spec and baselines (:func:`hpo.run.study.prepare`) and
    its ``STAGE`` attr (state ``running``, unless it is recorded already); return it and prepare's facts."""
    from hpo.run.study import create_or_load, prepare

    ostudy = create_or_load(flat, plan.url, study_name, heartbeat=False, resume_changed=plan.opts.resume_changed)
    if not ostudy.user_attrs.get(STAGE):  # before the record: a stage study with a record has its STAGE
        ostudy.set_user_attr(STAGE, {
            "plan": plan.name, "index": stage.index, "name": stage.name, "visit": visit, "state": RUNNING,
            "previous": previous.study_name if previous else None, "narrowed": narrowed,
        })
    return ostudy, prepare(flat, ostudy)


def finish_stage(ostudy: "optuna.Study", run: StageRun, decision: dict) -> None:
    """Record the stage as done with its decision (study user attr ``STAGE``)."""
    attr = dict(ostudy.user_attrs.get(STAGE) or {})
    attr.update(state=DONE, decision=decision, stopped_because=run.stopped_because)
    ostudy.set_user_attr(STAGE, attr)


def _ended(flat: "Study", opts: "RunOptions", stopped: str, ostudy: "optuna.Study") -> bool:
    """Whether a stage run that stopped for ``stopped`` reached its end: a deadline is the end of a stage
    without a trial budget, or of one whose budget the store shows used up (the last trial ended at it)."""
    from hpo.run.budget import budget_of
    from hpo.run.options import resolve

    if stopped != "timeout":
        return True
    n_trials = resolve(flat, opts).n_trials
    return n_trials is None or budget_of(ostudy.get_trials(deepcopy=False)).used >= n_trials


def run_stage(plan: _Plan, stage: Stage, visit: int, path: list[StageRun], *, backend: "Backend",
              on_trial: Callable | None = None, on_start: Callable | None = None,
              on_stage: StageCallback | None = None) -> StageRun:
    """Run (or take as done) the ``visit``-th run of ``stage``, after the stages on ``path``."""
    study_name = visit_name(plan.name, stage.name, visit)
    previous = path[-1] if path else None
    run = StageRun(stage.name, study_name, stage.index, visit)
    attr = plan.stage_attr(study_name)
    if attr and attr.get("state") == DONE:
        decision = attr.get("decision") or {}
        run.state, run.decision = DONE, decision
        run.best = (decision.get("values") or {}).get("best")
        run.stopped_because, run.narrowed = attr.get("stopped_because"), attr.get("narrowed")
        _notify(on_stage, "done before", run)
        return run
    flat, run.narrowed = stage_study(plan, stage, study_name, previous)
    run.study = flat
    ostudy, prepared = open_stage(plan, stage, flat, study_name, visit, previous, run.narrowed)
    if stage.warm_start and path:
        from hpo.plan.warm import tell_earlier

        run.told = tell_earlier(ostudy, flat, [plan.load(r.study_name) for r in path])
    _notify(on_stage, "start", run)

    def started(info: dict) -> None:
        for key in ("enqueued_baselines", "requeued"):  # what this stage's preparation did before the backend's
            info[key] = [*prepared.get(key, []), *info.get(key, [])]
        info.update(stage=stage.name, stage_study=flat, plan=plan.name, told=run.told)
        if on_start is not None:
            on_start(info)

    opts = dataclasses.replace(plan.opts, study_name=study_name)
    summary = backend.run(flat, opts, raw=flat.raw, on_trial=on_trial, on_start=started)
    run.ran, run.summary, run.stopped_because = True, summary, summary.stopped_because
    if not _ended(flat, opts, summary.stopped_because, ostudy):
        run.state = STOPPED
        _notify(on_stage, "stopped", run)
        return run
    values = stage_values(flat, ostudy.get_trials(deepcopy=False), previous.best if previous else None)
    run.decision, run.best, run.state = decide(stage, plan.study.stages, values), values["best"], DONE
    finish_stage(ostudy, run, run.decision)
    _notify(on_stage, "done", run)
    return run


def _notify(on_stage: StageCallback | None, event: str, run: StageRun) -> None:
    if on_stage is not None:
        on_stage(event, run)


# -- the plan ------------------------------------------------------------------------------------------
def run_plan(study: "Study", opts: "RunOptions", *, backend: "Backend", on_trial: Callable | None = None,
             on_start: Callable[[dict], None] | None = None, on_stage: StageCallback | None = None) -> PlanSummary:
    """Run the staged ``study`` from its first stage (resuming what the store holds) until a decision
    ends it, a stage stops before its end, or a stage would run more than :data:`MAX_VISITS` times.
    ``on_start`` / ``on_trial`` are the backend's (``info`` also has ``stage``, ``stage_study``, ``plan``,
    ``told``); ``on_stage(event, run)`` is called with ``start``, ``done``, ``done before`` or ``stopped``."""
    plan = _Plan(study, opts)
    t0 = time.monotonic()
    summary = PlanSummary(plan.name, redact(plan.url))
    visits: collections.Counter[str] = collections.Counter()
    stage: Stage = study.stages[0]
    while True:
        visits[stage.name] += 1
        if visits[stage.name] > MAX_VISITS:
            last = summary.stages[-1]
            summary.stopped_because = (
                f"stage {last.name} chose {stage.name} ({last.decision.get('rule')}), which already ran {MAX_VISITS} times: "
                f"a stage runs at most {MAX_VISITS} times in a plan; the plan stops here")
            break
        run = run_stage(plan, stage, visits[stage.name], summary.stages, backend=backend, on_trial=on_trial,
                        on_start=on_start, on_stage=on_stage)
        summary.stages.append(run)
        if run.state != DONE:
            summary.stopped_because = (f"stage {run.name} ({run.study_name}) stopped at its deadline ({run.stopped_because}) "
                                       "before its trial budget was used up; it is not decided: run again to resume it")
            break
        following = run.decision["next"]
        if following == END:
            summary.finished = True
            summary.stopped_because = (f"stage {run.name} chose end ({run.decision['rule']})" if run.decision["rule"] != DEFAULT_RULE
                                       else f"the last stage ({run.name}) is done")
            break
        if following not in plan.by_name:  # a decision recorded by another version of the file
            raise UsageError(f"stage {run.name} ({run.study_name}) chose {following!r}, which is not a stage of "
                             f"{study.file or plan.name} (stages: {', '.join(plan.by_name)})")
        stage = plan.by_name[following]
    summary.seconds = time.monotonic() - t0
    logger.info("plan %s: %s", plan.name, summary.stopped_because)
    return summary


# -- the stage in progress (hpo worker, hpo create) -------------------------------------------------------
def replay(study: "Study", opts: "RunOptions") -> tuple[list[StageRun], Stage | None, int]:
    """Follow the plan's recorded decisions through the store: (the done stages on its path, the first stage
    not done, and its visit number; None when the plan has ended or stops at its loop guard)."""
    plan = _Plan(study, opts)
    path: list[StageRun] = []
    visits: collections.Counter[str] = collections.Counter()
    stage: Stage | None = study.stages[0]
    while stage is not None:
        visits[stage.name] += 1
        if visits[stage.name] > MAX_VISITS:
            return path, None, 0
        name = visit_name(plan.name, stage.name, visits[stage.name])
        attr = plan.stage_attr(name)
        if not (attr and attr.get("state") == DONE):
            return path, stage, visits[stage.name]
        decision = attr.get("decision") or {}
        path.append(StageRun(stage.name, name, stage.index, visits[stage.name], DONE, decision=decision,
                             best=(decision.get("values") or {}).get("best")))
        stage = plan.by_name.get(decision.get("next"))
    return path, None, 0


def stage_in_progress(study: "Study", opts: "RunOptions") -> tuple["Study", str]:
    """The flat study and store name of the stage a worker serves: the first stage study on the plan's
    path that is not done. A UsageError when the plan has ended or that stage's study does not exist yet
    (``hpo run`` creates each stage when the one before it is decided)."""
    plan = _Plan(study, opts)
    path, stage, visit = replay(study, opts)
    if stage is None:
        raise UsageError(f"plan {plan.name!r} in {redact(plan.url)} has ended: every stage on its path is done")
    name = visit_name(plan.name, stage.name, visit)
    if plan.stage_attr(name) is None:
        raise UsageError(f"stage {stage.name} of plan {plan.name!r} has no study {name!r} in {redact(plan.url)} yet: "
                         f"`hpo run {study.file or ''}` creates it (and runs the stages before it); then start workers")
    flat, _ = stage_study(plan, stage, name, path[-1] if path else None)
    return flat, name


def create_first_stage(study: "Study", opts: "RunOptions") -> tuple["optuna.Study", dict]:
    """``hpo create`` of a staged study: create its first stage's study (spec, baselines, ``STAGE``)."""
    plan = _Plan(study, opts)
    stage = study.stages[0]
    return open_stage(plan, stage, stage.study, visit_name(plan.name, stage.name, 1), 1, None, None)


def describe_plan(summary: PlanSummary) -> list[str]:
    """The closing lines of ``hpo run`` on a plan: one per stage on its path, then why it stopped."""
    from hpo.plan.decide import describe_decision
    from hpo.plan.status import format_value

    lines = [f"plan {summary.plan}: {len(summary.stages)} stage run(s)"]
    for r in summary.stages:
        how = "ran now" if r.ran else "done before"
        extra = f", {r.told} warm-start trial(s) told" if r.told else ""
        lines.append(f"  {r.index + 1}. {r.name:<14s} {r.study_name:<28s} {r.state:<8s} best {format_value(r.best)} · "
                     f"{r.stopped_because or '-'} · {describe_decision(r.decision) if r.state == DONE else 'not decided'} "
                     f"({how}{extra})")
    lines.append(("plan ended: " if summary.finished else "plan stopped: ") + summary.stopped_because)
    return lines


def stage_facts(run: StageRun) -> dict[str, Any]:
    """A JSON-able view of a stage run (for scripts and ``--format json``)."""
    return {"name": run.name, "study": run.study_name, "index": run.index, "visit": run.visit, "state": run.state,
            "ran": run.ran, "best": run.best, "decision": run.decision, "stopped_because": run.stopped_because,
            "narrowed": run.narrowed, "told": run.told}
