"""Run a study on Ray Tune: ``backend: ray`` in the study, or ``hpo run --backend ray``.

- Search: Ray's ``OptunaSearch`` bound to the **same** study in the same store (``storage`` +
  ``study_name``), with the study's sampler and the search space as a define-by-run function, so
  conditional parameters, derived values, baselines (enqueued in the study) and constraints behave as
  in the local backend. Sampling happens in the driver; the trial's full config travels to the worker.
- Early stopping: Tune's ``ASHAScheduler`` or ``HyperBandScheduler`` on the monitored val metric per
  epoch (Ray's OptunaSearch always uses Optuna's NopPruner). A trial stopped by the scheduler is
  recorded as PRUNED with ``stop_reason: pruned``.
- Training: the same trial body as the local backend (:meth:`hpo.run.trial.TrialObjective.run_config`)
  in Ray workers with ``tune.with_resources``; they write curves, metrics, diagnosis and the best
  checkpoint to the store and artifact folder themselves (curves after every epoch, so a stopped
  trial keeps them). For a multi-node cluster, use a store and an artifact folder every node reaches.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hpo.errors import HpoError, UsageError
from hpo.run.backends._base import Backend
from hpo.store import record as R

if TYPE_CHECKING:
    from hpo.run.options import RunOptions, RunSummary
    from hpo.spec import Study

logger = logging.getLogger(__name__)


class RayBackend(Backend):
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def run(self, study, opts, *, raw=None, on_trial=None, on_start=None) -> "RunSummary":
        return run_ray(study, opts, address=self.address, raw=raw, on_trial=on_trial, on_start=on_start)


def run_ray(study: "Study", opts: "RunOptions", *, address: str | None = None, raw: dict | None = None,
            on_trial: Callable | None = None, on_start: Callable[[dict], None] | None = None) -> "RunSummary":
    """Create/resume the study and run it to its budget on Ray Tune (see the module docstring)."""
    import_tune()
    import ray

    from hpo.data.validate import check_study_data
    from hpo.run.budget import budget_of
    from hpo.run.options import resolve
    from hpo.run.placement import Placement
    from hpo.run.study import create_or_load, prepare, summarize
    from hpo.spec.urls import redact

    raw = raw or study.raw
    if not raw:
        raise UsageError("the Ray backend needs the study as a YAML mapping (build it with load_study or study_from_dict)")
    rs = study.spec.ray
    if study.storage_url(opts.storage).startswith("journal://"):
        raise UsageError("the Ray backend needs an RDB store (sqlite:// or postgresql://), not a journal file")
    run = resolve(study, opts)

    t0 = time.monotonic()
    check_study_data(study, opts.cache_dir)  # bad data is refused before the study is created
    ostudy = create_or_load(study, run.storage_url, run.study_name, heartbeat=False, resume_changed=opts.resume_changed)
    info = prepare(study, ostudy)
    budget = budget_of(ostudy.get_trials(deepcopy=False))
    remaining = max(0, run.n_trials - budget.used) if run.n_trials is not None else 10**6
    address = address or rs.address
    started_here = False
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(num_cpus=os.cpu_count() or 1, num_gpus=len(opts.gpus) if opts.gpus else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env=_local_runtime_env())
        else:
            ray.init(address=address, log_to_driver=False)
        started_here = True
    try:
        concurrent = rs.max_concurrent or concurrency(ray.cluster_resources(), rs.cpus_per_trial, rs.gpus_per_trial)
        info.update(study_name=run.study_name, storage=redact(run.storage_url), n_trials=run.n_trials,
                    timeout=run.timeout, budget=budget, artifacts=study.artifacts_dir(opts.artifacts),
                    placements=[Placement(i, None, int(rs.cpus_per_trial)) for i in range(concurrent)])
        if on_start is not None:
            on_start(info)
        if remaining > 0:
            _tune(study, opts, raw, run, remaining, concurrent, on_trial)
    finally:
        if started_here:
            ray.shutdown()
    return summarize(ostudy, run, time.monotonic() - t0, run.finished_because)


def import_tune():
    """``ray.tune``, or a one-line UsageError (exit 2, before the study is touched) naming what is missing: Ray
    itself, or the module Tune could not import (its own message only says "some dependencies are missing";
    e.g. pyarrow >= 26 on numpy < 2)."""
    try:
        from ray import tune
    except ImportError as e:
        cause = e.__cause__ if isinstance(e.__cause__, ImportError) else e
        raise UsageError(f"the Ray backend needs ray[tune] (pip install 'fusion-hpo[ray]'), but importing it failed: "
                         f"{str(cause).strip().splitlines()[0]}") from e
    return tune


def concurrency(resources: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials the cluster holds at once when ``ray.max_concurrent`` is unset: its CPUs (and GPUs, where a
    trial asks for some) over what one trial asks for, counted over every node (``ray.cluster_resources()``),
    not the driver's machine."""
    fits = [resources.get("CPU", 0) / cpus_per_trial] if cpus_per_trial > 0 else []
    if gpus_per_trial > 0:
        fits.append(resources.get("GPU", 0) / gpus_per_trial)
    return max(1, int(min(fits))) if fits else 1


def _scheduler(study: "Study"):
    """Tune's scheduler for the study and its name: ASHA or HyperBand on the monitored metric per epoch,
    FIFO (none) for multi-objective studies or ``ray.scheduler: none``."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    from hpo.run.options import epochs_ceiling

    rs = study.spec.ray
    # one past the epoch cap: a trial that trains to the end finishes itself and reports its best epoch
    max_t = 1 + epochs_ceiling(study)
    if study.multi_objective or rs.scheduler == "none":
        return FIFOScheduler(), "FIFO"
    if rs.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=max_t, reduction_factor=rs.reduction_factor), "HyperBand"
    return ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=rs.grace_period,
                         reduction_factor=rs.reduction_factor), "ASHA"


def _tune(study: "Study", opts: "RunOptions", raw: dict, run, remaining: int, concurrent: int,
          on_trial: Callable | None) -> None:
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler

    from hpo.run.backends.ray_trial import trainable as trainable_fn
    from hpo.run.trial import TrialObjective
    from hpo.search import build_sampler, sampler_seed
    from hpo.store.rdb import trial_id_of
    from hpo.store.storage import open_storage

    rs = study.spec.ray
    objective = TrialObjective(study, study.make_task(None))

    def space(trial):
        return {"hpo": {"config": objective.sample(trial), "trial_id": trial_id_of(trial), "number": trial.number}}

    driver_storage = open_storage(run.storage_url, heartbeat=False)  # the searcher's, and read after each trial
    seen_store = optuna.load_study(study_name=run.study_name, storage=driver_storage)

    def finished(number: int) -> None:
        if on_trial is not None:
            on_trial(seen_store, seen_store.trials[number])

    monitor = study.primary
    mode = "min" if monitor.direction == "minimize" else "max"
    scheduler, sched_name = _scheduler(study)
    metric = [o.metric for o in study.objectives] if study.multi_objective else monitor.metric
    modes = ["min" if o.direction == "minimize" else "max" for o in study.objectives] if study.multi_objective else mode
    seed = sampler_seed(study)  # the driver's sampler draws every trial: recorded with each, as locally
    from hpo.run.backends.ray_search import HpoOptunaSearch

    def stop_when() -> bool:  # stop_at_target, as the local worker loop asks it before each trial
        from hpo.run.targets import record_met, target_reached

        if not study.stop_at_target:
            return False
        first = target_reached(study.targets, study.stop_at_target, seen_store.get_trials(deepcopy=False))
        if first is not None:
            record_met(seen_store, study.targets, first)
        return first is not None

    searcher = HpoOptunaSearch(space=space, metric=metric, mode=modes, sampler=build_sampler(study, seed=seed),
                                 storage=driver_storage, study_name=run.study_name, on_finished=finished,
                                 scheduler_name=sched_name, stop_when=stop_when)
    payload = {
        "key": f"{run.storage_url}#{run.study_name}#{id(raw)}", "raw": raw,
        "base_dir": str(study.file.parent if study.file else Path.cwd()),
        "file": str(study.file) if study.file else None, "storage": run.storage_url, "study_name": run.study_name,
        "artifacts": str(Path(study.artifacts_dir(opts.artifacts)).resolve()),
        "cache_dir": str(Path(opts.cache_dir).resolve()), "checkpoints": opts.checkpoints, "device": opts.device,
        "worker_attrs": {R.SAMPLER_SEED: seed},
        "per_epoch": not isinstance(scheduler, FIFOScheduler),  # a scheduler that decides on epochs hears them
    }
    trainable = tune.with_resources(tune.with_parameters(trainable_fn, payload=payload),
                                    {"cpu": rs.cpus_per_trial, "gpu": rs.gpus_per_trial})
    # The store is the record of every trial; of Tune's default loggers (CSV, JSON, TensorBoard) keep
    # the JSON one its results read: the TensorBoard logger alone costs seconds of imports at the start
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=remaining,
            max_concurrent_trials=concurrent, time_budget_s=run.timeout, reuse_actors=True,
            **({} if study.multi_objective else {"metric": monitor.metric, "mode": mode}),
        ),
        run_config=tune.RunConfig(name=f"hpo-{run.study_name}", storage_path=str(Path("runs/ray").resolve()), verbose=0,
                                  callbacks=[JsonLoggerCallback()]),  # what Tune's results need; no TensorBoard
    )
    results = tuner.fit()
    errors = list(results.errors)
    if errors and len(errors) == len(results):
        raise HpoError(f"every Ray trial failed ({len(errors)}); the first: {str(errors[0]).strip().splitlines()[-1]}"
                       " (with a cluster of your own, its workers need fusion-hpo installed, or the project on PYTHONPATH)")


def _local_runtime_env() -> dict:
    """Workers of a cluster started here import ``hpo`` and the task families (the packages behind the
    ``fusion_hpo.tasks`` entry points) from where this process does, installed or not (e.g. run from a
    checkout). The families are found, not imported."""
    import importlib.util
    from importlib.metadata import entry_points

    import hpo

    roots = [str(Path(hpo.__file__).resolve().parents[1])]
    for name in sorted({ep.value.split(":", 1)[0].split(".", 1)[0] for ep in entry_points(group="fusion_hpo.tasks")}):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:  # a package: the folder holding it
            roots += [str(Path(loc).resolve().parent) for loc in spec.submodule_search_locations]
        elif spec is not None and spec.origin:  # a module
            roots.append(str(Path(spec.origin).resolve().parent))
    path = os.pathsep.join(dict.fromkeys([*roots, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    return {"env_vars": {"PYTHONPATH": path}}
