"""Run a study: create or resume it in the store, enqueue its baselines once, and run trials in one
or more local worker processes until the budget is spent.

Budget: ``n_trials`` counts trials that trained (COMPLETE, PRUNED by the pruner or by divergence, and
FAIL for crashes), over the whole life of the study, so running ``hpo run`` again after an
interruption finishes the same budget instead of starting a new one. Trials rejected before training
(constraints, invalid configs) do not count, nor do trials that failed because their worker died or
was interrupted: those are re-queued with their parameters and run again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hpo.errors import HpoError, UsageError
from hpo.run.budget import Budget, budget_of
from hpo.store.record import NOT_TRAINED, RECORD_ATTR, RERUN
from hpo.store.storage import open_storage
from hpo.spec.urls import redact

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.spec.load import Study

logger = logging.getLogger(__name__)



class StudyAborted(HpoError):
    """The study stopped because too many trials failed in a row."""


@dataclass
class RunOptions:
    storage: str | None = None  # default: the study's storage, else sqlite:///runs/hpo.db
    study_name: str | None = None  # default: the study's name
    n_trials: int | None = None  # default: budget.n_trials
    timeout: float | None = None  # default: budget.timeout (seconds; no new trial starts after it)
    workers: int | None = None  # default: one per GPU where there are GPUs, else 1
    gpus: Sequence[str] | None = None  # GPU ids to use (default: all visible)
    device: str | None = None  # force a device ("cpu", "cuda"); default auto
    artifacts: str | None = None  # checkpoint folder
    cache_dir: str = "runs/cache"  # processed data cache
    checkpoints: bool = True
    threads: int | None = None  # torch CPU threads per worker (default: cores // workers)
    resume_changed: bool = False  # continue a stored study whose task/dataset/objectives/space differ


@dataclass
class RunSummary:
    study_name: str
    storage: str
    budget: Budget
    seconds: float
    stopped_because: str
    best: list[dict] = field(default_factory=list)  # best (or Pareto-optimal) trials: number, values, baseline
    cache: Any = None  # the data cache's CacheStats of an in-process run (None with worker processes)


# ------------------------------------------------------------------------------ the store side
def create_or_load(study: "Study", storage_url: str, study_name: str, *, worker: int | None = 0, heartbeat: bool = True,
                   seed: int | None = None, resume_changed: bool = False) -> "optuna.Study":
    """Create the study in the store, or load it when it exists: its directions must be the spec's,
    and so must what its trials mean (task, dataset, objectives, space; see :func:`spec_changes`)
    unless ``resume_changed``. ``seed`` (default: from ``worker``, see
    :func:`hpo.search.sampler_seed`) seeds this process's sampler."""
    import optuna

    from hpo.search import build_pruner, build_sampler

    ft = study.spec.fault_tolerance
    storage = open_storage(storage_url, heartbeat=heartbeat, heartbeat_interval=ft.heartbeat_interval,
                           grace_period=ft.grace_period, max_retry=ft.max_retry)
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
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=build_sampler(study, worker, seed=seed),
        pruner=build_pruner(study),
        directions=directions,
        load_if_exists=True,
    )


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
    import json

    text = value if value is _MISSING else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same_spec(study: "Study", ostudy: "optuna.Study", storage_url: str, *, resume_changed: bool = False) -> None:
    """Refuse to run ``study`` into a stored study of the same name whose trials mean something else."""
    from hpo.errors import Problem, SpecError

    record = ostudy.user_attrs.get(RECORD_ATTR) or {}
    if record.get("format") != study.record.get("format"):  # written by another version: not comparable key by key
        return
    changes = spec_changes(record.get("spec"), study.record.get("spec"))
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
    import json

    attrs = ostudy.user_attrs
    record = study.record
    if RECORD_ATTR not in attrs:
        ostudy.set_user_attr(RECORD_ATTR, record)
    elif json.dumps(attrs[RECORD_ATTR].get("spec"), sort_keys=True) != json.dumps(record.get("spec"), sort_keys=True):
        # semantic changes were refused (or allowed with --resume-changed) by create_or_load
        logger.info("study %s: the spec changed since the study was created (budget, training defaults, baselines, ...); "
                    "new trials use the new spec", ostudy.study_name)
        ostudy.set_user_attr(RECORD_ATTR, record)
    trials = ostudy.get_trials(deepcopy=False)
    present = {t.user_attrs.get("baseline") for t in trials}
    enqueued = []
    for name, b in study.space.baselines.items():
        if name in present:
            continue
        ostudy.enqueue_trial(b.params, user_attrs={"baseline": name, "overrides": b.overrides})
        enqueued.append(name)
    rerun_of = {t.user_attrs.get("rerun_of") for t in trials}
    requeued = []
    for t in trials:
        if t.state.name == "FAIL" and t.user_attrs.get("stop_reason") in RERUN and t.number not in rerun_of:
            keep = {k: t.user_attrs[k] for k in ("baseline", "overrides") if k in t.user_attrs}
            ostudy.enqueue_trial(t.params, user_attrs={**keep, "rerun_of": t.number})
            requeued.append(t.number)
    if enqueued or requeued:
        _drop_duplicate_enqueues(ostudy)
    return {"enqueued_baselines": enqueued, "requeued": requeued}


def _drop_duplicate_enqueues(ostudy: "optuna.Study") -> None:
    """Two first runs at once both enqueue the baselines (and re-runs of interrupted trials): keep the
    earliest of each and record the later WAITING copies as FAIL ``surplus`` (not trained, not counted).
    Every process that enqueued does the same, so they agree whichever finishes first."""
    from optuna.trial import TrialState

    first: set[tuple] = set()
    for t in ostudy.get_trials(deepcopy=False):
        if "failed_trial" in t.system_attrs or ("baseline" not in t.user_attrs and "rerun_of" not in t.user_attrs):
            continue  # a heartbeat retry of a dead worker's trial, or a sampled trial
        key = (t.user_attrs.get("baseline"), t.user_attrs.get("rerun_of"))
        if key not in first:
            first.add(key)
        elif t.state == TrialState.WAITING:
            try:
                ostudy._storage.set_trial_user_attr(t._trial_id, "stop_reason", "surplus")
                ostudy._storage.set_trial_user_attr(t._trial_id, "stop_detail", "surplus: enqueued twice by two first runs "
                                                    "at once; the earlier copy runs")
                ostudy._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception as e:  # a worker claimed it meanwhile: it runs, once more than asked
                logger.debug("duplicate enqueue of trial #%d not dropped: %s", t.number, e)


def best_trials(ostudy: "optuna.Study") -> list["FrozenTrial"]:
    try:
        return list(ostudy.best_trials) if len(ostudy.directions) > 1 else [ostudy.best_trial]
    except ValueError:  # no complete trial yet
        return []


# ------------------------------------------------------------------------------ workers
@dataclass(frozen=True)
class Placement:
    """Where one worker runs: its GPU (via CUDA_VISIBLE_DEVICES) and its CPU threads."""

    worker: int
    gpu: str | None  # the CUDA_VISIBLE_DEVICES value for this worker, None on CPU
    threads: int


def plan_workers(workers: int | None, gpus: Sequence[str], cpus: int, threads: int | None = None) -> list[Placement]:
    """One trial per GPU by default; CPU threads divided between workers.

    ``workers`` None means one per GPU (or 1 without GPUs). More workers than GPUs share GPUs round
    robin; fewer use the first ones. ``threads`` overrides the per-worker thread count.
    """
    gpus = [str(g) for g in gpus]
    n = workers if workers is not None else max(1, len(gpus))
    if n < 1:
        raise UsageError(f"--workers must be >= 1, but got {n}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, but got {threads}")
    threads = threads or max(1, cpus // n)
    return [Placement(i, gpus[i % len(gpus)] if gpus else None, threads) for i in range(n)]


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - no torch / broken driver: CPU
        return []


TrialCallback = Callable[["optuna.Study", "FrozenTrial"], None]


def run_worker(
    study: "Study",
    storage_url: str,
    study_name: str,
    *,
    n_trials: int | None,
    timeout: float | None,
    worker: int | None = None,
    opts: RunOptions | None = None,
    on_trial: TrialCallback | None = None,
    stats: dict | None = None,
) -> str:
    """Run trials of the study in this process until the budget or the deadline; return why it
    stopped. ``stats``, if given, receives the data cache's statistics under ``"cache"``.

    ``worker`` numbers this process's sampler seed (``seed + worker``: ``hpo run`` with one worker
    passes 0, reproducible); None (every ``hpo worker`` and spawned worker) derives a seed of its own
    from the study's seed and this process's identity, so that no two workers propose the same
    trials. Either way it is recorded with each trial (user attr ``sampler_seed``).

    Each trial is ask → body → tell (what ``optuna.Study.optimize`` does, heartbeat included), so a
    trial that another worker failed meanwhile (its heartbeat went stale during a store outage) is
    dropped with one line and the worker serves the next one.
    """
    from hpo.data.cache import DataCache
    from hpo.run.objective import TrialObjective
    from hpo.search import sampler_seed
    from hpo.store.storage import artifact_store

    opts = opts or RunOptions()
    seed = sampler_seed(study, worker)
    ostudy = create_or_load(study, storage_url, study_name, worker=worker, seed=seed, resume_changed=opts.resume_changed)
    task = study.make_task(DataCache(opts.cache_dir))
    if stats is not None:
        stats["cache"] = task.cache.stats
    store = artifact_store(study.artifacts_dir(opts.artifacts)) if opts.checkpoints else None
    objective = TrialObjective(study, task, artifacts=store, device=opts.device, n_trials=n_trials)
    objective.worker_attrs = {"sampler_seed": seed, **({"worker_index": worker} if worker is not None else {})}
    logger.debug("worker %s: sampler seed %d", worker if worker is not None else "(derived)", seed)
    deadline = time.monotonic() + timeout if timeout else None
    max_failures = study.spec.budget.max_consecutive_failures
    failures = 0

    import optuna

    from hpo.train.interrupt import check as check_interrupt

    heartbeat = _has_heartbeat(ostudy)
    while True:
        check_interrupt()
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        trials = ostudy.get_trials(deepcopy=False)
        budget = budget_of(trials)
        if n_trials is not None and budget.used >= n_trials:
            return "budget"
        if n_trials is not None and budget.used + budget.running >= n_trials and not budget.waiting:
            if not heartbeat:
                return "budget"  # without heartbeats a dead worker's trial cannot be detected: leave it
            # the rest of the budget is running in other workers: wait until it finishes, or until a
            # dead worker's trial goes stale and is re-queued (then run it here)
            _fail_stale(ostudy)
            time.sleep(WAIT_POLL_SECONDS)
            continue
        sampler = ostudy.sampler
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(ostudy) and not budget.waiting:
            return "grid exhausted"
        if n_trials is not None:
            # a race past the budget needs more simultaneous starters than free slots: with room for
            # more than twice every worker seen lately (running or between trials), skip the check
            free = n_trials - budget.used - budget.running
            objective.check_surplus = free <= 2 * (_recent_workers(trials) + 1)
        done = run_trial(ostudy, objective, heartbeat=heartbeat)
        if done is None:  # dropped: another worker finished it meanwhile
            continue
        if on_trial is not None:
            on_trial(ostudy, done)
        if done.state.name == "FAIL" and done.user_attrs.get("stop_reason") not in NOT_TRAINED:
            failures += 1
            if failures >= max_failures:
                raise StudyAborted(
                    f"{failures} trials failed in a row (last: {done.user_attrs.get('stop_detail', '?')}); "
                    "stopping the study — fix the cause and run it again to resume"
                )
        else:
            failures = 0


def run_trial(ostudy: "optuna.Study", objective: Callable[["optuna.Trial"], Any], *, heartbeat: bool = True) -> "FrozenTrial | None":
    """One trial as ``optuna.Study.optimize`` runs it (``_run_trial``): fail stale trials, ask, run
    the body under a heartbeat thread, tell the state and values. Return the finished trial, or None
    when the trial was finished by someone else while the body ran (another worker's stale-heartbeat
    check failed it, e.g. during a store outage: the result is dropped and its retry runs elsewhere).
    A KeyboardInterrupt (Ctrl-C, SIGTERM) records the trial as interrupted, FAIL, and propagates."""
    import copy

    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    import warnings

    from hpo.errors import StoreError, TrialFailed

    if heartbeat:
        _fail_stale(ostudy)
    with warnings.catch_warnings():  # the heartbeat thread is run here, as optimize() runs it
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        trial = ostudy.ask()
    if heartbeat:  # the first beat before the body writes anything (the thread's may wait on a busy store)
        try:
            ostudy._storage.record_heartbeat(trial._trial_id)
        except Exception as e:  # the thread keeps trying
            logger.debug("first heartbeat of trial #%d failed: %s", trial.number, e)
    state: TrialState | None = None
    values: Any = None
    interrupted: BaseException | None = None
    with get_heartbeat_thread(trial._trial_id, ostudy._storage):
        try:
            values = objective(trial)  # state None: Optuna's tell makes it COMPLETE, or FAIL for a NaN
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed as e:  # recorded by the body (stop_reason, stop_detail)
            state = TrialState.FAIL
            logger.info("trial #%d failed: %s", trial.number, str(e)[:300])
        except StoreError:  # the store refuses (full, read-only, gone past the reconnect timeout): stop the worker,
            raise  # one line, exit 2; the trial goes stale and is run again when the store is usable
        except Exception as e:
            state = TrialState.FAIL
            logger.warning("trial #%d failed: %s: %s", trial.number, type(e).__name__, str(e)[:300])
            logger.debug("trial #%d failed", trial.number, exc_info=True)
        except KeyboardInterrupt as e:
            state, interrupted = TrialState.FAIL, e
            _mark_interrupted(trial)
    try:
        ostudy.tell(trial, values, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as e:
        stored = ostudy._storage.get_trial(trial._trial_id)
        if stored.state == TrialState.RUNNING:
            raise
        logger.warning("trial #%d was marked %s by another worker while this one ran it (its heartbeat went stale); "
                       "this worker drops its result (%s) and serves the next trial",
                       trial.number, stored.state.name, (state.name if state is not None else "COMPLETE"))
        logger.debug("tell refused: %s", e)
        if interrupted is not None:
            raise interrupted
        return None
    if interrupted is not None:
        raise interrupted
    return copy.deepcopy(ostudy._storage.get_trial(trial._trial_id))


def _mark_interrupted(trial: "optuna.Trial") -> None:
    """An interrupt outside training (sampling, the surplus check) is recorded like one inside it."""
    try:
        if "stop_reason" not in trial.user_attrs:
            trial.set_user_attr("stop_reason", "interrupted")
            trial.set_user_attr("stop_detail", "interrupted before training; it is run again when the study resumes")
    except Exception as e:  # the store went away too: the trial goes stale and is retried
        logger.debug("could not record the interruption of trial #%d: %s", trial.number, e)


WAIT_POLL_SECONDS = 1.0


def _recent_workers(trials: Sequence["FrozenTrial"], last: int = 64) -> int:
    """How many distinct workers ran the study's recent trials (an estimate of how many serve it)."""
    return len({t.user_attrs.get("worker") for t in trials[-last:] if t.user_attrs.get("worker")})


def _has_heartbeat(ostudy: "optuna.Study") -> bool:
    get = getattr(ostudy._storage, "get_heartbeat_interval", None)
    return bool(get and get())


def _fail_stale(ostudy: "optuna.Study") -> None:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(ostudy)
    _fail_heartbeatless(ostudy)


def _fail_heartbeatless(ostudy: "optuna.Study") -> None:
    """Fail (and re-queue, like a stale trial) RUNNING trials that never sent a heartbeat.

    A worker killed between ``ask`` and its first heartbeat leaves a RUNNING trial with no heartbeat
    row, which Optuna's stale check skips forever: the other workers would wait for it without end
    (the budget counts it as running). Such a trial started more than ``2 * grace_period + 10``
    seconds ago (by this host's clock, as Optuna records ``datetime_start``) is dead.
    """
    import copy
    import datetime

    import optuna
    from optuna.trial import TrialState

    storage = ostudy._storage
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage) or not backend.get_heartbeat_interval():
        return
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # pragma: no cover - another Optuna layout: its own check only
        return
    grace = backend.grace_period or 2 * backend.get_heartbeat_interval()
    with _create_scoped_session(backend.scoped_session) as session:
        ids = [row[0] for row in (
            session.query(models.TrialModel.trial_id)
            .outerjoin(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == ostudy._study_id, models.TrialModel.state == TrialState.RUNNING,
                    models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
            .all())]
    callback = backend.get_heartbeat_stale_trial_callback()
    for trial_id in ids:
        started = backend.get_trial(trial_id).datetime_start
        if started is None:
            continue
        now = datetime.datetime.now(started.tzinfo) if started.tzinfo else datetime.datetime.now()
        if (now - started).total_seconds() < 2 * grace + 10:
            continue
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        logger.warning("trial #%d never sent a heartbeat since it started at %s (its worker died before its first one): "
                       "marked FAIL%s", frozen.number, frozen.datetime_start, " and re-queued" if callback else "")
        if callback is not None:
            callback(ostudy, frozen)


def _worker_main(payload: dict) -> None:
    """Entry point of a spawned worker process (CUDA_VISIBLE_DEVICES set before torch loads)."""
    placement: Placement = payload["placement"]
    if placement.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = placement.gpu
    logging.basicConfig(level=payload.get("log_level", logging.WARNING), format=f"[worker {placement.worker}] %(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(payload.get("optuna_log_level", optuna.logging.WARNING))
    import torch

    torch.set_num_threads(placement.threads)
    from hpo.spec.load import study_from_dict

    from hpo.train.interrupt import graceful_sigint

    study = study_from_dict(payload["raw"], base_dir=Path(payload["base_dir"]), file=payload["file"], check_data=False)
    try:
        with graceful_sigint():
            run_worker(  # worker=None: a seed of its own (placement.worker only picks the GPU)
                study,
                payload["storage"],
                payload["study_name"],
                n_trials=payload["n_trials"],
                timeout=payload["timeout"],
                worker=None,
                opts=payload["opts"],
            )
    except KeyboardInterrupt:
        pass


def run_study(
    study: "Study",
    opts: RunOptions | None = None,
    *,
    on_trial: TrialCallback | None = None,
    on_start: Callable[[dict], None] | None = None,
    raw: dict | None = None,
    poll_seconds: float = 1.0,
) -> RunSummary:
    """Create/resume the study and run it to its budget with ``opts.workers`` local workers.

    With one worker the trials run in this process (``on_trial`` called after each); with more,
    workers are spawned processes and this process follows the store (``on_trial`` called for each
    trial that finishes). Worker processes rebuild the study from its mapping (``raw``, default
    ``study.raw``). A script that starts several workers needs the ``if __name__ == "__main__":``
    guard (workers are spawned); if every worker dies, this raises :class:`~hpo.errors.HpoError`.
    """
    opts = opts or RunOptions()
    storage_url = study.storage_url(opts.storage)
    study_name = opts.study_name or study.name
    n_trials = opts.n_trials if opts.n_trials is not None else study.spec.budget.n_trials
    timeout = opts.timeout if opts.timeout is not None else study.spec.budget.timeout
    if n_trials is None and timeout is None:
        raise UsageError(f"{study.file}: no budget: set budget.n_trials or budget.timeout, or pass --trials / --timeout")
    gpus = list(opts.gpus) if opts.gpus is not None else ([] if opts.device == "cpu" else visible_gpus())
    placements = plan_workers(opts.workers, gpus, os.cpu_count() or 1, opts.threads)

    t0 = time.monotonic()
    from hpo.data.validate import check_study_data

    check_study_data(study, opts.cache_dir)  # bad data is refused before the study is created
    ostudy = create_or_load(study, storage_url, study_name, heartbeat=True, resume_changed=opts.resume_changed)
    info = prepare(study, ostudy)
    start_budget = budget_of(ostudy.get_trials(deepcopy=False))
    info.update(
        study_name=study_name,
        storage=redact(storage_url),
        n_trials=n_trials,
        timeout=timeout,
        budget=start_budget,
        placements=placements,
        artifacts=study.artifacts_dir(opts.artifacts),
    )
    if on_start is not None:
        on_start(info)

    if len(placements) == 1:
        p = placements[0]
        if opts.threads:
            import torch

            torch.set_num_threads(opts.threads)
        if p.gpu is not None and "CUDA_VISIBLE_DEVICES" not in os.environ and len(gpus) > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = p.gpu
        stats: dict = {}
        stopped = run_worker(study, storage_url, study_name, n_trials=n_trials, timeout=timeout, worker=0, opts=opts,
                             on_trial=on_trial, stats=stats)
    else:
        stats = {}
        stopped = _run_processes(study, raw, storage_url, study_name, n_trials, timeout, placements, opts, on_trial, poll_seconds)

    trials = ostudy.get_trials(deepcopy=False)
    summary = RunSummary(study_name, redact(storage_url), budget_of(trials), time.monotonic() - t0, stopped, cache=stats.get("cache"))
    for t in best_trials(ostudy):
        summary.best.append({"number": t.number, "values": t.values, "baseline": t.user_attrs.get("baseline")})
    return summary


def _run_processes(study, raw, storage_url, study_name, n_trials, timeout, placements, opts, on_trial, poll_seconds) -> str:
    import multiprocessing as mp

    import optuna

    raw = raw or study.raw
    if not raw:
        raise UsageError("several workers need the study as a YAML mapping (build it with load_study or study_from_dict)")
    ctx = mp.get_context("spawn")
    base_dir = str(study.file.parent if study.file else Path.cwd())
    procs = []
    for p in placements:
        payload = {
            "raw": raw,
            "base_dir": base_dir,
            "file": str(study.file) if study.file else None,
            "storage": storage_url,
            "study_name": study_name,
            "n_trials": n_trials,
            "timeout": timeout,
            "placement": p,
            "opts": dataclasses.replace(opts, workers=1),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "optuna_log_level": optuna.logging.get_verbosity(),
        }
        proc = ctx.Process(target=_worker_main, args=(payload,), name=f"hpo-worker-{p.worker}")
        proc.start()
        procs.append(proc)
    ostudy = optuna.load_study(study_name=study_name, storage=open_storage(storage_url, heartbeat=False))
    seen: set[int] = {t.number for t in ostudy.get_trials(deepcopy=False) if t.state.is_finished()}
    from hpo.train.interrupt import check as check_interrupt

    try:
        while any(p.is_alive() for p in procs):
            time.sleep(poll_seconds)
            _report_new(ostudy, seen, on_trial)
            check_interrupt()  # Ctrl-C reached the workers too: they stop their trials cleanly
    except KeyboardInterrupt:
        import signal

        from hpo.train.interrupt import last_signal

        if last_signal() not in (None, signal.SIGINT):  # Ctrl-C reached them from the terminal; SIGTERM did not
            for p in procs:
                if p.is_alive() and p.pid:
                    os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    _report_new(ostudy, seen, on_trial)
    codes = [p.exitcode for p in procs]
    failed = [c for c in codes if c not in (0, None)]
    if failed and len(failed) == len(codes):
        raise HpoError(f"all {len(codes)} workers exited with an error (exit codes {codes}; their messages are above); "
                       "the store keeps every trial they finished — fix the cause and run again to resume")
    if failed:
        logger.warning("worker exit codes: %s", codes)
    return "budget" if n_trials is not None else "timeout"


def _report_new(ostudy, seen: set[int], on_trial) -> None:
    for t in ostudy.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in seen:
            seen.add(t.number)
            if on_trial is not None:
                on_trial(ostudy, t)


# ------------------------------------------------------------------------------ one-line trial
def describe_trial(t: "FrozenTrial", metrics: Sequence[str], best: Sequence["FrozenTrial"] = ()) -> str:
    """``#12 COMPLETE val_mae=0.4123 | best #7 0.3981 | 23 epochs, early_stopped | 14.2s [current]``"""
    state = t.state.name
    reason = t.user_attrs.get("stop_reason", "")
    parts = [f"#{t.number:<3d} {state:<8s}"]
    if t.values:
        parts.append(" ".join(f"{m}={_fmt(v)}" for m, v in zip(metrics, t.values)))
    elif t.intermediate_values:
        step, value = max(t.intermediate_values.items())
        parts.append(f"{metrics[0]}={_fmt(value)}@{step}")
    detail = t.user_attrs.get("stop_detail") or t.system_attrs.get("fail_reason", "")
    if state == "COMPLETE":
        detail = f"{t.user_attrs.get('epochs_run', '?')} epochs, {reason.replace('_', ' ')}"
    if best and state == "COMPLETE" and len(best) == 1:
        parts.append(f"best #{best[0].number} {_fmt(best[0].values[0])}")
    parts.append(detail[:160])
    if t.user_attrs.get("seconds") is not None:
        parts.append(f"{t.user_attrs['seconds']:.1f}s")
    tag = t.user_attrs.get("baseline")
    line = " | ".join(p for p in parts if p)
    return line + (f" [{tag}]" if tag else "")


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.5g}"
