"""The Ray backend's worker side: one Tune trial runs the shared trial body on a :class:`RayHandle`.

The trial lives in the driver (Ray's ``OptunaSearch`` asks and tells it, :mod:`hpo.run.backends.ray`); the
worker writes what the trial produced (intermediate values, curves, metrics, diagnosis, checkpoint) to the
store by trial id itself, and reports to Tune what its scheduler needs.

Gates apply as locally (the shared trial body asks them). A protected trial (a baseline of a study with
``protect_baselines``, read from the stored trial) does not report its epochs to Tune, so no scheduler can
stop it. A multi-objective study runs under FIFO (Tune's schedulers rank one metric); with a pruner it is
pruned here, in the worker, on the primary objective by the same :class:`~hpo.search.prune_oracle.PruneOracle`
as locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo.run.handles import DeferredValues, TrialHandle
from hpo.search.prune_oracle import PruneOracle
from hpo.store import record as R


class RayHandle(TrialHandle):
    """A trial seen from a Ray worker: writes go to the store by trial id.

    The worker writes the trial's intermediate values (the primary objective's) and curves itself, as the
    local backend does. Where a Tune scheduler decides on epochs (ASHA, HyperBand: ``to_tune``), every
    epoch is written at once and reported to Tune, which may stop the trial after any report (a stopped
    trial keeps its curves). Otherwise nothing asks about epochs: they are written in batches, every
    ``flush_seconds`` and at the end, and Tune hears only the trial's end — a report to Tune waits for
    the driver's round trip (~50 ms per epoch on 2 cores). ``oracle`` (a multi-objective study's pruner,
    see the module docstring) answers :meth:`report` where no scheduler does.
    """

    flush_seconds = 10.0

    def __init__(self, storage, trial_id: int, number: int, monitor: str, *, intermediate: bool = True,
                 to_tune: bool = True, oracle: PruneOracle | None = None) -> None:
        self.storage, self.trial_id, self.number, self.monitor = storage, trial_id, number, monitor
        self.intermediate, self.to_tune, self.oracle = intermediate, to_tune, oracle
        self.curves: dict[str, list] = {}
        self._values: dict[int, float] = {}
        self._deferred = DeferredValues(self._write_values, self.flush_seconds)
        self._final: dict = {}

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
            self._deferred.flush({R.CURVES: self.curves})  # one write; a trial stopped by Tune keeps its curves
        if self.to_tune:
            from ray import tune

            tune.report({self.monitor: value, "epoch": epoch})
        if self.oracle is None:
            return False  # pruning is the scheduler's decision
        self._values[epoch] = value
        return self.oracle.should_prune(self, self._values, self.trial_id)

    def set_final_user_attrs(self, attrs: dict) -> None:
        self._final.update(attrs)

    def flush(self) -> None:
        """Write the intermediate values not yet in the store and the final user attrs (the trial body's: its
        final curves among them), in one transaction."""
        final, self._final = self._final, {}
        self._deferred.flush(final)

    def _write_values(self, values: dict[int, float], user_attrs: dict | None = None) -> None:
        import optuna

        try:
            self.storage.set_trial_intermediate_values(self.trial_id, values, user_attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # stopped by the scheduler and recorded by the driver meanwhile

    def upload(self, artifacts: Any, path: str) -> str:
        from hpo.store.checkpoint import upload_whole  # written whole, then recorded: no partial file on failure

        return upload_whole(artifacts, path, self.storage, self.trial_id)


_WORKER_CACHE: dict[str, Any] = {}  # per Ray worker process: the study's objective, built once


def trainable(config: dict, payload: dict) -> None:
    """The Tune trainable: run one trial's config with the shared trial body."""
    from ray import tune

    key = payload["key"]
    if key not in _WORKER_CACHE:
        from hpo.data.cache import DataCache
        from hpo.run.trial import TrialObjective
        from hpo.spec import study_from_dict
        from hpo.store.storage import artifact_store, open_storage

        study = study_from_dict(payload["raw"], base_dir=Path(payload["base_dir"]), file=payload["file"], check_data=False)
        task = study.make_task(DataCache(payload["cache_dir"]))
        store = artifact_store(payload["artifacts"]) if payload["checkpoints"] else None
        objective = TrialObjective(study, task, artifacts=store, device=payload["device"])
        import ray

        # with the trial's other worker attrs (worker = host:pid): the Ray node it ran on, which tells the
        # nodes of a cluster apart where host:pid cannot (several nodes on one host, pids reused across hosts)
        objective.worker_attrs = {**payload["worker_attrs"], R.RAY_NODE: ray.get_runtime_context().get_node_id()}
        _WORKER_CACHE[key] = (study, objective, open_storage(payload["storage"], heartbeat=False))
    study, objective, storage = _WORKER_CACHE[key]
    meta = config["hpo"]
    protected = objective.protected(storage.get_trial_user_attrs(meta["trial_id"]))
    handle = RayHandle(storage, meta["trial_id"], meta["number"], study.primary.metric,
                       to_tune=payload["per_epoch"] and not protected,  # no scheduler stops a protected trial
                       oracle=_multi_objective_oracle(study, storage, payload["study_name"], key))
    outcome = objective.run_config(handle, meta["config"], protected=protected)
    epochs = handle.curves.get("epoch") or [0]
    tune.report({**_final_values(study, outcome, handle.curves), "epoch": epochs[-1], "hpo_final": 1,
                 "hpo_state": outcome.state, "hpo_values": outcome.values or [], "hpo_detail": outcome.detail[:500]})


def _final_values(study, outcome, curves: dict) -> dict[str, float]:
    """Every objective's value for Tune's last report of a trial (the searcher of a multi-objective study
    expects them all): the trial's values, or, for a trial without, each metric's last epoch (else the worst)."""
    if outcome.values:
        return {o.metric: v for o, v in zip(study.objectives, outcome.values)}
    out = {}
    for o in study.objectives:
        seen = [v for v in curves.get(o.metric, []) if v is not None]
        out[o.metric] = seen[-1] if seen else float("inf") if o.direction == "minimize" else float("-inf")
    return out


def _multi_objective_oracle(study, storage, study_name: str, key: str) -> PruneOracle | None:
    """The pruning oracle of a multi-objective study with a pruner, on its primary objective (the study in
    the store loaded once per worker with the study's pruner); None otherwise: a single-objective study is
    pruned by Tune's scheduler."""
    if not study.multi_objective or study.spec.pruner.type == "none":
        return None
    cache_key = key + "#pruning"
    if cache_key not in _WORKER_CACHE:
        import optuna

        from hpo.search import build_pruner

        _WORKER_CACHE[cache_key] = optuna.load_study(study_name=study_name, storage=storage, pruner=build_pruner(study))
    return PruneOracle.for_pruner(_WORKER_CACHE[cache_key], direction=study.primary.direction)
