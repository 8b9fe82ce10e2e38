"""Heartbeats cost no write of their own for a short trial: a trial entering RUNNING (created, or a queued trial
claimed) gets its first beat in that transaction, and the worker's heartbeat thread beats once per interval from
then on (a live trial is never failed as stale). A worker that dies right after ``ask`` leaves a trial that
goes stale like any other. On a storage that does not beat at start, the thread beats on entry."""

from __future__ import annotations

import sqlite3
import time

import optuna
from optuna.trial import TrialState

from hpo.run.loop import run_trial
from hpo.store import rdb
from hpo.store.storage import open_storage


def counted(ostudy: optuna.Study, monkeypatch) -> list[float]:
    beats: list[float] = []
    backend = rdb.backend_of(rdb.storage_of(ostudy))
    record = backend.record_heartbeat

    def beat(trial_id):
        beats.append(time.monotonic())
        return record(trial_id)

    monkeypatch.setattr(backend, "record_heartbeat", beat)
    return beats


def beat_rows(path) -> dict[int, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT trial_id, COUNT(*) FROM trial_heartbeats GROUP BY trial_id").fetchall())


def test_a_short_trial_beats_with_its_start_and_writes_no_beat_of_its_own(tmp_path, monkeypatch):
    ostudy = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1))
    beats = counted(ostudy, monkeypatch)
    ostudy.enqueue_trial({"x": 0.5})  # WAITING, no beat; claimed by the first run_trial
    for _ in range(5):
        number = run_trial(ostudy, lambda t: t.suggest_float("x", 0, 1), stale_check=lambda: None)
        assert ostudy.trials[number].state == TrialState.COMPLETE
    assert ostudy.trials[0].params == {"x": 0.5}
    assert beats == []  # no heartbeat transaction of its own
    assert beat_rows(tmp_path / "s.db") == {t._trial_id: 1 for t in ostudy.trials}  # the claimed one too


def test_a_storage_without_a_beat_at_start_is_beaten_on_entry(tmp_path, monkeypatch):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1)
    ostudy = optuna.create_study(study_name="s", storage=storage)
    beats = counted(ostudy, monkeypatch)
    for _ in range(3):
        run_trial(ostudy, lambda t: t.suggest_float("x", 0, 1), stale_check=lambda: None)
    assert len(beats) == 3  # one each, on entry, not a second one at once from the thread
    assert set(beat_rows(tmp_path / "s.db")) == {t._trial_id for t in ostudy.trials}


def test_a_trial_whose_worker_died_after_ask_goes_stale_after_the_grace_period(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    dead = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    other = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        orphan = dead.ask()  # the worker is killed here: no heartbeat thread ever starts
    rdb.fail_stale(other)
    assert rdb.stored_trial(other, orphan).state == TrialState.RUNNING  # its beat is fresh
    time.sleep(3.0)
    rdb.fail_stale(other)  # without a beat at creation, Optuna's check skips it (heartbeatless, ~14 s more here)
    assert rdb.stored_trial(other, orphan).state == TrialState.FAIL


def test_a_long_trial_beats_every_interval_and_is_not_failed_as_stale(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 's.db'}"
    ostudy = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    beats = counted(ostudy, monkeypatch)
    other = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))

    def body(trial):
        for _ in range(8):  # 4 s, twice the grace period: another worker's stale checks run meanwhile
            time.sleep(0.5)
            rdb.fail_stale(other)
        return 1.0

    start = time.monotonic()
    number = run_trial(ostudy, body, stale_check=lambda: None)
    assert ostudy.trials[number].state == TrialState.COMPLETE
    assert len(beats) >= 3  # the first came with the trial, then one per second
    gaps = [b - a for a, b in zip([start, *beats], beats)]
    assert 0.8 < gaps[0] < 1.5 and max(gaps) < 1.5, gaps
