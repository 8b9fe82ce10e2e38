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
from hpo.storage import open_storage, redact

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.spec.load import Study

logger = logging.getLogger(__name__)

RECORD_ATTR = "fusion_hpo"  # study user attr holding the study spec
NOT_TRAINED = ("constraint", "invalid_config", "surplus")  # stop reasons of trials that did not train
RERUN = ("interrupted",)  # stop reasons of trials that are run again


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


@dataclass
class Budget:
    """Trial counts of a study, as the budget sees them."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    rejected: int = 0  # constraint / invalid config (not trained)
    rerun: int = 0  # failed or interrupted, re-queued

    @property
    def used(self) -> int:
        return self.complete + self.pruned + self.failed


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
def create_or_load(study: "Study", storage_url: str, study_name: str, *, worker: int = 0, heartbeat: bool = True) -> "optuna.Study":
    """Create the study in the store, or load it (checking its directions) when it exists."""
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
    except KeyError:
        pass
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=build_sampler(study, worker),
        pruner=build_pruner(study),
        directions=directions,
        load_if_exists=True,
    )


def prepare(study: "Study", ostudy: "optuna.Study") -> dict[str, Any]:
    """Record the spec, enqueue baselines not yet in the study and re-queue interrupted trials."""
    import json

    attrs = ostudy.user_attrs
    record = study.record
    if RECORD_ATTR not in attrs:
        ostudy.set_user_attr(RECORD_ATTR, record)
    elif json.dumps(attrs[RECORD_ATTR].get("spec"), sort_keys=True) != json.dumps(record.get("spec"), sort_keys=True):
        logger.warning("study %s: the spec changed since the study was created; new trials use the new spec", ostudy.study_name)
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
    return {"enqueued_baselines": enqueued, "requeued": requeued}


def budget_of(trials: Sequence["FrozenTrial"], before: int | None = None) -> Budget:
    """Count trials as the budget sees them (only those numbered below ``before``, if given)."""
    b = Budget()
    retried = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
        if "rerun_of" in t.user_attrs:
            retried.add(t.user_attrs["rerun_of"])
    for t in trials:
        if before is not None and t.number >= before:
            continue
        state, reason = t.state.name, t.user_attrs.get("stop_reason")
        if state == "RUNNING":
            b.running += 1
        elif state == "WAITING":
            b.waiting += 1
        elif reason in NOT_TRAINED:
            b.rejected += 1
        elif state == "FAIL" and (t.number in retried or reason in RERUN):
            b.rerun += 1
        elif state == "COMPLETE":
            b.complete += 1
        elif state == "PRUNED":
            b.pruned += 1
        elif state == "FAIL":
            b.failed += 1
    return b


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
    worker: int = 0,
    opts: RunOptions | None = None,
    on_trial: TrialCallback | None = None,
    stats: dict | None = None,
) -> str:
    """Run trials of the study in this process until the budget or the deadline; return why it
    stopped. ``stats``, if given, receives the data cache's statistics under ``"cache"``."""
    import optuna

    from hpo.cache import DataCache
    from hpo.errors import TrialFailed
    from hpo.objective import TrialObjective
    from hpo.storage import artifact_store

    opts = opts or RunOptions()
    ostudy = create_or_load(study, storage_url, study_name, worker=worker)
    task = study.make_task(DataCache(opts.cache_dir))
    if stats is not None:
        stats["cache"] = task.cache.stats
    store = artifact_store(study.artifacts_dir(opts.artifacts)) if opts.checkpoints else None
    objective = TrialObjective(study, task, artifacts=store, device=opts.device, n_trials=n_trials)
    deadline = time.monotonic() + timeout if timeout else None
    max_failures = study.spec.budget.max_consecutive_failures
    failures = 0
    last: list["FrozenTrial"] = []

    def remember(s: "optuna.Study", t: "FrozenTrial") -> None:
        last.append(t)
        if on_trial is not None:
            on_trial(s, t)

    from hpo.interrupt import check as check_interrupt

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
        last.clear()
        ostudy.optimize(objective, n_trials=1, catch=(TrialFailed, Exception), callbacks=[remember], gc_after_trial=False)
        if last and last[0].state.name == "FAIL" and last[0].user_attrs.get("stop_reason") not in NOT_TRAINED:
            failures += 1
            if failures >= max_failures:
                raise StudyAborted(
                    f"{failures} trials failed in a row (last: {last[0].user_attrs.get('stop_detail', '?')}); "
                    "stopping the study — fix the cause and run it again to resume"
                )
        elif last:
            failures = 0


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

    from hpo.interrupt import graceful_sigint

    study = study_from_dict(payload["raw"], base_dir=Path(payload["base_dir"]), file=payload["file"], check_data=False)
    try:
        with graceful_sigint():
            run_worker(
                study,
                payload["storage"],
                payload["study_name"],
                n_trials=payload["n_trials"],
                timeout=payload["timeout"],
                worker=placement.worker,
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
    from hpo.datacheck import check_study_data

    check_study_data(study, opts.cache_dir)  # bad data is refused before the study is created
    ostudy = create_or_load(study, storage_url, study_name, heartbeat=True)
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
        stopped = run_worker(study, storage_url, study_name, n_trials=n_trials, timeout=timeout, opts=opts, on_trial=on_trial, stats=stats)
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
    from hpo.interrupt import check as check_interrupt

    try:
        while any(p.is_alive() for p in procs):
            time.sleep(poll_seconds)
            _report_new(ostudy, seen, on_trial)
            check_interrupt()  # Ctrl-C reached the workers too: they stop their trials cleanly
    except KeyboardInterrupt:
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
