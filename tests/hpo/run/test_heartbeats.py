"""A trial run by the worker loop beats once before its body, then once per heartbeat interval while the body
runs: a short trial costs one heartbeat write (Optuna's thread would add a second at once), a long one keeps
beating (a live trial is never failed as stale)."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from hpo.run.loop import run_trial
from hpo.store import rdb
from hpo.store.storage import open_storage


def counted(ostudy: optuna.Study, monkeypatch) -> list[float]:
    beats: list[float] = []
    backend = rdb.storage_of(ostudy)
    record = backend.record_heartbeat

    def beat(trial_id):
        beats.append(time.monotonic())
        return record(trial_id)

    monkeypatch.setattr(backend, "record_heartbeat", beat)
    return beats


def test_a_short_trial_beats_once(tmp_path, monkeypatch):
    ostudy = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1))
    beats = counted(ostudy, monkeypatch)
    for _ in range(5):
        done = run_trial(ostudy, lambda t: t.suggest_float("x", 0, 1), stale_check=lambda: None)
        assert done.state == TrialState.COMPLETE
    assert len(beats) == 5


def test_a_long_trial_beats_every_interval_and_is_not_failed_as_stale(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 's.db'}"
    ostudy = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    beats = counted(ostudy, monkeypatch)
    other = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))

    def body(trial):
        for _ in range(8):  # 4 s, twice the grace period: another worker's stale check runs meanwhile
            time.sleep(0.5)
            rdb.fail_stale(other)
        return 1.0

    done = run_trial(ostudy, body, stale_check=lambda: None)
    assert done.state == TrialState.COMPLETE
    assert len(beats) >= 4  # the first, then one per second
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert 0.8 < gaps[0] < 1.5 and max(gaps) < 1.5, gaps
