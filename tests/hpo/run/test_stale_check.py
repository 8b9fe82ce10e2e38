"""The worker's stale-trial check runs at most once per heartbeat interval, and still finds a dead worker's trial."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from hpo.run.loop import StaleCheck
from hpo.store import rdb
from hpo.store.storage import open_storage


def test_the_stale_check_is_throttled_to_the_heartbeat_interval_and_fails_a_dead_trial(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=1)
    ostudy = optuna.create_study(study_name="s", storage=storage)
    dead = ostudy.ask()  # a trial whose worker beat once, then died
    rdb.record_heartbeat(ostudy, dead)
    now = [0.0]
    check = StaleCheck(ostudy, clock=lambda: now[0])
    check()  # the first call always checks: the trial has just beaten, it is not stale
    assert rdb.stored_trial(ostudy, dead).state == TrialState.RUNNING
    time.sleep(2.2)  # past the grace period (SQLite keeps whole seconds): the trial is stale now
    now[0] = 0.5
    check()  # within one interval of the last check: no query, the trial stays RUNNING
    assert rdb.stored_trial(ostudy, dead).state == TrialState.RUNNING
    now[0] = 1.0
    check()  # an interval later: found, failed, and its retry queued with its parameters
    assert rdb.stored_trial(ostudy, dead).state == TrialState.FAIL
    states = [t.state for t in ostudy.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.WAITING]


def test_the_stale_check_counts_calls_not_trials(tmp_path, monkeypatch):
    """Many trials within one interval cost one stale-trial query, not one each."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=5, grace_period=10)
    ostudy = optuna.create_study(study_name="s", storage=storage)
    calls = []
    monkeypatch.setattr(rdb, "fail_stale", lambda s: calls.append(s))
    now = [0.0]
    check = StaleCheck(ostudy, clock=lambda: now[0])
    for i in range(100):  # 100 trials of 0.1 s: 10 s, two intervals
        now[0] = i * 0.1
        check()
    assert len(calls) == 2
