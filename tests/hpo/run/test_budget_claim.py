"""The last places of a budget are taken under the study's lock: two workers that count the budget at the same
moment do not both ask for its last place (before, the later trial was recorded FAIL ``surplus``; stop 23's CI
saw one after a PostgreSQL restart let two workers go together). Real SQLite files and a real PostgreSQL
server; the lock is held across processes and dropped with a killed holder."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import optuna
import pytest

from hpo.run import loop
from hpo.run.budget import BudgetCounter
from hpo.run.loop import run_trial
from hpo.store import rdb
from hpo.store.rdb import lock as study_locks
from hpo.store.storage import open_storage
from tests.conftest import ROOT


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return request.getfixturevalue("postgres").create_database(f"claim_{uuid.uuid4().hex[:8]}")


def _study(url, create=False):
    storage = open_storage(url, heartbeat_interval=1)
    if create:
        return optuna.create_study(study_name="s", storage=storage)
    return optuna.load_study(study_name="s", storage=storage)


def _body(trial):
    return trial.suggest_float("x", 0, 1)


def _race_for_the_last_place(url, n_trials=3, done=2, ask_seconds=0.3):
    """Two workers, each with a storage of its own, run one trial each at the same moment for the one free
    place; each ``ask`` takes ``ask_seconds`` more before it inserts the trial (the time between a count and the
    insert, widened)."""
    first = _study(url, create=True)
    for _ in range(done):
        run_trial(first, _body, stale_check=lambda: None)
    workers = [_study(url), _study(url)]
    for w in workers:
        real = w._storage.create_new_trial

        def slow_create(*args, _real=real, **kwargs):
            time.sleep(ask_seconds)
            return _real(*args, **kwargs)

        w._storage.create_new_trial = slow_create
    go = threading.Barrier(2)
    got: list = [None, None]

    def work(i):
        w = workers[i]
        go.wait()
        got[i] = run_trial(w, _body, stale_check=lambda: None, claim=lambda: loop._claim(w, n_trials, BudgetCounter()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return got, first.get_trials()


def test_two_workers_counting_at_once_do_not_both_take_the_last_place(url):
    got, trials = _race_for_the_last_place(url)
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(got, key=lambda g: g is None) == [2, None]  # one ran the last trial, the other asked for none


def test_without_the_lock_the_same_race_takes_the_last_place_twice(url, monkeypatch):
    """The control: the race above is real, so the test above fails where the lock does not hold."""
    import contextlib

    monkeypatch.setattr(rdb, "study_lock", lambda ostudy: contextlib.nullcontext(False))
    got, trials = _race_for_the_last_place(url)
    assert len(trials) == 4 and sorted(got) == [2, 3]


def _holder(url, seconds):
    """A process that takes the study's lock, says so, and holds it for ``seconds``."""
    code = textwrap.dedent(f"""
        import sys, time, optuna
        from hpo.store import rdb
        from hpo.store.storage import open_storage
        s = optuna.load_study(study_name="s", storage=open_storage({url!r}, heartbeat_interval=1))
        with rdb.study_lock(s) as held:
            print("held" if held else "not held", flush=True)
            time.sleep({seconds})
    """)
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _time_to_take(ostudy):
    t0 = time.monotonic()
    with rdb.study_lock(ostudy) as held:
        return held, time.monotonic() - t0


def test_the_lock_is_held_across_processes_and_dropped_with_a_killed_holder(url):
    ostudy = _study(url, create=True)
    holder = _holder(url, 1.5)
    held, waited = _time_to_take(ostudy)
    assert held and waited > 0.8  # it waited for the holder to finish its block
    holder.wait(10)
    holder = _holder(url, 600)
    threading.Timer(0.5, holder.kill).start()  # SIGKILL while holding: the server / kernel drops the lock
    held, waited = _time_to_take(ostudy)
    assert held and waited < 10
    holder.wait(10)
    assert _time_to_take(ostudy)[1] < 0.5  # released by this process too


def test_a_holder_that_never_lets_go_is_waited_for_a_bounded_time_then_the_worker_goes_on(url, monkeypatch, caplog):
    monkeypatch.setattr(study_locks, "LOCK_WAIT_SECONDS", 1.0)
    ostudy = _study(url, create=True)
    holder = _holder(url, 600)
    try:
        with caplog.at_level(logging.WARNING, logger="hpo.store.storage"):
            held, waited = _time_to_take(ostudy)
        assert not held and 0.9 < waited < 5
        assert "going on without it" in caplog.text
    finally:
        holder.kill()
        holder.wait(10)


def test_an_in_memory_store_goes_on_without_a_lock():
    ostudy = optuna.create_study(study_name="s", storage=open_storage("sqlite:///:memory:", heartbeat_interval=1))
    assert _time_to_take(ostudy)[0] is False
    assert run_trial(ostudy, _body, stale_check=lambda: None, claim=lambda: loop._claim(ostudy, 1, BudgetCounter())) == 0
    assert run_trial(ostudy, _body, stale_check=lambda: None, claim=lambda: loop._claim(ostudy, 1, BudgetCounter())) is None
