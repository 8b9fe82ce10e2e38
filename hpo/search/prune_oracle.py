"""Optuna's own pruner, asked without a store round trip per epoch.

``trial.should_prune()`` re-reads the study from the store at every epoch (~10 ms on SQLite). The pruners
that look only at *completed* trials and at the current trial's own values (median, percentile, threshold,
patient wrapping those, none) are asked here against a snapshot of the completed trials, refreshed every
``refresh_seconds`` (exact with one worker, where nothing completes during a trial; with several, at most
that stale), and the trial's values kept in memory. Other pruners (successive halving, hyperband, wilcoxon)
keep Optuna's path.

A multi-objective study prunes through the oracle only: Optuna's own path refuses it. Given ``direction`` (the
primary objective's), the oracle shows the pruner a single-objective study in that direction whose trials'
intermediate values are the primary's (what the trial body writes for a multi-objective trial); the objective
values stay every objective's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


class PruneOracle:
    """Answers ``should_prune`` for one study from a snapshot of its completed trials."""

    def __init__(self, study: "optuna.Study", refresh_seconds: float = 10.0, direction: str | None = None) -> None:
        """``direction`` ("minimize" | "maximize"): the direction the pruner sees (the primary objective's of a
        multi-objective study); None: the study's own (single objective)."""
        self.study, self.refresh_seconds = study, refresh_seconds
        self._direction = _study_direction(direction) if direction is not None else None
        self._snapshot: list | None = None
        self._taken = 0.0

    @classmethod
    def for_pruner(cls, study: "optuna.Study", direction: str | None = None) -> "PruneOracle | None":
        """The oracle of ``study``'s pruner, or None where that pruner needs Optuna's own path."""
        return cls(study, direction=direction) if _snapshot_safe(study.pruner) else None

    # the part of optuna.Study the snapshot-safe pruners use
    @property
    def direction(self):
        return self._direction if self._direction is not None else self.study.direction

    @property
    def directions(self):
        return [self._direction] if self._direction is not None else self.study.directions

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        import time

        from optuna.trial import TrialState

        now = time.monotonic()
        if self._snapshot is None or now - self._taken > self.refresh_seconds:
            self._snapshot = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._taken = now
        return [t for t in self._snapshot if states is None or t.state in states]

    def should_prune(self, trial: Any, values: dict[int, float], trial_id: int = -1) -> bool:
        """Whether the pruner prunes ``trial`` (anything with its ``number``) with its intermediate ``values``
        (``trial_id``: its storage id, which the snapshot-safe pruners do not read)."""
        import datetime

        from optuna.trial import FrozenTrial, TrialState

        frozen = FrozenTrial(number=trial.number, state=TrialState.RUNNING, value=None, values=None,
                             datetime_start=datetime.datetime.now(), datetime_complete=None, params={}, distributions={},
                             user_attrs={}, system_attrs={}, intermediate_values=dict(values), trial_id=trial_id)
        return bool(self.study.pruner.prune(self, frozen))


def _study_direction(direction: str):
    from optuna.study import StudyDirection

    return StudyDirection[direction.upper()]  # "minimize" | "maximize"


def _snapshot_safe(pruner: Any) -> bool:
    import optuna.pruners as P

    if isinstance(pruner, (P.PercentilePruner, P.ThresholdPruner, P.NopPruner)):  # MedianPruner is a PercentilePruner
        return True
    if isinstance(pruner, P.PatientPruner):
        inner = getattr(pruner, "_wrapped_pruner", None)
        return inner is None or _snapshot_safe(inner)
    return False
