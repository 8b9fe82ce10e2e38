"""The study in the store: create or load it (refusing a stored study whose trials mean something else),
record the spec, and enqueue its baselines and the re-runs of interrupted trials once.

A stored study is refused when its directions differ, or when its recorded spec differs in what its
trials mean (:data:`SEMANTIC_KEYS`) unless ``--resume-changed``. Two first runs at once both enqueue the
baselines: the later copies are dropped (recorded as ``surplus``), whichever run finishes first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.run import options
from hpo.spec.urls import redact
from hpo.store.record import (ABLATION, BASELINE, FAILED_TRIAL, FORMAT, FORMAT_VERSION, KNOWN_FORMATS, OVERRIDES, RECORD_ATTR,
                              RERUN, RERUN_OF, SPEC, STOP_DETAIL, STOP_REASON, StopReason, record_format)
from hpo.store.storage import open_storage

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.spec import Study

logger = logging.getLogger(__name__)


def create_or_load(study: "Study", storage_url: str, study_name: str, *, worker: int | None = 0, heartbeat: bool = True,
                   seed: int | None = None, resume_changed: bool = False) -> "optuna.Study":
    """Create the study in the store, or load it when it exists: its directions must be the spec's,
    and so must what its trials mean (task, dataset, objectives, space; see :func:`spec_changes`)
    unless ``resume_changed``. ``seed`` (default: from ``worker``, see
    :func:`hpo.search.sampler_seed`) seeds this process's sampler."""
    import optuna

    from hpo.search import build_pruner, build_sampler

    storage = open_storage(storage_url, heartbeat=heartbeat, **dataclasses.asdict(options.heartbeat(study)))
    directions = study.directions
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
        have = [d.name.lower() for d in existing.directions]
        if have != directions:
            raise UsageError(
                f"study {study_name!r} in {redact(storage_url)} exists with directions {have}, "
                f"but {study.file or 'the spec'} asks for {directions}; use --study-name to start a new study"
            )
        check_same_spec(study, existing, storage_url, resume_changed=resume_changed)
    except KeyError:
        pass
    return optuna.create_study(study_name=study_name, storage=storage, sampler=build_sampler(study, worker, seed=seed),
                               pruner=build_pruner(study), directions=directions, load_if_exists=True)


SEMANTIC_KEYS = ("task", "objectives", "space.params", "space.fixed", "space.derived", "space.constraints")
"""What the trials of a study mean: a stored study whose spec differs in one of these is refused
(``--resume-changed`` continues it anyway). Budget, training defaults, sampler, pruner, storage,
fault tolerance and added baselines may change between runs."""


def spec_changes(stored: dict | None, new: dict | None) -> list[str]:
    """The semantic differences between two recorded specs (``record["spec"]``), one phrase each,
    e.g. ``objectives: stored ["val_mae"], this file ["val_rmse"]``."""
    if not isinstance(stored, dict) or not isinstance(new, dict):
        return []
    changes = []
    for key in SEMANTIC_KEYS:
        a, b = _semantic(stored, key), _semantic(new, key)
        if a != b:
            for path, x, y in _diff(key, a, b)[:4]:
                changes.append(f"{path}: stored {_short(x)}, this file {_short(y)}")
    return changes


def _semantic(spec: dict, key: str) -> Any:
    value: Any = spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if key == "objectives":  # directions are checked against the stored study itself
        items = value if isinstance(value, list) else [value] if value is not None else []
        return [o.get("metric") if isinstance(o, dict) else o for o in items]
    if value in ({}, []):
        return None
    return value


_MISSING = "(absent)"


def _diff(path: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k, _MISSING) != b.get(k, _MISSING):
                out += _diff(f"{path}.{k}", a.get(k, _MISSING), b.get(k, _MISSING))
        return out
    return [(path, a, b)] if a != b else []


def _short(value: Any, limit: int = 60) -> str:
    text = value if value is _MISSING else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same_spec(study: "Study", ostudy: "optuna.Study", storage_url: str, *, resume_changed: bool = False) -> None:
    """Refuse to run ``study`` into a stored study of the same name whose trials mean something else."""
    from hpo.errors import Problem, SpecError

    record = ostudy.user_attrs.get(RECORD_ATTR) or {}
    if record_format(record) not in KNOWN_FORMATS:  # written by another version: not comparable key by key
        return
    changes = spec_changes(record.get(SPEC), study.record.get(SPEC))
    if not changes:
        return
    if resume_changed:
        logger.warning("study %s: continuing it with a changed spec (--resume-changed): %s", ostudy.study_name, "; ".join(changes))
        return
    raise SpecError([Problem(
        "name",
        f"a study named {ostudy.study_name!r} exists in {redact(storage_url)} with a different spec "
        f"({'; '.join(changes)}); its trials would be mixed with this file's: use --study-name NEW (or a new name:) "
        "for a new study, or --resume-changed to continue the stored one with this spec",
        has_got=False)], str(study.file) if study.file else None)


def prepare(study: "Study", ostudy: "optuna.Study") -> dict[str, Any]:
    """Record the spec, enqueue baselines not yet in the study and re-queue interrupted trials."""
    attrs = ostudy.user_attrs
    record = {**study.record, FORMAT: FORMAT_VERSION}
    if RECORD_ATTR not in attrs:
        ostudy.set_user_attr(RECORD_ATTR, record)
    elif json.dumps(attrs[RECORD_ATTR].get(SPEC), sort_keys=True) != json.dumps(record.get(SPEC), sort_keys=True):
        # semantic changes were refused (or allowed with --resume-changed) by create_or_load
        logger.info("study %s: the spec changed since the study was created (budget, training defaults, baselines, ...); "
                    "new trials use the new spec", ostudy.study_name)
        ostudy.set_user_attr(RECORD_ATTR, record)
    trials = ostudy.get_trials(deepcopy=False)
    present = {t.user_attrs.get(BASELINE) for t in trials}
    enqueued = []
    for name in study.run_baselines:  # the named runs the study selects (baselines, ablation runs), in order
        b = study.space.baselines[name]
        if name in present:
            continue
        ablation = {ABLATION: b.ablation} if b.ablation is not None else {}
        ostudy.enqueue_trial(b.params, user_attrs={BASELINE: name, OVERRIDES: b.overrides, **ablation})
        enqueued.append(name)
    rerun_of = {t.user_attrs.get(RERUN_OF) for t in trials}
    requeued = []
    for t in trials:
        if t.state.name == "FAIL" and t.user_attrs.get(STOP_REASON) in RERUN and t.number not in rerun_of:
            keep = {k: t.user_attrs[k] for k in (BASELINE, OVERRIDES, ABLATION) if k in t.user_attrs}
            ostudy.enqueue_trial(t.params, user_attrs={**keep, RERUN_OF: t.number})
            requeued.append(t.number)
    if enqueued or requeued:
        _drop_duplicate_enqueues(ostudy)
    return {"enqueued_baselines": enqueued, "requeued": requeued}


def _drop_duplicate_enqueues(ostudy: "optuna.Study") -> None:
    """Two first runs at once both enqueue the baselines (and re-runs of interrupted trials): keep the
    earliest of each and record the later WAITING copies as FAIL ``surplus`` (not trained, not counted).
    Every process that enqueued does the same, so they agree whichever finishes first."""
    from optuna.trial import TrialState

    from hpo.store.rdb import fail_waiting

    first: set[tuple] = set()
    for t in ostudy.get_trials(deepcopy=False):
        if FAILED_TRIAL in t.system_attrs or (BASELINE not in t.user_attrs and RERUN_OF not in t.user_attrs):
            continue  # a heartbeat retry of a dead worker's trial, or a sampled trial
        key = (t.user_attrs.get(BASELINE), t.user_attrs.get(RERUN_OF))
        if key not in first:
            first.add(key)
        elif t.state == TrialState.WAITING:
            try:
                fail_waiting(ostudy, t, {STOP_REASON: StopReason.SURPLUS.value,
                                         STOP_DETAIL: "surplus: enqueued twice by two first runs at once; the earlier copy runs"})
            except Exception as e:  # a worker claimed it meanwhile: it runs, once more than asked
                logger.debug("duplicate enqueue of trial #%d not dropped: %s", t.number, e)


def best_trials(ostudy: "optuna.Study") -> list["FrozenTrial"]:
    """The best trial (or the Pareto-optimal ones) the study trained itself: warm-start copies of an earlier
    stage's trials (told to the sampler, never trained here) are left out; [] before any completes."""
    from optuna.trial import TrialState

    from hpo.store.stored import pareto_front, trained

    done = trained(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not done:
        return []
    if len(ostudy.directions) > 1:
        return pareto_front(done, ostudy.directions)
    pick = min if ostudy.direction.name == "MINIMIZE" else max
    return [pick(done, key=lambda t: t.value)]


def summarize(ostudy: "optuna.Study", run: "options.Resolved", seconds: float, stopped: str,
              cache: Any = None) -> "options.RunSummary":
    """The summary of a run of ``ostudy``, as the store has it after the run: its budget, the best
    trials and the target levels met (from the recorded spec). A run whose workers stopped because
    ``stop_at_target`` was met says so (``target met``), also where the coordinator saw only its workers end."""
    from hpo.run.budget import budget_of
    from hpo.run.targets import STOPPED_AT_TARGET, stop_level_of, targets_met

    trials = ostudy.get_trials(deepcopy=False)
    budget = budget_of(trials)
    rows = targets_met(ostudy, trials)
    stop_at = stop_level_of(ostudy)
    if stop_at and stopped == run.finished_because and any(r["met"] and r["level"] == stop_at for r in rows) \
            and (run.n_trials is None or budget.used < run.n_trials):
        stopped = STOPPED_AT_TARGET
    summary = options.RunSummary(run.study_name, redact(run.storage_url), budget, seconds, stopped, cache=cache,
                                 targets=rows)
    for t in best_trials(ostudy):
        summary.best.append({"number": t.number, "values": t.values, "baseline": t.user_attrs.get(BASELINE)})
    return summary
