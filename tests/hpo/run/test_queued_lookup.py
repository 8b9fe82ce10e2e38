"""The worker's ask looks up queued (WAITING) trials only where one may be queued: Optuna's ``ask`` reads the
study's unfinished trials for them before every trial, and the worker has just read the study (its budget
count). The lookup is skipped where that read found none, and made where it found one, where the stale check
ran this turn (it may have re-queued a dead worker's trial) and where the claim's read, under the study's lock,
found one. Real SQLite files."""

from __future__ import annotations

import contextlib
import types

import optuna
import pytest

from hpo.run.backends.local import run_study
from hpo.run.loop import run_trial
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.store.storage import open_storage


@pytest.fixture
def lookups(monkeypatch):
    """Counts Optuna's lookups of queued trials (``Study._pop_waiting_trial_id``, which ``ask`` calls: a read of
    the study's unfinished trials through its trial cache) in this process."""
    seen = types.SimpleNamespace(n=0)
    real = optuna.Study._pop_waiting_trial_id

    def counted(self):
        seen.n += 1
        return real(self)

    monkeypatch.setattr(optuna.Study, "_pop_waiting_trial_id", counted)
    return seen


@pytest.fixture
def ostudy(tmp_path):
    s = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60))
    s.enqueue_trial({"x": 0.25})  # trial 0, queued
    return s


def _body(trial):
    return trial.suggest_float("x", 0, 1)


def _states(ostudy):
    return {t.number: t.state.name for t in ostudy.get_trials()}


def test_where_the_read_before_found_none_the_ask_makes_a_new_trial_without_the_lookup(ostudy, lookups):
    """The caller's word is taken (``queued=False``, no stale check this turn): what a trial queued since the
    caller's read meets, as one queued just after Optuna's own lookup would: the next turn runs it."""
    assert run_trial(ostudy, _body, stale_check=lambda: False, queued=False) == 1
    assert lookups.n == 0 and _states(ostudy) == {0: "WAITING", 1: "COMPLETE"}
    assert run_trial(ostudy, _body, stale_check=lambda: False, queued=True) == 0  # the next turn's read found it
    assert lookups.n == 1 and ostudy.trials[0].params == {"x": 0.25}


def test_a_queued_trial_is_run_where_the_read_found_it(ostudy, lookups):
    assert run_trial(ostudy, _body, stale_check=lambda: False) == 0  # queued=True, the default: Optuna's ask
    assert lookups.n == 1 and _states(ostudy) == {0: "COMPLETE"} and ostudy.trials[0].params == {"x": 0.25}


def test_a_stale_check_that_ran_this_turn_makes_the_lookup(ostudy, lookups):
    """The check may have re-queued a dead worker's trial after the caller's read: the queued trial runs."""
    assert run_trial(ostudy, _body, stale_check=lambda: True, queued=False) == 0
    assert lookups.n == 1 and _states(ostudy) == {0: "COMPLETE"}


def test_the_claims_read_decides_under_the_lock(ostudy, lookups):
    """A claimed ask goes by the claim's read (made after the stale check), not by the caller's earlier one."""

    def claim(queued):
        return lambda: contextlib.nullcontext((True, queued))

    assert run_trial(ostudy, _body, stale_check=lambda: False, queued=False, claim=claim(True)) == 0
    assert lookups.n == 1
    assert run_trial(ostudy, _body, stale_check=lambda: False, queued=True, claim=claim(False)) == 1
    assert lookups.n == 1 and _states(ostudy) == {0: "COMPLETE", 1: "COMPLETE"}


@pytest.mark.parametrize("queued", [0, 2])
def test_the_worker_loop_looks_up_queued_trials_only_while_there_are_some(toy_study, tmp_path, lookups, queued):
    """40 one-epoch trials: the first 8 asked outside the claim (more than 32 places left), the rest under
    it. Optuna's ask would look up queued trials 40 times; here it is the first turn (the stale check ran)
    and the turns that had a queued trial. The named runs still run first, as queued."""
    runs = "".join(f"  r{i}: {{lr: {0.002 * (i + 1)}, hidden: 8}}\n" for i in range(queued))
    path = toy_study(n_trials=40, space="params:\n  lr: {type: float, low: 1e-3, high: 3e-2, log: true}\n  hidden: [8, 16]\n",
                     extra="fault_tolerance: {heartbeat_interval: 60}\n" + (f"baselines:\n{runs}" if queued else ""))
    path.write_text(path.read_text().replace("epochs: 6,", "epochs: 1,").replace("max_epochs: 6", "max_epochs: 1"))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    trials = optuna.load_study(study_name=study.name, storage=open_storage(study.storage_url(), heartbeat=False)).trials
    assert len(trials) == 40 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert [t.params["lr"] for t in trials[:queued]] == [0.002 * (i + 1) for i in range(queued)]
    assert lookups.n <= 1 + queued
