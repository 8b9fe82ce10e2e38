"""The trial body, shared by every backend: sample a config, check it, train it, store what it did.

What a trial stores (all in the study store, so report, export and dashboard need no side files; the keys
are :mod:`hpo.store.record`'s):

- params (Optuna) for the active parameters only; ``config`` (user attr): the complete explicit
  config (training defaults + fixed + overrides + sampled + derived + seed), i.e. what export writes;
- the objective value(s) at the best epoch; intermediate values: the primary objective's val metric per
  epoch (multi-objective studies too: their pruner and gates read the primary);
- ``curves``: every train/val metric, lr and epoch time per epoch; ``metrics``: all at the best epoch;
- with ``training.val_subset`` (:mod:`hpo.train.loop`): the intermediate values, the curves' ``val_*`` and a
  pruned trial's metrics and last value are on the fixed val subset (``val_samples`` its size); a completed
  trial's objective values and ``metrics`` ``val_*`` are on the whole val split at the best epoch (the
  subset's kept as ``val_subset_*``);
- ``diagnosis``: what :mod:`hpo.train.diagnose` reads in the curves (overfitting, plateau, wasted epochs, ...);
- ``stop_reason`` (a :class:`~hpo.store.record.StopReason`) and ``stop_detail`` (a sentence), ``best_epoch``,
  ``epochs_run``, ``seconds``, ``n_params``, ``device``, ``threads``, ``worker`` (host:pid);
- ``checkpoint``: the artifact id of the best epoch's weights + config (:mod:`hpo.store.checkpoint`).

Constraint violations and configs the model rejects are PRUNED before any training (samplers then
treat them as bad). A diverging run (non-finite loss) is PRUNED with its last finite values. A crash
is FAIL with its reason; the study goes on.

After each evaluated epoch (:class:`EpochWatch`) the study's gates due at it are asked first, then the
pruner; a gate that stops the trial makes it PRUNED with stop reason ``gate`` and the rule in
``stop_detail``. A protected trial (a baseline or ablation run of a study with ``protect_baselines``) is
stopped by neither: it trains to its own epochs, still reports its intermediate values, and records in
``gate_waived`` what would have stopped it (each gate's sentence, and the pruner's first).
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
        user_attrs = trial.user_attrs  # read from the store once (each read of a live trial's attrs is a query)
        config = self.sample(trial, user_attrs, record_start=True)
        study = self.study
        handle = OptunaHandle(trial, prune=study.spec.pruner.type != "none",
                              primary=study.primary.direction if study.multi_objective else None)
        outcome = self.run_config(handle, config, protected=self.protected(user_attrs), start_recorded=True)
        if outcome.state == "PRUNED":
            raise optuna.TrialPruned(outcome.detail)
        if outcome.state == "FAIL":
            raise TrialFailed(outcome.detail)
        return outcome.values[0] if len(outcome.values) == 1 else outcome.values

    def sample(self, trial: "optuna.Trial", user_attrs: dict | None = None, record_start: bool = False) -> dict:
        """The trial's full config: sampled (define-by-run) on the trial, with the epoch cap applied.
        ``user_attrs``: the trial's, where the caller has read them (default: read here). ``record_start``:
        write the :meth:`start_attrs` too (the worker runs the trial itself), in the parameters' transaction."""
        from hpo.store.rdb import batched_params

        attrs = trial.user_attrs if user_attrs is None else user_attrs
        with batched_params(trial) as along:  # the parameters reach the store in one transaction, before training
            config = self.study.space.sample(trial, attrs.get(R.OVERRIDES) or {})
            config.setdefault("seed", self.study.spec.seed)
            config = cap_epochs(config, self.max_epochs, self.task)
            if record_start:
                along.update(self.start_attrs(config))
        return config

    def start_attrs(self, config: dict) -> dict:
        """What a trial records before it trains: the worker running it and its full config."""
        return {R.WORKER: worker_id(), **self.worker_attrs, R.CONFIG: config}

    def protected(self, user_attrs: dict) -> bool:
        """Whether a trial with these user attrs is protected: a baseline (or ablation run, a baseline too)
        of a study with ``protect_baselines``; no gate or pruner stops it."""
        return bool(self.study.protect_baselines and user_attrs.get(R.BASELINE))

    def run_config(self, handle: TrialHandle, config: dict, protected: bool = False,
                   start_recorded: bool = False) -> Outcome:
        """Check, train and record one config on ``handle``; the body shared by every backend.
        ``protected`` (see :meth:`protected`): neither gates nor the pruner stop it. ``start_recorded``: the
        :meth:`start_attrs` are in the store already (:meth:`sample` wrote them with the parameters)."""
        try:
            return self._run_config(handle, config, protected, start_recorded)
        finally:
            handle.flush()

    def _run_config(self, handle: TrialHandle, config: dict, protected: bool, start_recorded: bool) -> Outcome:
        study = self.study
        if not start_recorded:
            handle.set_user_attrs(self.start_attrs(config))
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
                result = self._fit(handle, splits, train_cfg, model_cfg, protected)
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
        if result.stop_reason in (StopReason.PRUNED, StopReason.GATE, StopReason.DIVERGED):
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
        handle.set_final_user_attrs(attrs)  # everything the trial produced, with its last intermediate values
        return outcome

    def _fit(self, handle: TrialHandle, splits, train_cfg, model_cfg, protected: bool = False):
        """Train with the study's gates and pruner watching every evaluated epoch; a run a gate stopped
        comes back with stop reason ``gate``."""
        from hpo.train import fit

        primary = self.study.primary
        watch = EpochWatch(handle, primary.metric, self.study.gates, protected)
        result = fit(self.task, splits, train_cfg, model_cfg, monitor=primary.metric, direction=primary.direction,
                     on_epoch=watch, device=self.device, keep_best_state=self.keep_checkpoints)
        if watch.gate_stopped and result.stop_reason == StopReason.PRUNED:
            result.stop_reason = StopReason.GATE.value
        return result

    def _diagnose(self, result, config: dict) -> list[dict]:
        from hpo.train.diagnose import diagnose_curves

        monitor = self.study.primary
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


class EpochWatch:
    """The ``on_epoch`` callback of one trial: after each evaluated epoch (fit numbers them from 1) it asks
    the gates due then, reports the primary ``metric`` to ``handle`` (which answers for the pruner), and stops
    the trial (:class:`~hpo.errors.Pruned`) on the first gate that says so, else on the pruner's word.

    A gate is due once, at the first evaluated epoch at or after its ``epoch`` (its epoch itself when every
    epoch is evaluated). A ``protected`` trial is never stopped: each gate's sentence and the pruner's first
    are kept in :attr:`waived` and written to the trial as ``gate_waived`` when they arise."""

    def __init__(self, handle: TrialHandle, metric: str, gates: list, protected: bool = False) -> None:
        self.handle, self.metric, self.protected = handle, metric, protected
        self.pending = sorted(gates, key=lambda g: g.epoch)
        self.waived: list[str] = []
        self.gate_stopped = False
        self._pruner_waived = False

    def __call__(self, epoch: int, metrics: dict) -> None:
        verdicts = [v for v in (gate.verdict(metrics) for gate in self._due(epoch)) if v is not None]
        value = metrics[self.metric]
        prune = self.handle.report(value, epoch, metrics)  # the epoch's value is stored whatever stops the trial
        if verdicts and not self.protected:
            self.gate_stopped = True
            raise Pruned(epoch, verdicts[0])
        pruned = f"pruned at epoch {epoch}: {self.metric}={value:.5g} is worse than the pruner allows" if prune else None
        if pruned and not self.protected:
            raise Pruned(epoch, pruned)
        if pruned and not self._pruner_waived:
            self._pruner_waived = True
            verdicts.append(pruned)
        if verdicts:
            self._waive(verdicts)

    def _due(self, epoch: int) -> list:
        """The gates due at ``epoch``, removed from those pending."""
        due = [g for g in self.pending if g.epoch <= epoch]
        self.pending = self.pending[len(due):]
        return due

    def _waive(self, sentences: list[str]) -> None:
        self.waived += sentences
        logger.info("trial #%d is protected (a baseline); not stopped: %s", self.handle.number, "; ".join(sentences))
        self.handle.set_user_attrs({R.GATE_WAIVED: list(self.waived)})


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
