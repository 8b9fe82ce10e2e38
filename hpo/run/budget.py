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
        kind = _kind(t, retried)
        if kind is not None:
            setattr(b, kind, getattr(b, kind) + 1)
    return b


class BudgetCounter:
    """:func:`budget_of` for one reader's successive reads of one study, in time proportional to what changed
    since the last read, not to the study's size (a worker counts the budget before every trial: over all of
    20,000 trials that was the largest part of its orchestration).

    It relies on what the store's trial cache relies on: a finished trial never changes, and ``get_trials``
    returns the trials sorted by number, ``0 .. n-1``. Each read looks only at trials new since the last read
    and at those then still RUNNING or WAITING; a retry seen for a trial counted as failed moves it to
    ``rerun``. A list that is not ``0 .. n-1`` (a filtered read, another study) is counted in full."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.settled = Budget()  # counts of the finished trials
        self.failed: set[int] = set()  # settled as ``failed``: a later retry moves them to ``rerun``
        self.retried: set[int] = set()
        self.open: list[int] = []  # RUNNING or WAITING at the last read
        self.seen = 0

    def __call__(self, trials: Sequence["FrozenTrial"]) -> Budget:
        n = len(trials)
        if n and (trials[0].number != 0 or trials[-1].number != n - 1):
            self._reset()
            return budget_of(trials)
        if n < self.seen:  # not the study this counter read before
            self._reset()
        look = self.open + list(range(self.seen, n))
        for i in look:
            t = trials[i]
            new = set(t.system_attrs.get(RETRY_HISTORY, []))
            if RERUN_OF in t.user_attrs:
                new.add(t.user_attrs[RERUN_OF])
            for r in new - self.retried:
                self.retried.add(r)
                if r in self.failed:
                    self.failed.discard(r)
                    self.settled.failed -= 1
                    self.settled.rerun += 1
        b = Budget(**vars(self.settled))
        self.open = []
        for i in look:
            t = trials[i]
            kind = _kind(t, self.retried)
            if kind is None:
                continue
            if kind in ("running", "waiting"):
                self.open.append(i)
                setattr(b, kind, getattr(b, kind) + 1)
                continue
            for counts in (self.settled, b):
                setattr(counts, kind, getattr(counts, kind) + 1)
            if kind == "failed":
                self.failed.add(t.number)
        self.seen = n
        return b


def _kind(t: "FrozenTrial", retried: set[int]) -> str | None:
    """The :class:`Budget` field a trial counts in: the one rule of this module."""
    state, reason = t.state.name, t.user_attrs.get(STOP_REASON)
    if WARM_START_OF in t.user_attrs:
        return "told"
    if state == "RUNNING":
        return "running"
    if state == "WAITING":
        return "waiting"
    if reason in NOT_TRAINED:
        return "rejected"
    if state == "FAIL" and (t.number in retried or reason in RERUN):
        return "rerun"
    if state == "COMPLETE":
        return "complete"
    if state == "PRUNED":
        return "pruned"
    return "failed" if state == "FAIL" else None
