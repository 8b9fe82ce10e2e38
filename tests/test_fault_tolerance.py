"""Workers die and databases restart: nothing is lost. Real processes, real signals, real servers."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from hpo.run.budget import budget_of
from tests.conftest import ROOT, fault_study, hpo_cli

pytestmark = pytest.mark.slow

def _study_file(tmp_path, name, n, storage, epochs=12):
    p = tmp_path / f"{name}.yaml"
    p.write_text(fault_study(name=name, n=n, storage=storage, artifacts=tmp_path / "artifacts", epochs=epochs))
    return p


def _worker(path, tmp_path, env=None):
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(path), "--threads", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url)).get_trials()


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_trial_is_retried_and_the_budget_is_exact(tmp_path, report_figures):
    url = f"sqlite:///{tmp_path / 'ft.db'}"
    n = 6
    path = _study_file(tmp_path, "ft", n, url)
    assert hpo_cli("create", path, cwd=tmp_path).returncode == 0
    a, b = _worker(path, tmp_path), _worker(path, tmp_path)

    def running_in_a():  # the config is recorded just before training starts
        for t in _trials(url, "ft"):
            if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{a.pid}") and "config" in t.user_attrs:
                return t
        return None

    _wait(running_in_a, 180, "worker A to be mid-trial")
    time.sleep(1.0)  # well into its epochs
    # the trial seen a second ago may have ended since: kill at a moment A is seen mid-trial, then name the
    # victim from the store (the trial A left RUNNING), not from the earlier look
    _wait(running_in_a, 180, "worker A to be mid-trial again")
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    left = [t for t in _trials(url, "ft") if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{a.pid}")]
    assert len(left) == 1, [(t.number, t.state.name) for t in left]
    victim = left[0]
    out, err = b.communicate(timeout=600)
    assert b.returncode == 0, err[-3000:]
    trials = _trials(url, "ft")
    states = [t.state.name for t in trials]
    killed = next(t for t in trials if t.number == victim.number)
    retries = [t for t in trials if killed.number in t.system_attrs.get("retry_history", [])]
    figures = {"asked": n, "completed": states.count("COMPLETE"), "retried": len(retries),
               "running_left": states.count("RUNNING"), "failed": states.count("FAIL")}
    report_figures("SIGKILL of a worker mid-trial (SQLite, 2 workers)", figures)
    assert figures["running_left"] == 0
    assert killed.state.name == "FAIL"  # marked by the surviving worker's heartbeat check
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state.name == "COMPLETE"
    assert retries[0].user_attrs["worker"].endswith(f":{b.pid}")
    assert figures["completed"] == n and budget_of(trials).used == n  # exactly the asked number


@pytest.mark.postgres
def test_postgres_restart_during_a_study_loses_nothing(tmp_path, postgres, report_figures):
    name = f"pgrestart{int(time.time())}"
    n = 8
    path = _study_file(tmp_path, name, n, postgres.url, epochs=10)
    path.write_text(path.read_text().replace("grace_period: 4", "grace_period: 30"))
    env = postgres.env()
    assert hpo_cli("create", path, cwd=tmp_path, env=env).returncode == 0
    workers = [_worker(path, tmp_path, env), _worker(path, tmp_path, env)]
    os.environ.update(env)

    def some_finished_some_running():
        ts = _trials(postgres.url, name)
        done = sum(t.state.name == "COMPLETE" for t in ts)
        return done >= 2 and any(t.state.name == "RUNNING" for t in ts)

    _wait(some_finished_some_running, 300, "a study in progress")
    postgres.restart(down_seconds=3.0)
    outs = [w.communicate(timeout=600) for w in workers]
    for w, (o, e) in zip(workers, outs):
        assert w.returncode == 0, e[-3000:]
    assert any("store unreachable" in e for _, e in outs)  # the workers did lose the server, and waited
    trials = _trials(postgres.url, name)
    states = [t.state.name for t in trials]
    figures = {"asked": n, "completed": states.count("COMPLETE"), "failed": states.count("FAIL"), "running_left": states.count("RUNNING")}
    report_figures("PostgreSQL server restarted mid-study (2 workers)", figures)
    for t in trials:
        if t.state.name != "COMPLETE":
            print(t.number, t.state.name, t.user_attrs.get("stop_detail"), t.system_attrs.get("fail_reason"))
            for _, e in outs:
                print("---- worker stderr\n", e[-6000:])
    assert figures == {"asked": n, "completed": n, "failed": 0, "running_left": 0}
    for t in trials:  # every trial's curves and config made it to the store
        assert t.user_attrs["curves"]["val_mae"] and t.user_attrs["config"]
