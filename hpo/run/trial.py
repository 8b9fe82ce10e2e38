"""The trial body, shared by every backend: sample a config, check it, train it, store what it did.

What a trial stores (all in the study store, so report, export and dashboard need no side files; the keys
are :mod:`hpo.store.record`'s):

- params (Optuna) for the active parameters only; ``config`` (user attr): the complete explicit
  config (training defaults + fixed + overrides + sampled + derived + seed), i.e. what export writes;
- the objective value(s) at the best epoch; intermediate values: the monitored val metric per epoch;
- ``curves``: every train/val metric, lr and epoch time per epoch; ``metrics``: all at the best epoch;
- ``diagnosis``: what :mod:`hpo.train.diagnose` reads in the curves (overfitting, plateau, wasted epochs, ...);
- ``stop_reason`` (a :class:`~hpo.store.record.StopReason`) and ``stop_detail`` (a sentence), ``best_epoch``,
  ``epochs_run``, ``seconds``, ``n_params``, ``device``, ``threads``, ``worker`` (host:pid);
- ``checkpoint``: the artifact id of the best epoch's weights + config (:mod:`hpo.store.checkpoint`).

Constraint violations and configs the model rejects are PRUNED before any training (samplers then
treat them as bad). A diverging run (non-finite loss) is PRUNED with its last finite values. A crash
is FAIL with its reason; the study goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.errors import Pruned, StoreError, TrialFailed
from hpo.run.handles import OptunaHandle, TrialHandle
from hpo.run.options import cap_epochs, max_epochs as study_max_epochs
from hpo.store import record as R
from hpo.store.record import StopReason
from hpo.train.setup import worker_id

if TYPE_CHECKING:
    import optuna

    from hpo.spec import Study
    from hpo.tasks.base import Task

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a trial ended: COMPLETE with its values, PRUNED or FAIL with the reason."""

    state: str  # COMPLETE | PRUNED | FAIL
    values: list[float] | None = None
    detail: str = ""


class TrialObjective:
    """The trial body of one worker process: :meth:`sample` a config on a live trial, :meth:`run_config`
    it on any :class:`~hpo.run.handles.TrialHandle`; calling it runs both on an ``optuna.Trial``."""

    def __init__(self, study: "Study", task: "Task", *, artifacts: Any = None, device: str | None = None,
                 max_epochs: int | None = None, keep_checkpoints: bool = True, n_trials: int | None = None) -> None:
        self.study = study
        self.task = task
        self.artifacts = artifacts
        self.device = device
        self.max_epochs = max_epochs or study_max_epochs(study)
        self.keep_checkpoints = keep_checkpoints and artifacts is not None
        self.n_trials = n_trials  # the study's budget: a trial started past it (a race between workers) does not train
        self.check_surplus = True  # the worker loop turns it off when the budget has ample room
        self.worker_attrs: dict = {}  # recorded with each trial (the worker loop: sampler_seed, worker_index)

    def __call__(self, trial: "optuna.Trial") -> float | list[float]:
        import optuna

        if self.n_trials is not None and self.check_surplus:
            from hpo.run.budget import budget_of

            ahead = budget_of(trial.study.get_trials(deepcopy=False), before=trial.number)
            if ahead.used + ahead.running >= self.n_trials:
                detail = (f"surplus: the budget of {self.n_trials} trials was already taken by other workers when this "
                          "trial started; it did not train and does not count")
                trial.set_user_attr(R.WORKER, worker_id())
                _stop(trial, StopReason.SURPLUS, detail)
                raise TrialFailed(detail)
        config = self.sample(trial)
        report = not self.study.multi_objective
        handle = OptunaHandle(trial, report=report, prune=report and self.study.spec.pruner.type != "none")
        outcome = self.run_config(handle, config)
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.detail)
        if outcome.state == "FAIL":
            raise TrialFailed(outcome.detail)
        return outcome.values[0] if len(outcome.values) == 1 else outcome.values

    def sample(self, trial: "optuna.Trial") -> dict:
        """The trial's full config: sampled (define-by-run) on the trial, with the epoch cap applied."""
        from hpo.store.rdb import batched_params

        with batched_params(trial):  # the parameters reach the store in one transaction, before training
            config = self.study.space.sample(trial, trial.user_attrs.get(R.OVERRIDES) or {})
        config.setdefault("seed", self.study.spec.seed)
        return cap_epochs(config, self.max_epochs, self.task)

    def run_config(self, handle: TrialHandle, config: dict) -> Outcome:
        """Check, train and record one config on ``handle``; the body shared by every backend."""
        try:
            return self._run_config(handle, config)
        finally:
            handle.flush()

    def _run_config(self, handle: TrialHandle, config: dict) -> Outcome:
        study = self.study
        handle.set_user_attrs({R.WORKER: worker_id(), **self.worker_attrs, R.CONFIG: config})
        violated = study.space.violated(config)
        if violated:
            return _stop(handle, StopReason.CONSTRAINT, "constraint violated: " + "; ".join(violated), "PRUNED")
        try:
            train_cfg, model_cfg, data_cfg = self.task.split_config(config)
        except (ValueError, TypeError, KeyError) as e:
            return _stop(handle, StopReason.INVALID_CONFIG, f"invalid config: {e}", "PRUNED")
        try:
            splits = self.task.load(data_cfg)
            with splits.locked_test():
                result = self._fit(handle, splits, train_cfg, model_cfg)
        except KeyboardInterrupt:
            _stop(handle, StopReason.INTERRUPTED, "interrupted (Ctrl-C); it is run again when the study resumes")
            raise
        except StoreError:  # the store itself refuses (full, read-only, gone for good): nothing to record it in
            raise
        except Exception as e:
            reason, detail = _failure(e)
            return _stop(handle, reason, detail, "FAIL")

        import torch

        attrs = {
            R.CURVES: result.curves, R.METRICS: result.best, R.BEST_EPOCH: result.best_epoch,
            R.EPOCHS_RUN: result.epochs_run, R.SECONDS: round(result.seconds, 3), R.N_PARAMS: result.n_params,
            R.DEVICE: result.device, R.THREADS: torch.get_num_threads(), R.DIAGNOSIS: self._diagnose(result, config),
            R.STOP_REASON: result.stop_reason, R.STOP_DETAIL: result.stop_detail,
        }
        missing = [o.metric for o in study.objectives if o.metric not in result.best]
        if result.stop_reason in (StopReason.PRUNED, StopReason.DIVERGED):
            outcome = Outcome("PRUNED", detail=result.stop_detail)
        elif not result.best or missing:
            outcome = Outcome("FAIL", detail=f"no value for objective(s) {', '.join(missing) or 'all'}: no epoch was evaluated")
        else:
            if self.keep_checkpoints and result.best_state is not None:
                try:
                    attrs[R.CHECKPOINT], attrs[R.CHECKPOINT_SHA256] = self._save_checkpoint(handle, result, config, splits)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # a full disk or a lost share must not cost the trial its result
                    attrs[R.CHECKPOINT_ERROR] = _failure(e)[1]
                    logger.warning("trial #%d: its checkpoint could not be written (%s); the trial keeps its values "
                                   "and metrics, without a checkpoint", handle.number, attrs[R.CHECKPOINT_ERROR][:300])
            outcome = Outcome("COMPLETE", values=[float(result.best[o.metric]) for o in study.objectives])
        handle.set_user_attrs(attrs)  # one write with everything the trial produced
        return outcome

    def _fit(self, handle: TrialHandle, splits, train_cfg, model_cfg):
        from hpo.train import fit

        monitor = self.study.monitor

        def on_epoch(epoch: int, metrics: dict) -> None:
            value = metrics[monitor.metric]
            if handle.report(value, epoch, metrics):
                raise Pruned(epoch, f"pruned at epoch {epoch}: {monitor.metric}={value:.5g} is worse than the pruner allows")

        return fit(self.task, splits, train_cfg, model_cfg, monitor=monitor.metric, direction=monitor.direction,
                   on_epoch=on_epoch, device=self.device, keep_best_state=self.keep_checkpoints)

    def _diagnose(self, result, config: dict) -> list[dict]:
        from hpo.train.diagnose import diagnose_curves

        monitor = self.study.monitor
        return diagnose_curves(result.curves, metric=monitor.metric.split("_", 1)[1], direction=monitor.direction,
                               config=config, stop_reason=result.stop_reason)

    def _save_checkpoint(self, handle: TrialHandle, result, config: dict, splits) -> tuple[str, str]:
        """Upload the best epoch's model with what it takes to use it; return the artifact id and the
        file's sha256."""
        from hpo.store.checkpoint import checkpoint_payload, upload_checkpoint

        payload = checkpoint_payload(
            task=self.task.name, study=self.study.name, trial=handle.number, dataset=self.study.record.get(R.DATASET),
            target=self.study.spec.task.target, config=config, best_epoch=result.best_epoch, metrics=result.best,
            model_state=result.best_state, extras=self.task.checkpoint_extras(splits),
        )
        return upload_checkpoint(payload, lambda path: handle.upload(self.artifacts, path), prefix=f"trial{handle.number}-")


def _stop(handle: Any, reason: str, detail: str, state: str | None = None) -> Outcome:
    attrs = {R.STOP_REASON: str(reason), R.STOP_DETAIL: detail}  # stored as the plain string
    if isinstance(handle, TrialHandle):
        handle.set_user_attrs(attrs)
    else:
        for key, value in attrs.items():
            handle.set_user_attr(key, value)
    return Outcome(state or "", detail=detail)


def _failure(e: BaseException) -> tuple[str, str]:
    text = f"{type(e).__name__}: {e}".strip()
    if len(text) > 2000:
        text = text[:2000] + "..."
    oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
    if oom:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass
        return StopReason.OUT_OF_MEMORY.value, f"out of memory: {text}"
    return StopReason.FAILED.value, text
