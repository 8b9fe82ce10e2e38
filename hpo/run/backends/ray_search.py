"""The Ray backend's searcher: Ray Tune's OptunaSearch on the study in the store, recording how each trial
ended (state, stop reason, the epoch Tune's scheduler stopped it at) as the local backend does.

Imported only when a study runs on Ray (it imports ``ray`` at module level)."""

from __future__ import annotations

import logging
from typing import Callable

import optuna
from ray.tune.search.optuna import OptunaSearch

from hpo.errors import UsageError
from hpo.store import record as R
from hpo.store.rdb import stored_trial
from hpo.store.record import StopReason

logger = logging.getLogger(__name__)


class HpoOptunaSearch(OptunaSearch):
    """OptunaSearch that records how each trial ended as the local backend does."""

    def __init__(self, *args, on_finished: Callable | None = None, scheduler_name: str = "scheduler",
                 stop_when: Callable[[], bool] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_finished = on_finished
        self._scheduler_name = scheduler_name
        self._stop_when = stop_when  # the study is over (stop_at_target met): no trial is suggested any more

    def suggest(self, trial_id: str):
        if self._stop_when is not None and self._stop_when():
            return self.FINISHED
        return super().suggest(trial_id)

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
                if R.STOP_REASON not in ot_trial.user_attrs:
                    ot_trial.set_user_attr(R.STOP_REASON, StopReason.FAILED.value)
                    ot_trial.set_user_attr(R.STOP_DETAIL, "the Ray worker raised (see the Tune logs)")
                self._ot_study.tell(ot_trial, state=State.FAIL)
            else:
                epoch = (result or {}).get("epoch")
                value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
                if epoch is not None and value is not None and epoch not in stored_trial(self._ot_study, ot_trial).intermediate_values:
                    ot_trial.report(value, epoch)  # the result that made the scheduler stop it
                ot_trial.set_user_attr(R.STOP_REASON, StopReason.PRUNED.value)
                ot_trial.set_user_attr(R.STOP_DETAIL, f"stopped by Tune's {self._scheduler_name} at epoch {epoch}")
                self._ot_study.tell(ot_trial, state=State.PRUNED)
        except Exception as e:  # e.g. the trial was already finished: keep Tune going, say so
            logger.warning("could not record Ray trial %s: %s", trial_id, e)
        self._completed_trials.add(trial_id)
        if self._on_finished is not None:
            self._on_finished(ot_trial.number)
