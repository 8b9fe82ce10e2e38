"""BudgetCounter: the worker loop's incremental budget count equals the full count (``budget_of``) at every read
of a study whose trials start, finish, fail, are retried and re-run in random order, and looks only at what
changed since its last read."""

from __future__ import annotations

import random

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.run.budget import BudgetCounter, budget_of
from hpo.store.record import NOT_TRAINED, RERUN, RERUN_OF, RETRY_HISTORY, STOP_REASON, WARM_START_OF

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
REASONS = (None, *NOT_TRAINED, *RERUN, "diverged", "crashed")


def frozen(number: int, state: TrialState, user_attrs: dict, system_attrs: dict) -> FrozenTrial:
    return FrozenTrial(number=number, state=state, value=1.0 if state == TrialState.COMPLETE else None,
                       datetime_start=None, datetime_complete=None, params={"x": 0.5},
                       distributions={"x": FloatDistribution(0, 1)}, user_attrs=dict(user_attrs),
                       system_attrs=dict(system_attrs), intermediate_values={}, trial_id=number)


class Study:
    """Trials as the store's cache returns them: sorted by number, a finished trial never changes again (a read
    returns the same FrozenTrial object for it, as Optuna's cache does)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: list[list] = []  # [state, user_attrs, system_attrs, frozen or None]

    def step(self) -> None:
        rng, rows = self.rng, self.rows
        live = [i for i, r in enumerate(rows) if r[0] in (TrialState.RUNNING, TrialState.WAITING)]
        failed = [i for i, r in enumerate(rows) if r[0] == TrialState.FAIL]
        op = rng.random()
        if op < 0.35 or not live:
            user, system = {}, {}
            if failed and rng.random() < 0.3:  # a retry of a dead worker's trial, or a re-run of an interrupted one
                if rng.random() < 0.5:
                    system[RETRY_HISTORY] = rng.sample(failed, k=min(len(failed), rng.randint(1, 2)))
                else:
                    user[RERUN_OF] = rng.choice(failed)
            if rng.random() < 0.05:
                user[WARM_START_OF] = f"s/quick#{rng.randint(0, 9)}"
            state = TrialState.WAITING if rng.random() < 0.3 else TrialState.RUNNING
            rows.append([state, user, system, None])
            return
        i = rng.choice(live)
        row = rows[i]
        if row[0] == TrialState.WAITING and rng.random() < 0.6:
            row[0] = TrialState.RUNNING
            return
        row[0] = rng.choice(FINISHED)
        reason = rng.choice(REASONS)
        if reason is not None:
            row[1][STOP_REASON] = reason

    def trials(self) -> list[FrozenTrial]:
        out = []
        for n, row in enumerate(self.rows):
            if row[3] is not None:
                out.append(row[3])
                continue
            t = frozen(n, row[0], row[1], row[2])
            if row[0] in FINISHED:
                row[3] = t
            out.append(t)
        return out


@pytest.mark.parametrize("seed", range(20))
def test_the_counter_equals_the_full_count_at_every_read(seed):
    rng = random.Random(seed)
    study, count = Study(rng), BudgetCounter()
    for _ in range(400):
        for _ in range(rng.randint(1, 4)):  # other workers act between two reads of this one
            study.step()
        trials = study.trials()
        assert count(trials) == budget_of(trials)
    final = budget_of(study.trials())
    assert final.rerun > 0 and final.failed > 0 and final.rejected > 0 and final.told > 0  # every rule was exercised


def test_a_retry_seen_later_moves_a_counted_failure_to_rerun():
    count = BudgetCounter()
    crashed = frozen(0, TrialState.FAIL, {}, {})
    assert count([crashed]).failed == 1
    retry = frozen(1, TrialState.WAITING, {}, {RETRY_HISTORY: [0]})
    b = count([crashed, retry])
    assert (b.failed, b.rerun, b.waiting, b.used) == (0, 1, 1, 0)


class Reads(list):
    """A trial list that records which positions were read."""

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.read: set[int] = set()

    def __getitem__(self, i):
        if isinstance(i, int):
            self.read.add(i if i >= 0 else len(self) + i)
        return super().__getitem__(i)


def test_a_read_looks_only_at_new_and_unfinished_trials():
    count = BudgetCounter()
    trials = [frozen(n, TrialState.COMPLETE, {}, {}) for n in range(5000)] + [frozen(5000, TrialState.RUNNING, {}, {})]
    assert count(trials).complete == 5000
    trials[5000] = frozen(5000, TrialState.PRUNED, {}, {})
    again = Reads(trials + [frozen(5001, TrialState.RUNNING, {}, {})])
    b = count(again)
    assert (b.complete, b.pruned, b.running) == (5000, 1, 1)
    assert again.read <= {0, 5000, 5001}  # the first and last number (the list is 0..n-1), the changed and the new


@pytest.mark.parametrize("trials", [
    [frozen(3, TrialState.COMPLETE, {}, {}), frozen(7, TrialState.FAIL, {}, {})],  # a filtered read: not 0..n-1
    [frozen(0, TrialState.COMPLETE, {}, {})],  # fewer trials than the last read: another study
])
def test_a_list_that_is_not_the_read_before_grown_is_counted_in_full(trials):
    count = BudgetCounter()
    count([frozen(n, TrialState.FAIL, {}, {}) for n in range(3)])
    assert count(trials) == budget_of(trials)
