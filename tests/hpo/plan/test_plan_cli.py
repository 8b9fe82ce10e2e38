"""`hpo run` / `create` / `worker` on a staged study, and `hpo run` stopped in the middle of a stage (a real
process, a real SIGINT / SIGTERM) and run again: the done stage is not re-run, the stage in progress
finishes its budget exactly, the plan ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hpo.cli import main
from hpo.plan.status import plan_status, plan_status_lines
from hpo.run.budget import budget_of
from hpo.store.record import RERUN_OF, STOP_REASON
from tests.conftest import ROOT, stored_studies
from tests.hpo.plan.plans import stage_attr, stage_trials, write_plan

pytestmark = pytest.mark.slow

TWO_STAGES = """
- name: quick
  training: {epochs: 1}
  budget: {n_trials: 2}
- name: long
  training: {epochs: 1}
  budget: {n_trials: 2}
"""


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_worker_run_and_status_on_a_staged_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default data cache (runs/cache) stays in tmp_path
    path = write_plan(tmp_path, TWO_STAGES)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    code, _, err = _cli(capsys, "worker", path, "--threads", "1", "--no-checkpoints")
    assert code == 2 and "hpo run" in err and "toyplan/quick" in err  # no stage study yet: say what to do

    code, out, _ = _cli(capsys, "create", path)
    assert code == 0 and "created stage study 'toyplan/quick'" in out and "current" in out
    assert stored_studies(tmp_path / "hpo.db") == ["toyplan/quick"]  # only the first stage
    assert stage_attr(tmp_path, "toyplan/quick")["state"] == "running"

    code, out, _ = _cli(capsys, "worker", path, "--threads", "1", "--no-checkpoints")
    assert code == 0 and "serving stage study 'toyplan/quick'" in out
    assert budget_of(stage_trials(tmp_path, "toyplan/quick")).used == 2  # the stage's own budget
    assert stage_attr(tmp_path, "toyplan/quick")["state"] == "running"  # a worker does not decide

    code, out, _ = _cli(capsys, "run", path, "--threads", "1", "--no-checkpoints")
    assert code == 0, out
    assert len(stage_trials(tmp_path, "toyplan/quick")) == 2  # its budget was used: decided, not re-run
    assert budget_of(stage_trials(tmp_path, "toyplan/long")).used == 2
    assert "== stage long (toyplan/long)" in out and "plan ended: the last stage (long) is done" in out
    assert "1. quick" in out and "2. long" in out

    rows = plan_status(url, "toyplan")
    assert [(r["name"], r["study"], r["state"], r["complete"]) for r in rows] == [
        ("quick", "toyplan/quick", "done", 2), ("long", "toyplan/long", "done", 2)]
    assert rows[0]["decision"]["next"] == "long" and rows[1]["decision"]["next"] == "end"
    assert rows[0]["best"] == min(t.value for t in stage_trials(tmp_path, "toyplan/quick"))
    lines = plan_status_lines(url, "toyplan")
    assert lines[0] == "plan toyplan: 2 stage studies"
    assert "toyplan/quick" in lines[1] and "next: long (default)" in lines[1] and "next: end" in lines[2]
    assert plan_status_lines(url, "other") == ["plan other: no stage study in the store yet (`hpo run` creates them)"]

    code, _, err = _cli(capsys, "worker", path, "--threads", "1")
    assert code == 2 and "has ended" in err


def _store_state(url: str) -> tuple[str | None, int]:
    """(stage quick's recorded state, finished trials of stage long), read while `hpo run` writes."""
    import optuna

    from hpo.store.record import STAGE
    from hpo.store.storage import open_storage

    storage = open_storage(url, heartbeat=False)
    names = {s.study_name: s for s in storage.get_all_studies()}
    quick = names.get("toyplan/quick")
    state = (quick.user_attrs.get(STAGE) or {}).get("state") if quick else None
    if "toyplan/long" not in names:
        return state, 0
    trials = optuna.load_study(study_name="toyplan/long", storage=storage).get_trials(deepcopy=False)
    return state, sum(t.state.is_finished() for t in trials)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_resume_in_the_middle_of_a_stage(tmp_path, sig, code):
    path = write_plan(tmp_path, """
        - name: quick
          training: {epochs: 1}
          budget: {n_trials: 2}
        - name: long
          training: {epochs: 80, patience: 1000}   # ~2 s a trial: the signal lands with trials of the stage still to run
          budget: {n_trials: 6}
    """)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "hpo", "run", str(path), "--threads", "1", "--no-checkpoints"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            state, finished = _store_state(url)
            if state == "done" and finished >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "hpo run ended before it could be interrupted:\n" + proc.communicate()[1][-3000:]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    quick_before = stage_trials(tmp_path, "toyplan/quick")
    long_before = stage_trials(tmp_path, "toyplan/long")
    assert budget_of(long_before).used < 6 and stage_attr(tmp_path, "toyplan/long")["state"] == "running"

    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage quick (toyplan/quick): done before" in r.stdout
    quick = stage_trials(tmp_path, "toyplan/quick")
    assert [(t.number, t.state, t.datetime_complete) for t in quick] == [
        (t.number, t.state, t.datetime_complete) for t in quick_before]  # stage 1 not re-run
    long = stage_trials(tmp_path, "toyplan/long")
    assert budget_of(long).used == 6 and not any(t.state.name in ("RUNNING", "WAITING") for t in long)  # exactly
    interrupted = [t for t in long if t.user_attrs.get(STOP_REASON) == "interrupted"]
    assert len(interrupted) <= 1 and all(any(x.user_attrs.get(RERUN_OF) == t.number for x in long) for t in interrupted)
    assert stage_attr(tmp_path, "toyplan/long")["state"] == "done"
    assert "plan ended: the last stage (long) is done" in r.stdout
