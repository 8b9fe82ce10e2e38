"""The Optuna objective: one trial = sample a config, check it, train it, store what it did.

What a trial stores (all in the study store, so report, export and dashboard need no side files):

- params (Optuna) for the active parameters only; ``config`` (user attr): the complete explicit
  config (training defaults + fixed + overrides + sampled + derived + seed), i.e. what export writes;
- the objective value(s) at the best epoch; intermediate values: the monitored val metric per epoch;
- ``curves``: every train/val metric, lr and epoch time per epoch; ``metrics``: all at the best epoch;
- ``diagnosis``: what :mod:`hpo.train.diagnose` reads in the curves (overfitting, plateau, wasted epochs, ...);
- ``stop_reason`` (completed | early_stopped | pruned | diverged | constraint | invalid_config |
  failed | out_of_memory | interrupted) and ``stop_detail`` (a sentence), ``best_epoch``, ``epochs_run``,
  ``seconds``, ``n_params``, ``device``, ``threads``, ``worker`` (host:pid);
- ``checkpoint``: the artifact id of the best epoch's weights + config (Optuna artifact store).

Constraint violations and configs the model rejects are PRUNED before any training (samplers then
treat them as bad). A diverging run (non-finite loss) is PRUNED with its last finite values. A crash
is FAIL with its reason; the study goes on.
"""

from __future__ import annotations

import contextlib

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.errors import Pruned, StoreError, TrialFailed
from hpo.train.setup import worker_id

if TYPE_CHECKING:
    import optuna

    from hpo.spec.load import Study
    from hpo.tasks.base import Task

logger = logging.getLogger(__name__)


class TrialHandle:
    """What a trial body needs from "its trial", whichever backend runs it.

    Locally it is the live ``optuna.Trial`` (:class:`OptunaHandle`); under Ray Tune the trial lives in
    the driver, and the worker writes to the store by trial id and reports to Tune
    (``hpo.run.backends.ray.RayHandle``).
    """

    number: int

    def set_user_attr(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def set_user_attrs(self, attrs: dict) -> None:
        """Several at once (one transaction where the storage allows)."""
        for k, v in attrs.items():
            self.set_user_attr(k, v)

    def report(self, value: float, epoch: int, metrics: dict) -> bool:
        """Report the monitored value of an epoch; return True if the trial should be pruned."""
        raise NotImplementedError

    def upload(self, artifacts: Any, path: str) -> str:
        """Store a file as an artifact of this trial; return its id."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write anything the handle deferred (called when the trial body ends)."""


class DeferredValues:
    """A trial's intermediate values kept in memory and written in one call (``write``) when asked to
    :meth:`flush` — the handles flush when :attr:`due` (every ``every`` seconds) and when the trial ends."""

    def __init__(self, write: Callable[[dict[int, float]], None], every: float) -> None:
        import time

        self._write, self.every = write, every
        self._pending: dict[int, float] = {}
        self._flushed_at = time.monotonic()

    def add(self, epoch: int, value: float) -> None:
        self._pending[epoch] = value

    @property
    def due(self) -> bool:
        import time

        return time.monotonic() - self._flushed_at >= self.every

    def flush(self) -> None:
        import time

        self._flushed_at = time.monotonic()
        if self._pending:
            pending, self._pending = self._pending, {}
            self._write(pending)


class OptunaHandle(TrialHandle):
    """The live Optuna trial. Where pruning decisions come from memory (:class:`PruneOracle`, or no
    pruner), intermediate values are written in batches every ``flush_seconds`` and at the end of
    the trial (:meth:`flush`) instead of one transaction per epoch."""

    flush_seconds = 10.0

    def __init__(self, trial: "optuna.Trial", report: bool, prune: bool) -> None:
        self.trial, self.number = trial, trial.number
        self._report, self._prune = report, prune
        self._values: dict[int, float] = {}
        self._oracle = PruneOracle.for_pruner(trial.study) if prune else None
        backend = getattr(trial.storage, "_backend", trial.storage)  # behind Optuna's cache
        batch = backend if hasattr(backend, "set_trial_intermediate_values") else None
        self._deferred = (DeferredValues(lambda values: batch.set_trial_intermediate_values(trial._trial_id, values),
                                         self.flush_seconds)
                          if batch is not None and (self._oracle is not None or not prune) else None)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)

    def set_user_attrs(self, attrs: dict) -> None:
        backend = getattr(self.trial.storage, "_backend", self.trial.storage)  # behind Optuna's cache
        if hasattr(backend, "set_trial_user_attrs"):
            backend.set_trial_user_attrs(self.trial._trial_id, attrs)
        else:
            super().set_user_attrs(attrs)

    def report(self, value: float, epoch: int, metrics: dict) -> bool:
        if not self._report:  # Optuna cannot report multi-objective values
            return False
        self._values[epoch] = value
        if self._deferred is not None:
            self._deferred.add(epoch, value)
            if self._deferred.due:
                self._deferred.flush()
        else:
            self.trial.report(value, epoch)
        if not self._prune:
            return False
        if self._oracle is not None:
            return self._oracle.should_prune(self.trial, self._values)
        return self.trial.should_prune()

    def flush(self) -> None:
        """Write the deferred intermediate values (before the trial is told its state)."""
        if self._deferred is not None:
            self._deferred.flush()

    def upload(self, artifacts: Any, path: str) -> str:
        """Like ``optuna.artifacts.upload_artifact``, but the file is written first and recorded with the
        trial only when whole: a failed write leaves neither a partial file nor a dangling record."""
        return upload_whole(artifacts, path, self.trial.storage, self.trial._trial_id)


def upload_whole(artifacts: Any, path: str, storage: Any, trial_id: int) -> str:
    """Write ``path`` into the artifact store, then record it as an artifact of the trial; return its id.

    Optuna's own upload records the artifact before writing it, so a failed write (disk full, a lost
    share) leaves a record pointing at a partial file. Here a failed write removes what it wrote and
    records nothing."""
    import json
    import os.path
    import uuid

    try:
        from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta
    except ImportError:  # pragma: no cover - a future Optuna: its own upload
        import optuna

        return optuna.artifacts.upload_artifact(artifact_store=artifacts, file_path=path, study_or_trial=storage.get_trial(trial_id),
                                                storage=storage, mimetype="application/octet-stream")
    from dataclasses import asdict

    artifact_id = str(uuid.uuid4())
    try:
        with open(path, "rb") as f:
            artifacts.write(artifact_id, f)
    except BaseException:
        _remove_artifact(artifacts, artifact_id)
        raise
    meta = ArtifactMeta(artifact_id=artifact_id, filename=os.path.basename(path), mimetype="application/octet-stream", encoding=None)
    try:
        storage.set_trial_system_attr(trial_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(asdict(meta)))
    except BaseException:
        _remove_artifact(artifacts, artifact_id)
        raise
    return artifact_id


def _remove_artifact(artifacts: Any, artifact_id: str) -> None:
    try:
        artifacts.remove(artifact_id)
    except Exception as e:  # nothing was written, or the store is gone: nothing more to do
        logger.debug("could not remove the partial artifact %s: %s", artifact_id, e)


class PruneOracle:
    """Optuna's own pruner, asked without a store round trip per epoch.

    ``trial.should_prune()`` re-reads the study from the store at every epoch (~10 ms on SQLite). The
    pruners that look only at *completed* trials and at the current trial's own values (median,
    percentile, threshold, patient wrapping those, none) are asked here against a snapshot of the
    completed trials, refreshed every ``refresh_seconds`` (exact with one worker, where nothing
    completes during a trial; with several, at most that stale), and the trial's values kept in memory.
    Other pruners (successive halving, hyperband, wilcoxon) keep Optuna's path.
    """

    def __init__(self, study: "optuna.Study", refresh_seconds: float = 10.0) -> None:
        self.study, self.refresh_seconds = study, refresh_seconds
        self._snapshot: list | None = None
        self._taken = 0.0

    @classmethod
    def for_pruner(cls, study: "optuna.Study") -> "PruneOracle | None":
        return cls(study) if _snapshot_safe(study.pruner) else None

    # the part of optuna.Study the snapshot-safe pruners use
    @property
    def direction(self):
        return self.study.direction

    @property
    def directions(self):
        return self.study.directions

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        import time

        from optuna.trial import TrialState

        now = time.monotonic()
        if self._snapshot is None or now - self._taken > self.refresh_seconds:
            self._snapshot = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._taken = now
        return [t for t in self._snapshot if states is None or t.state in states]

    def should_prune(self, trial: "optuna.Trial", values: dict[int, float]) -> bool:
        import datetime

        from optuna.trial import FrozenTrial, TrialState

        frozen = FrozenTrial(number=trial.number, state=TrialState.RUNNING, value=None, values=None,
                             datetime_start=datetime.datetime.now(), datetime_complete=None, params={}, distributions={},
                             user_attrs={}, system_attrs={}, intermediate_values=dict(values), trial_id=trial._trial_id)
        return bool(self.study.pruner.prune(self, frozen))


def _snapshot_safe(pruner: Any) -> bool:
    import optuna.pruners as P

    if isinstance(pruner, (P.PercentilePruner, P.ThresholdPruner, P.NopPruner)):  # MedianPruner is a PercentilePruner
        return True
    if isinstance(pruner, P.PatientPruner):
        inner = getattr(pruner, "_wrapped_pruner", None)
        return inner is None or _snapshot_safe(inner)
    return False


@dataclass
class Outcome:
    """How a trial ended: COMPLETE with its values, PRUNED or FAIL with the reason."""

    state: str  # COMPLETE | PRUNED | FAIL
    values: list[float] | None = None
    detail: str = ""


class TrialObjective:
    """Callable objective for ``optuna.Study.optimize``; one per worker process."""

    def __init__(
        self,
        study: "Study",
        task: "Task",
        *,
        artifacts: Any = None,
        device: str | None = None,
        max_epochs: int | None = None,
        keep_checkpoints: bool = True,
        n_trials: int | None = None,
    ) -> None:
        self.study = study
        self.task = task
        self.artifacts = artifacts
        self.device = device
        self.max_epochs = max_epochs or study.spec.budget.max_epochs
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
                trial.set_user_attr("worker", worker_id())
                _stop(trial, "surplus", detail)
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
        backend = getattr(trial.storage, "_backend", trial.storage)  # behind Optuna's cache
        batched = backend.batched_params(trial._trial_id) if hasattr(backend, "batched_params") else contextlib.nullcontext()
        with batched:  # the parameters reach the store in one transaction, before training
            config = self.study.space.sample(trial, trial.user_attrs.get("overrides") or {})
        config.setdefault("seed", self.study.spec.seed)
        if self.max_epochs and config.get("epochs", self.task.config_fields()["epochs"][1].default) > self.max_epochs:
            config["epochs"] = self.max_epochs  # the cap is part of what trained (schedules depend on it)
        return config

    def run_config(self, handle: TrialHandle, config: dict) -> Outcome:
        """Check, train and record one config on ``handle``; the body shared by every backend."""
        try:
            return self._run_config(handle, config)
        finally:
            handle.flush()

    def _run_config(self, handle: TrialHandle, config: dict) -> Outcome:
        study = self.study
        handle.set_user_attrs({"worker": worker_id(), **self.worker_attrs, "config": config})
        violated = study.space.violated(config)
        if violated:
            return _stop(handle, "constraint", "constraint violated: " + "; ".join(violated), "PRUNED")
        try:
            train_cfg, model_cfg, data_cfg = self.task.split_config(config)
        except (ValueError, TypeError, KeyError) as e:
            return _stop(handle, "invalid_config", f"invalid config: {e}", "PRUNED")
        try:
            splits = self.task.load(data_cfg)
            with splits.locked_test():
                result = self._fit(handle, splits, train_cfg, model_cfg)
        except KeyboardInterrupt:
            _stop(handle, "interrupted", "interrupted (Ctrl-C); it is run again when the study resumes")
            raise
        except StoreError:  # the store itself refuses (full, read-only, gone for good): nothing to record it in
            raise
        except Exception as e:
            reason, detail = _failure(e)
            return _stop(handle, reason, detail, "FAIL")

        import torch

        attrs = {
            "curves": result.curves, "metrics": result.best, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "seconds": round(result.seconds, 3), "n_params": result.n_params,
            "device": result.device, "threads": torch.get_num_threads(), "diagnosis": self._diagnose(result, config),
            "stop_reason": result.stop_reason, "stop_detail": result.stop_detail,
        }
        missing = [o.metric for o in study.objectives if o.metric not in result.best]
        if result.stop_reason in ("pruned", "diverged"):
            outcome = Outcome("PRUNED", detail=result.stop_detail)
        elif not result.best or missing:
            outcome = Outcome("FAIL", detail=f"no value for objective(s) {', '.join(missing) or 'all'}: no epoch was evaluated")
        else:
            if self.keep_checkpoints and result.best_state is not None:
                try:
                    attrs["checkpoint"], attrs["checkpoint_sha256"] = self._save_checkpoint(handle, result, config, splits)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # a full disk or a lost share must not cost the trial its result
                    attrs["checkpoint_error"] = _failure(e)[1]
                    logger.warning("trial #%d: its checkpoint could not be written (%s); the trial keeps its values "
                                   "and metrics, without a checkpoint", handle.number, attrs["checkpoint_error"][:300])
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

        return fit(
            self.task,
            splits,
            train_cfg,
            model_cfg,
            monitor=monitor.metric,
            direction=monitor.direction,
            on_epoch=on_epoch,
            device=self.device,
            keep_best_state=self.keep_checkpoints,
        )

    def _diagnose(self, result, config: dict) -> list[dict]:
        from hpo.train.diagnose import diagnose_curves

        monitor = self.study.monitor
        return diagnose_curves(result.curves, metric=monitor.metric.split("_", 1)[1], direction=monitor.direction,
                               config=config, stop_reason=result.stop_reason)

    def _save_checkpoint(self, handle: TrialHandle, result, config: dict, splits) -> tuple[str, str]:
        """Upload the best epoch's model with what it takes to use it; return the artifact id and the
        file's sha256 (loading checks it: a file replaced in the artifact folder is refused)."""
        import hashlib

        import torch

        payload = {
            "format": 1,
            "task": self.task.name,
            "study": self.study.name,
            "trial": handle.number,
            "dataset": self.study.record.get("dataset"),
            "target": self.study.spec.task.target,
            "config": config,
            "best_epoch": result.best_epoch,
            "metrics": result.best,
            "model_state": result.best_state,
            "extras": self.task.checkpoint_extras(splits),
        }
        fd, path = tempfile.mkstemp(prefix=f"trial{handle.number}-", suffix=".pt")
        os.close(fd)
        try:
            torch.save(payload, path)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
            return handle.upload(self.artifacts, path), digest
        finally:
            os.unlink(path)


def _stop(handle: Any, reason: str, detail: str, state: str | None = None) -> Outcome:
    if isinstance(handle, TrialHandle):
        handle.set_user_attrs({"stop_reason": reason, "stop_detail": detail})
    else:
        handle.set_user_attr("stop_reason", reason)
        handle.set_user_attr("stop_detail", detail)
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
        return "out_of_memory", f"out of memory: {text}"
    return "failed", text


def load_checkpoint(path: str | os.PathLike, label: str | None = None) -> dict:
    """Read a checkpoint written by a trial, as data only: ``torch.load(weights_only=True)`` rebuilds
    tensors, containers and plain values and refuses any other global, so a planted file (an uploaded
    artifact, a replaced file) runs nothing. Raises :class:`hpo.errors.DataError` naming ``label`` (the
    trial and artifact) when the file is not a checkpoint of this service."""
    import pickle

    import torch

    from hpo.errors import DataError

    keys = ("format", "task", "study", "trial", "config", "model_state")
    where = label or str(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = next((line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line), str(e).splitlines()[0] if str(e) else "")
        raise DataError(f"{where}: checkpoint: must hold only tensors and plain data (it is loaded with "
                        f"weights_only=True and nothing in it is run), but got {first.strip()[:300]}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
        raise DataError(f"{where}: checkpoint: must be a complete torch checkpoint, but reading it failed: "
                        f"{type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys) or ckpt.get("format") != 1:
        got = f"keys {sorted(map(str, ckpt))[:10]}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise DataError(f"{where}: checkpoint: must be a format-1 checkpoint of this service (keys "
                        f"{', '.join(keys)}), but got {got}")
    return ckpt

