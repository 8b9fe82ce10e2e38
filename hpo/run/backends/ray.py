"""Run a study on Ray Tune: ``backend: ray`` in the study, or ``hpo run --backend ray``.

- Search: Ray's ``OptunaSearch`` bound to the **same** study in the same store (``storage`` +
  ``study_name``), with the study's sampler and the search space as a define-by-run function, so
  conditional parameters, derived values, baselines (enqueued in the study) and constraints behave as
  in the local backend. Sampling happens in the driver; the trial's full config travels to the worker.
- Early stopping: Tune's ``ASHAScheduler`` or ``HyperBandScheduler`` on the monitored val metric per
  epoch (Ray's OptunaSearch always uses Optuna's NopPruner). A trial stopped by the scheduler is
  recorded as PRUNED with ``stop_reason: pruned``.
- Training: the same trial body as the local backend (:meth:`hpo.run.objective.TrialObjective.run_config`)
  in Ray workers with ``tune.with_resources``; they write curves, metrics, diagnosis and the best
  checkpoint to the store and artifact folder themselves (curves after every epoch, so a stopped
  trial keeps them). For a multi-node cluster, use a store and an artifact folder every node reaches.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpo.errors import HpoError, UsageError
from hpo.run.objective import DeferredValues, TrialHandle

if TYPE_CHECKING:
    from hpo.run.runner import RunOptions, RunSummary
    from hpo.spec.load import Study

logger = logging.getLogger(__name__)


class RayHandle(TrialHandle):
    """A trial seen from a Ray worker: writes go to the store by trial id.

    The worker writes the trial's intermediate values (single objective) and curves itself, as the
    local backend does. Where a Tune scheduler decides on epochs (ASHA, HyperBand: ``to_tune``), every
    epoch is written at once and reported to Tune, which may stop the trial after any report (a stopped
    trial keeps its curves). Otherwise nothing asks about epochs: they are written in batches, every
    ``flush_seconds`` and at the end, and Tune hears only the trial's end — a report to Tune waits for
    the driver's round trip (~50 ms per epoch on 2 cores).
    """

    flush_seconds = 10.0

    def __init__(self, storage, trial_id: int, number: int, monitor: str, *, intermediate: bool = True,
                 to_tune: bool = True) -> None:
        self.storage, self.trial_id, self.number, self.monitor = storage, trial_id, number, monitor
        self.intermediate, self.to_tune = intermediate, to_tune
        self.curves: dict[str, list] = {}
        self._deferred = DeferredValues(self._write_values, self.flush_seconds)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.set_user_attrs({key: value})

    def set_user_attrs(self, attrs: dict) -> None:
        import optuna

        try:  # the Ray backend runs on an RDB store only (run_ray refuses journal files): ours batches
            self.storage.set_trial_user_attrs(self.trial_id, attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the scheduler stopped the trial and the driver already recorded it

    def report(self, value: float, epoch: int, metrics: dict) -> bool:
        for k, v in metrics.items():
            self.curves.setdefault(k, []).append(v)
        self.curves.setdefault("epoch", []).append(epoch)
        if self.intermediate:
            self._deferred.add(epoch, value)
        if self.to_tune or self._deferred.due:
            self.flush()
            self.set_user_attr("curves", self.curves)  # a trial stopped by Tune keeps its curves
        if self.to_tune:
            from ray import tune

            tune.report({self.monitor: value, "epoch": epoch})
        return False  # pruning is the scheduler's decision

    def flush(self) -> None:
        """Write the intermediate values not yet in the store (the trial body writes the final curves)."""
        self._deferred.flush()

    def _write_values(self, values: dict[int, float]) -> None:
        import optuna

        try:
            self.storage.set_trial_intermediate_values(self.trial_id, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # stopped by the scheduler and recorded by the driver meanwhile

    def upload(self, artifacts: Any, path: str) -> str:
        from hpo.run.objective import upload_whole  # written whole, then recorded: no partial file on failure

        return upload_whole(artifacts, path, self.storage, self.trial_id)


_WORKER_CACHE: dict[str, Any] = {}  # per Ray worker process: the study's objective, built once


def _trainable(config: dict, payload: dict) -> None:
    """The Tune trainable: run one trial's config with the shared trial body."""
    from ray import tune

    key = payload["key"]
    if key not in _WORKER_CACHE:
        from hpo.data.cache import DataCache
        from hpo.run.objective import TrialObjective
        from hpo.spec.load import study_from_dict
        from hpo.store.storage import artifact_store, open_storage

        study = study_from_dict(payload["raw"], base_dir=Path(payload["base_dir"]), file=payload["file"], check_data=False)
        task = study.make_task(DataCache(payload["cache_dir"]))
        store = artifact_store(payload["artifacts"]) if payload["checkpoints"] else None
        objective = TrialObjective(study, task, artifacts=store, device=payload["device"])
        _WORKER_CACHE[key] = (study, objective, open_storage(payload["storage"], heartbeat=False))
    study, objective, storage = _WORKER_CACHE[key]
    meta = config["hpo"]
    handle = RayHandle(storage, meta["trial_id"], meta["number"], study.monitor.metric,
                       intermediate=not study.multi_objective, to_tune=payload["per_epoch"])
    outcome = objective.run_config(handle, meta["config"])
    monitor = study.monitor
    seen = [v for v in handle.curves.get(monitor.metric, []) if v is not None]
    worst = float("inf") if monitor.direction == "minimize" else float("-inf")
    value = outcome.values[0] if outcome.values else (seen[-1] if seen else worst)
    epochs = handle.curves.get("epoch") or [0]
    tune.report({monitor.metric: value, "epoch": epochs[-1], "hpo_final": 1, "hpo_state": outcome.state,
                 "hpo_values": outcome.values or [], "hpo_detail": outcome.detail[:500]})


def _searcher_class():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class HpoOptunaSearch(OptunaSearch):
        """OptunaSearch that records how each trial ended as the local backend does."""

        def __init__(self, *args, on_finished: Callable | None = None, scheduler_name: str = "scheduler", **kwargs):
            super().__init__(*args, **kwargs)
            self._on_finished = on_finished
            self._scheduler_name = scheduler_name

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the study in the store is the state (a study resumes through
            `hpo run`, not through Tune's experiment restore)."""

        def restore(self, checkpoint_path: str) -> None:
            raise UsageError("resume a study with `hpo run` (it continues from the store), not with Tune's restore")

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            """Nothing to record: the worker wrote the epoch to the store before reporting it."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return super().on_trial_complete(trial_id, result, error)
            ot_trial = self._ot_trials[trial_id]
            State = optuna.trial.TrialState
            try:
                if result and result.get("hpo_final"):
                    state = result["hpo_state"]
                    if state == "COMPLETE":
                        values = result["hpo_values"]
                        self._ot_study.tell(ot_trial, values[0] if len(values) == 1 else values)
                    else:
                        self._ot_study.tell(ot_trial, state=State.PRUNED if state == "PRUNED" else State.FAIL)
                elif error:
                    if "stop_reason" not in ot_trial.user_attrs:
                        ot_trial.set_user_attr("stop_reason", "failed")
                        ot_trial.set_user_attr("stop_detail", "the Ray worker raised (see the Tune logs)")
                    self._ot_study.tell(ot_trial, state=State.FAIL)
                else:
                    epoch = (result or {}).get("epoch")
                    value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
                    if epoch is not None and value is not None and epoch not in ot_trial.storage.get_trial(ot_trial._trial_id).intermediate_values:
                        ot_trial.report(value, epoch)  # the result that made the scheduler stop it
                    ot_trial.set_user_attr("stop_reason", "pruned")
                    ot_trial.set_user_attr("stop_detail", f"stopped by Tune's {self._scheduler_name} at epoch {epoch}")
                    self._ot_study.tell(ot_trial, state=State.PRUNED)
            except Exception as e:  # e.g. the trial was already finished: keep Tune going, say so
                logger.warning("could not record Ray trial %s: %s", trial_id, e)
            self._completed_trials.add(trial_id)
            if self._on_finished is not None:
                self._on_finished(ot_trial.number)

    return HpoOptunaSearch


def run_ray(
    study: "Study",
    opts: "RunOptions",
    *,
    address: str | None = None,
    raw: dict | None = None,
    on_trial: Callable | None = None,
    on_start: Callable[[dict], None] | None = None,
) -> "RunSummary":
    import optuna
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    from hpo.run.objective import TrialObjective
    from hpo.run.budget import budget_of
    from hpo.run.runner import Placement, RunSummary, best_trials, create_or_load, prepare
    from hpo.search import build_sampler
    from hpo.store.storage import open_storage
    from hpo.spec.urls import redact

    raw = raw or study.raw
    if not raw:
        raise UsageError("the Ray backend needs the study as a YAML mapping (build it with load_study or study_from_dict)")
    rs = study.spec.ray
    storage_url = study.storage_url(opts.storage)
    if storage_url.startswith("journal://"):
        raise UsageError("the Ray backend needs an RDB store (sqlite:// or postgresql://), not a journal file")
    study_name = opts.study_name or study.name
    n_trials = opts.n_trials if opts.n_trials is not None else study.spec.budget.n_trials
    timeout = opts.timeout if opts.timeout is not None else study.spec.budget.timeout
    if n_trials is None and timeout is None:
        raise UsageError(f"{study.file}: no budget: set budget.n_trials or budget.timeout, or pass --trials / --timeout")

    t0 = time.monotonic()
    from hpo.data.validate import check_study_data

    check_study_data(study, opts.cache_dir)  # bad data is refused before the study is created
    ostudy = create_or_load(study, storage_url, study_name, heartbeat=False, resume_changed=opts.resume_changed)
    info = prepare(study, ostudy)
    budget = budget_of(ostudy.get_trials(deepcopy=False))
    remaining = max(0, n_trials - budget.used) if n_trials is not None else 10**6
    cpus = os.cpu_count() or 1
    concurrent = rs.max_concurrent or max(1, int(cpus // rs.cpus_per_trial))
    info.update(study_name=study_name, storage=redact(storage_url), n_trials=n_trials, timeout=timeout, budget=budget,
                placements=[Placement(i, None, int(rs.cpus_per_trial)) for i in range(concurrent)],
                artifacts=study.artifacts_dir(opts.artifacts))
    if on_start is not None:
        on_start(info)

    address = address or rs.address
    started_here = False
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(num_cpus=cpus, num_gpus=len(opts.gpus) if opts.gpus else None, include_dashboard=False,
                     log_to_driver=False, configure_logging=False, runtime_env=_local_runtime_env())
        else:
            ray.init(address=address, log_to_driver=False)
        started_here = True
    try:
        if remaining > 0:
            objective = TrialObjective(study, study.make_task(None))

            def space(trial):
                return {"hpo": {"config": objective.sample(trial), "trial_id": trial._trial_id, "number": trial.number}}

            driver_storage = open_storage(storage_url, heartbeat=False)  # the searcher's, and read after each trial
            seen_store = optuna.load_study(study_name=study_name, storage=driver_storage)

            def finished(number: int) -> None:
                if on_trial is not None:
                    on_trial(seen_store, seen_store.trials[number])

            monitor = study.monitor
            mode = "min" if monitor.direction == "minimize" else "max"
            # one past the epoch cap: a trial that trains to the end finishes itself and reports its best epoch
            max_t = 1 + (study.spec.budget.max_epochs or int(study.space.defaults.get("epochs") or study.space.fixed.get("epochs") or 100))
            if study.multi_objective or rs.scheduler == "none":
                scheduler, sched_name = FIFOScheduler(), "FIFO"
            elif rs.scheduler == "hyperband":
                scheduler, sched_name = HyperBandScheduler(time_attr="epoch", max_t=max_t, reduction_factor=rs.reduction_factor), "HyperBand"
            else:
                scheduler, sched_name = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=rs.grace_period,
                                                      reduction_factor=rs.reduction_factor), "ASHA"
            metric = [o.metric for o in study.objectives] if study.multi_objective else monitor.metric
            modes = ["min" if o.direction == "minimize" else "max" for o in study.objectives] if study.multi_objective else mode
            searcher = _searcher_class()(
                space=space, metric=metric, mode=modes, sampler=build_sampler(study),
                storage=driver_storage, study_name=study_name,
                on_finished=finished, scheduler_name=sched_name,
            )
            payload = {
                "key": f"{storage_url}#{study_name}#{id(raw)}", "raw": raw,
                "base_dir": str(study.file.parent if study.file else Path.cwd()),
                "file": str(study.file) if study.file else None, "storage": storage_url,
                "artifacts": str(Path(study.artifacts_dir(opts.artifacts)).resolve()),
                "cache_dir": str(Path(opts.cache_dir).resolve()), "checkpoints": opts.checkpoints, "device": opts.device,
                "per_epoch": not isinstance(scheduler, FIFOScheduler),  # a scheduler that decides on epochs hears them
            }
            trainable = tune.with_resources(tune.with_parameters(_trainable, payload=payload),
                                            {"cpu": rs.cpus_per_trial, "gpu": rs.gpus_per_trial})
            # The store is the record of every trial; of Tune's default loggers (CSV, JSON, TensorBoard) keep
            # the JSON one its results read: the TensorBoard logger alone costs seconds of imports at the start
            os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                    max_concurrent_trials=concurrent, time_budget_s=timeout, reuse_actors=True,
                    **({} if study.multi_objective else {"metric": monitor.metric, "mode": mode}),
                ),
                run_config=tune.RunConfig(name=f"hpo-{study_name}", storage_path=str(Path("runs/ray").resolve()), verbose=0,
                                          callbacks=[JsonLoggerCallback()]),  # what Tune's results need; no TensorBoard
            )
            results = tuner.fit()
            errors = list(results.errors)
            if errors and len(errors) == len(results):
                raise HpoError(f"every Ray trial failed ({len(errors)}); the first: {str(errors[0]).strip().splitlines()[-1]}"
                               " (with a cluster of your own, its workers need fusion-hpo installed, or the project on PYTHONPATH)")
    finally:
        if started_here:
            ray.shutdown()
    trials = ostudy.get_trials(deepcopy=False)
    summary = RunSummary(study_name, redact(storage_url), budget_of(trials), time.monotonic() - t0,
                         "budget" if n_trials is not None else "timeout")
    for t in best_trials(ostudy):
        summary.best.append({"number": t.number, "values": t.values, "baseline": t.user_attrs.get("baseline")})
    return summary


def _local_runtime_env() -> dict:
    """Workers of a cluster started here import ``hpo`` and ``models`` from where this process does,
    installed or not (e.g. run from a checkout)."""
    import hpo
    import models

    roots = [str(Path(m.__file__).resolve().parents[1]) for m in (hpo, models)]
    path = os.pathsep.join(dict.fromkeys([*roots, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    return {"env_vars": {"PYTHONPATH": path}}
