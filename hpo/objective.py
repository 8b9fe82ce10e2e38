"""The Optuna objective: one trial = sample a config, check it, train it, store what it did.

What a trial stores (all in the study store, so report, export and dashboard need no side files):

- params (Optuna) for the active parameters only; ``config`` (user attr): the complete explicit
  config (training defaults + fixed + overrides + sampled + derived + seed), i.e. what export writes;
- the objective value(s) at the best epoch; intermediate values: the monitored val metric per epoch;
- ``curves``: every train/val metric, lr and epoch time per epoch; ``metrics``: all at the best epoch;
- ``diagnosis``: what :mod:`hpo.diagnose` reads in the curves (overfitting, plateau, wasted epochs, ...);
- ``stop_reason`` (completed | early_stopped | pruned | diverged | constraint | invalid_config |
  failed | out_of_memory | interrupted) and ``stop_detail`` (a sentence), ``best_epoch``, ``epochs_run``,
  ``seconds``, ``n_params``, ``device``, ``threads``, ``worker`` (host:pid);
- ``checkpoint``: the artifact id of the best epoch's weights + config (Optuna artifact store).

Constraint violations and configs the model rejects are PRUNED before any training (samplers then
treat them as bad). A diverging run (non-finite loss) is PRUNED with its last finite values. A crash
is FAIL with its reason; the study goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any

from hpo.errors import Pruned, TrialFailed

if TYPE_CHECKING:
    import optuna

    from hpo.spec.load import Study
    from hpo.tasks.base import Task

logger = logging.getLogger(__name__)


def worker_id() -> str:
    """``host:pid`` of this worker (stored with each trial: which machine and process ran it)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"

STOP_REASONS = (
    "surplus",
    "completed",
    "early_stopped",
    "pruned",
    "diverged",
    "constraint",
    "invalid_config",
    "failed",
    "out_of_memory",
    "interrupted",
)


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

    def __call__(self, trial: "optuna.Trial") -> float | list[float]:
        import optuna

        study = self.study
        if self.n_trials is not None:
            from hpo.runner import budget_of

            ahead = budget_of(trial.study.get_trials(deepcopy=False), before=trial.number)
            if ahead.used + ahead.running >= self.n_trials:
                detail = (f"surplus: the budget of {self.n_trials} trials was already taken by other workers when this "
                          "trial started; it did not train and does not count")
                self._stop(trial, "surplus", detail)
                raise TrialFailed(detail)
        trial.set_user_attr("worker", worker_id())
        overrides = trial.user_attrs.get("overrides") or {}
        config = study.space.sample(trial, overrides)
        config.setdefault("seed", study.spec.seed)
        if self.max_epochs and config.get("epochs", self.task.config_fields()["epochs"][1].default) > self.max_epochs:
            config["epochs"] = self.max_epochs  # the cap is part of what trained (schedules depend on it)
        trial.set_user_attr("config", config)

        violated = study.space.violated(config)
        if violated:
            self._stop(trial, "constraint", "constraint violated: " + "; ".join(violated))
            raise optuna.TrialPruned(f"constraint violated: {'; '.join(violated)}")
        try:
            train_cfg, model_cfg, data_cfg = self.task.split_config(config)
        except (ValueError, TypeError, KeyError) as e:
            self._stop(trial, "invalid_config", f"invalid config: {e}")
            raise optuna.TrialPruned(f"invalid config: {e}") from None

        try:
            splits = self.task.load(data_cfg)
            with splits.locked_test():
                result = self._fit(trial, splits, train_cfg, model_cfg)
        except KeyboardInterrupt:
            self._stop(trial, "interrupted", "interrupted (Ctrl-C); it is run again when the study resumes")
            raise
        except Exception as e:
            reason, detail = _failure(e)
            self._stop(trial, reason, detail)
            raise TrialFailed(detail) from e

        import torch

        trial.set_user_attr("curves", result.curves)
        trial.set_user_attr("metrics", result.best)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("seconds", round(result.seconds, 3))
        trial.set_user_attr("n_params", result.n_params)
        trial.set_user_attr("device", result.device)
        trial.set_user_attr("threads", torch.get_num_threads())
        self._stop(trial, result.stop_reason, result.stop_detail)
        trial.set_user_attr("diagnosis", self._diagnose(result, config))
        if result.stop_reason in ("pruned", "diverged"):
            raise optuna.TrialPruned(result.stop_detail)
        missing = [o.metric for o in study.objectives if o.metric not in result.best]
        if not result.best or missing:
            raise TrialFailed(f"no value for objective(s) {', '.join(missing) or 'all'}: no epoch was evaluated")
        if self.keep_checkpoints and result.best_state is not None:
            self._save_checkpoint(trial, result, config, splits)
        values = [float(result.best[o.metric]) for o in study.objectives]
        return values[0] if len(values) == 1 else values

    def _fit(self, trial, splits, train_cfg, model_cfg):
        from hpo.train import fit

        monitor = self.study.monitor
        report = not self.study.multi_objective  # Optuna cannot report multi-objective values
        prune = report and self.study.spec.pruner.type != "none"

        def on_epoch(epoch: int, metrics: dict) -> None:
            if not report:
                return
            value = metrics[monitor.metric]
            trial.report(value, epoch)
            if prune and trial.should_prune():
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
        from hpo.diagnose import diagnose_curves

        monitor = self.study.monitor
        return diagnose_curves(result.curves, metric=monitor.metric.split("_", 1)[1], direction=monitor.direction,
                               config=config, stop_reason=result.stop_reason)

    def _save_checkpoint(self, trial, result, config: dict, splits) -> None:
        import optuna
        import torch

        payload = {
            "format": 1,
            "task": self.task.name,
            "study": self.study.name,
            "trial": trial.number,
            "dataset": self.study.record.get("dataset"),
            "target": self.study.spec.task.target,
            "config": config,
            "best_epoch": result.best_epoch,
            "metrics": result.best,
            "model_state": result.best_state,
            "extras": self.task.checkpoint_extras(splits),
        }
        fd, path = tempfile.mkstemp(prefix=f"trial{trial.number}-", suffix=".pt")
        os.close(fd)
        try:
            torch.save(payload, path)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=self.artifacts, file_path=path, study_or_trial=trial, mimetype="application/octet-stream"
            )
            trial.set_user_attr("checkpoint", artifact_id)
        finally:
            os.unlink(path)

    @staticmethod
    def _stop(trial, reason: str, detail: str) -> None:
        trial.set_user_attr("stop_reason", reason)
        trial.set_user_attr("stop_detail", detail)


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


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by a trial (trusted: written by this service)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)

