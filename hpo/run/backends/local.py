"""The local backend: trials in this process (one worker) or in spawned worker processes on this machine,
one per GPU by default (:mod:`hpo.run.placement`), each running the worker loop (:func:`hpo.run.loop.run_worker`)
against the same store; this process follows the store and reports each finished trial."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hpo.errors import HpoError, UsageError
from hpo.run.backends._base import Backend
from hpo.run.budget import budget_of
from hpo.run.loop import TrialCallback, run_worker
from hpo.run.options import Resolved, RunOptions, RunSummary, resolve
from hpo.run.placement import Placement, gpus_for, plan_workers
from hpo.spec.urls import redact

if TYPE_CHECKING:
    from hpo.spec import Study

logger = logging.getLogger(__name__)


class LocalBackend(Backend):
    name = "local"
    progress_bar = True

    def run(self, study, opts, *, raw=None, on_trial=None, on_start=None) -> RunSummary:
        return run_study(study, opts, raw=raw, on_trial=on_trial, on_start=on_start)


def run_study(study: "Study", opts: RunOptions | None = None, *, on_trial: TrialCallback | None = None,
              on_start: Callable[[dict], None] | None = None, raw: dict | None = None, poll_seconds: float = 1.0) -> RunSummary:
    """Create/resume the study and run it to its budget with ``opts.workers`` local workers.

    With one worker the trials run in this process (``on_trial`` called after each); with more,
    workers are spawned processes and this process follows the store (``on_trial`` called for each
    trial that finishes). Worker processes rebuild the study from its mapping (``raw``, default
    ``study.raw``). A script that starts several workers needs the ``if __name__ == "__main__":``
    guard (workers are spawned); if every worker dies, this raises :class:`~hpo.errors.HpoError`.
    """
    from hpo.data.validate import check_study_data
    from hpo.run.study import create_or_load, prepare, summarize

    opts = opts or RunOptions()
    run = resolve(study, opts)
    gpus = gpus_for(opts.gpus, opts.device)
    placements = plan_workers(opts.workers, gpus, os.cpu_count() or 1, opts.threads)

    t0 = time.monotonic()
    check_study_data(study, opts.cache_dir)  # bad data is refused before the study is created
    ostudy = create_or_load(study, run.storage_url, run.study_name, heartbeat=True, resume_changed=opts.resume_changed)
    info = prepare(study, ostudy)
    info.update(study_name=run.study_name, storage=redact(run.storage_url), n_trials=run.n_trials, timeout=run.timeout,
                budget=budget_of(ostudy.get_trials(deepcopy=False)), placements=placements,
                artifacts=study.artifacts_dir(opts.artifacts))
    if on_start is not None:
        on_start(info)

    stats: dict = {}
    if len(placements) == 1:
        p = placements[0]
        if opts.threads:
            import torch

            torch.set_num_threads(opts.threads)
        if p.gpu is not None and "CUDA_VISIBLE_DEVICES" not in os.environ and len(gpus) > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = p.gpu
        stopped = run_worker(study, run.storage_url, run.study_name, n_trials=run.n_trials, timeout=run.timeout, worker=0,
                             opts=opts, on_trial=on_trial, stats=stats)
    else:
        stopped = _run_processes(study, raw, run, placements, opts, on_trial, poll_seconds)
    return summarize(ostudy, run, time.monotonic() - t0, stopped, cache=stats.get("cache"))


def _worker_main(payload: dict) -> None:
    """Entry point of a spawned worker process (CUDA_VISIBLE_DEVICES set before torch loads)."""
    placement: Placement = payload["placement"]
    if placement.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = placement.gpu
    logging.basicConfig(level=payload.get("log_level", logging.WARNING),
                        format=f"[worker {placement.worker}] %(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(payload.get("optuna_log_level", optuna.logging.WARNING))
    import torch

    torch.set_num_threads(placement.threads)
    from hpo.spec import study_from_dict
    from hpo.train.interrupt import graceful_sigint

    study = study_from_dict(payload["raw"], base_dir=Path(payload["base_dir"]), file=payload["file"], check_data=False)
    try:
        with graceful_sigint():
            run_worker(study, payload["storage"], payload["study_name"], n_trials=payload["n_trials"],
                       timeout=payload["timeout"], worker=None,  # a seed of its own (placement.worker only picks the GPU)
                       opts=payload["opts"])
    except KeyboardInterrupt:
        pass


def _run_processes(study: "Study", raw: dict | None, run: Resolved, placements: list[Placement], opts: RunOptions,
                   on_trial: TrialCallback | None, poll_seconds: float) -> str:
    import multiprocessing as mp
    import signal

    import optuna

    from hpo.store.storage import open_storage
    from hpo.train.interrupt import check as check_interrupt, last_signal

    raw = raw or study.raw
    if not raw:
        raise UsageError("several workers need the study as a YAML mapping (build it with load_study or study_from_dict)")
    ctx = mp.get_context("spawn")
    base_dir = str(study.file.parent if study.file else Path.cwd())
    procs = []
    for p in placements:
        payload = {
            "raw": raw, "base_dir": base_dir, "file": str(study.file) if study.file else None,
            "storage": run.storage_url, "study_name": run.study_name, "n_trials": run.n_trials, "timeout": run.timeout,
            "placement": p, "opts": dataclasses.replace(opts, workers=1),
            "log_level": logging.getLogger().getEffectiveLevel(), "optuna_log_level": optuna.logging.get_verbosity(),
        }
        proc = ctx.Process(target=_worker_main, args=(payload,), name=f"hpo-worker-{p.worker}")
        proc.start()
        procs.append(proc)
    ostudy = optuna.load_study(study_name=run.study_name, storage=open_storage(run.storage_url, heartbeat=False))
    seen: set[int] = {t.number for t in ostudy.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(poll_seconds)
            _report_new(ostudy, seen, on_trial)
            check_interrupt()  # Ctrl-C reached the workers too: they stop their trials cleanly
    except KeyboardInterrupt:
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
    return run.finished_because


def _report_new(ostudy, seen: set[int], on_trial) -> None:
    for t in ostudy.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in seen:
            seen.add(t.number)
            if on_trial is not None:
                on_trial(ostudy, t)
