"""The study's budget: how many trials it asked for, and how the store's trials count against it.

One rule for every reader (the worker loop, the surplus check before a trial trains, status, the Ray
backend): COMPLETE, PRUNED and FAIL count; a trial that never trained (constraint, invalid config,
surplus) does not; a FAIL that was retried or an interrupted trial is re-run and counts once, in its rerun.
A trial told to a stage from an earlier stage (user attr ``WARM_START_OF``, :mod:`hpo.plan.warm`) never
trained in this study: it is counted apart (``told``) and never uses the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpo.store.record import NOT_TRAINED, RERUN, RERUN_OF, RETRY_HISTORY, STOP_REASON, WARM_START_OF

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass
class Budget:
    """Trial counts of a study, as the budget sees them."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    rejected: int = 0  # constraint / invalid config (not trained)
    rerun: int = 0  # failed or interrupted, re-queued
    told: int = 0  # warm-started copies of earlier stages' trials (not trained here)

    @property
    def used(self) -> int:
        return self.complete + self.pruned + self.failed


def budget_of(trials: Sequence["FrozenTrial"], before: int | None = None) -> Budget:
    """Count trials as the budget sees them (only those numbered below ``before``, if given)."""
    b = Budget()
    retried = set()
    for t in trials:
        retried.update(t.system_attrs.get(RETRY_HISTORY, []))
        if RERUN_OF in t.user_attrs:
            retried.add(t.user_attrs[RERUN_OF])
    for t in trials:
        if before is not None and t.number >= before:
            continue
        state, reason = t.state.name, t.user_attrs.get(STOP_REASON)
        if WARM_START_OF in t.user_attrs:
            b.told += 1
        elif state == "RUNNING":
            b.running += 1
        elif state == "WAITING":
            b.waiting += 1
        elif reason in NOT_TRAINED:
            b.rejected += 1
        elif state == "FAIL" and (t.number in retried or reason in RERUN):
            b.rerun += 1
        elif state == "COMPLETE":
            b.complete += 1
        elif state == "PRUNED":
            b.pruned += 1
        elif state == "FAIL":
            b.failed += 1
    return b
