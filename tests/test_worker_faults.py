"""Workers survive each other, signals and partial failures (issue #13, item 6, worker side).

Real `hpo` processes on real SQLite files, real signals (SIGKILL, SIGINT, SIGTERM), a real full
filesystem (a tiny tmpfs) and real files on disk; nothing here is mocked.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
import pytest

from hpo.run.budget import budget_of
from models.toy.task import ToyTask
from tests.conftest import ROOT, fault_study, hpo_cli


# ------------------------------------------------------------------------------ helpers
class SlowValToy(ToyTask):
    """The toy task whose validation pass is long (one second per batch) when HPO_TEST_SLOW_VAL is
    set, and which touches the file named by HPO_TEST_VAL_MARK when a validation pass has begun:
    a stand-in for a DeepDTA fold of 20k pairs, with a moment the test can see. While the file
    named by HPO_TEST_GATE exists, each validation batch takes 0.15 s (a supervisor's pace: trials
    last long enough to be killed in, whatever the machine's load)."""

    def step(self, model, batch, *, train):
        if not train and os.environ.get("HPO_TEST_SLOW_VAL"):
            mark = os.environ.get("HPO_TEST_VAL_MARK")
            if mark:
                Path(mark).touch()
            time.sleep(1.0)
        elif not train and os.environ.get("HPO_TEST_GATE") and os.path.exists(os.environ["HPO_TEST_GATE"]):
            time.sleep(0.15)
        return super().step(model, batch, train=train)


def _study_file(tmp_path: Path, name: str, n: int, *, epochs: int = 12, batch_size: int = 8, n_samples: int = 512,
                family: str = "toy", max_retry: int = 3, extra: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(fault_study(name=name, n=n, epochs=epochs, batch_size=batch_size, n_samples=n_samples, family=family,
                             storage=f"sqlite:///{tmp_path / 'hpo.db'}", artifacts=tmp_path / "artifacts", max_retry=max_retry)
                 + textwrap.dedent(extra))
    return p


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hpo.db'}"


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_TEST_")}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1", **(extra or {})}


def _worker(path: Path, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(path), "--threads", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(env))


def _communicate(proc: subprocess.Popen, timeout: float, url: str, name: str) -> tuple[str, str]:
    """Wait for a worker; if it hangs, show where (faulthandler dumps every thread on SIGABRT)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        states = [(t.number, t.state.name, t.user_attrs.get("worker"), t.user_attrs.get("stop_reason")) for t in _trials(url, name)]
        raise AssertionError(f"worker {proc.pid} hung; trials: {states}\n{err[-12000:]}") from None


def _trials(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url)).get_trials()


def _wait(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def _by(proc: subprocess.Popen):
    return lambda t: t.user_attrs.get("worker", "").endswith(f":{proc.pid}")


def _running_with_config(url: str, name: str, proc: subprocess.Popen):
    def find():
        for t in _trials(url, name):
            if t.state.name == "RUNNING" and _by(proc)(t) and "config" in t.user_attrs:
                return t
        return None

    return find


def _assert_whole(t) -> None:
    """A COMPLETE trial's record: config, curves, metrics, value, checkpoint."""
    assert t.user_attrs["config"] and t.user_attrs["metrics"]["val_mae"] == t.value, t.number
    curves = t.user_attrs["curves"]
    assert len(curves["val_mae"]) == len(curves["train_mae"]) == t.user_attrs["epochs_run"] > 0, t.number
    assert t.user_attrs.get("checkpoint") or t.user_attrs.get("checkpoint_error"), t.number


# ------------------------------------------------------------------------------ 1. a trial failed by another worker
@pytest.mark.slow
def test_a_trial_failed_by_another_worker_is_dropped_and_the_worker_serves_the_next(tmp_path, report_figures):
    """Another worker's stale-heartbeat check (during a store outage) fails this worker's running
    trial and re-queues it. The worker must drop its result with one line and go on: today
    ``ValueError: Cannot tell a FAIL trial`` -> ``AssertionError: Should not reach`` kills it."""
    n = 4
    path = _study_file(tmp_path, "dropped", n, epochs=25)
    url = _url(tmp_path)
    assert hpo_cli("create", path, cwd=tmp_path).returncode == 0
    w = _worker(path, tmp_path)
    victim = _wait(_running_with_config(url, "dropped", w), 180, "the worker to be mid-trial")
    # what another worker's optuna.storages.fail_stale_trials does: FAIL it, then the retry callback
    other = optuna.storages.RDBStorage(url)
    assert other.set_trial_state_values(victim._trial_id, optuna.trial.TrialState.FAIL)
    ostudy = optuna.load_study(study_name="dropped", storage=other)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(ostudy, other.get_trial(victim._trial_id))
    out, err = w.communicate(timeout=300)
    assert w.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Should not reach" not in err
    dropped_lines = [line for line in err.splitlines() if "drops its result" in line]
    assert len(dropped_lines) == 1 and f"#{victim.number}" in dropped_lines[0], err[-3000:]
    trials = _trials(url, "dropped")
    states = [t.state.name for t in trials]
    retry = [t for t in trials if victim.number in t.system_attrs.get("retry_history", [])]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state.name == "COMPLETE"
    assert retry[0].user_attrs["worker"] == victim.user_attrs["worker"]  # the same worker served the next trials
    assert states.count("COMPLETE") == n and states.count("RUNNING") == 0 and budget_of(trials).used == n
    for t in trials:
        if t.state.name == "COMPLETE":
            _assert_whole(t)
    report_figures("a trial failed by another worker mid-trial (SQLite)", {
        "asked": n, "completed": states.count("COMPLETE"), "dropped": len(dropped_lines), "worker_exit": w.returncode})


# ------------------------------------------------------------------------------ 2. SIGKILL ten random workers
KILL_KINDS = ("start-up", "mid-trial", "mid-epoch", "between trials")


@pytest.mark.slow
def test_sigkill_of_ten_random_workers_loses_nothing(tmp_path, report_figures):
    """Two workers serve a study; ten times a seeded random one is SIGKILLed at a seeded random
    moment (while starting, early in a trial, late in a trial, between two trials) and a supervisor
    starts a replacement. Every worker that was not killed exits 0; exactly N trials COMPLETE, none
    RUNNING, every record whole."""
    rng = random.Random(20261201)
    n, name = 40, "chaos"
    path = _study_file(tmp_path, name, n, epochs=6, max_retry=50, family="tests.test_worker_faults:SlowValToy")
    url = _url(tmp_path)
    assert hpo_cli("create", path, cwd=tmp_path).returncode == 0
    gate = tmp_path / "gate"  # while it exists, trials last ~9 s: the study cannot end before the ten kills
    gate.touch()
    env = {"HPO_TEST_GATE": str(gate)}
    t0 = time.monotonic()
    alive = [_worker(path, tmp_path, env), _worker(path, tmp_path, env)]
    kinds = list(KILL_KINDS * 3)[:10]
    rng.shuffle(kinds)
    killed: list[tuple[str, subprocess.Popen, str]] = []  # (kind, process, what the store showed)

    def complete() -> int:
        return sum(t.state.name == "COMPLETE" for t in _trials(url, name))

    for kind in kinds:
        assert complete() < n, f"the study ended after {len(killed)} kills: make it longer"
        if kind == "start-up":  # an extra worker, killed while it imports, checks the data, opens the store
            w = _worker(path, tmp_path, env)
            time.sleep(rng.uniform(0.05, 3.0))
            saw = "started" if any(_by(w)(t) for t in _trials(url, name)) else "no trial yet"
            w.send_signal(signal.SIGKILL)
            w.wait(timeout=30)
            killed.append((kind, w, saw))
            continue
        victim = rng.choice(alive)
        if kind in ("mid-trial", "mid-epoch"):
            running = _wait(_running_with_config(url, name, victim), 240, f"worker {victim.pid} to be mid-trial")
            time.sleep(rng.uniform(0.0, 0.3) if kind == "mid-trial" else rng.uniform(0.5, 1.5))
            saw = f"trial #{running.number} running"
        else:  # between trials: just after one of its trials finished, before the next one trains
            # A trial's config is stored with its parameters in the transaction right after ask, so the
            # moment "finished, nothing asked" lasts milliseconds and a poll rarely sees it (the study
            # once ended while the test waited for it). The phase is: a new trial finished and the next
            # one, if already asked, has not reported an epoch. The kill lands within one poll of it.
            done_before = {t.number for t in _trials(url, name) if _by(victim)(t) and t.state.is_finished()}
            phase = {}

            def finished_one():
                ts = _trials(url, name)
                new = [t for t in ts if _by(victim)(t) and t.state.is_finished() and t.number not in done_before]
                nxt = [t for t in ts if _by(victim)(t) and t.state.name == "RUNNING"]
                phase["asked"] = bool(nxt)
                return new and not any(t.intermediate_values for t in nxt)

            _wait(finished_one, 240, f"worker {victim.pid} to finish a trial", poll=0.02)
            saw = "between trials, next asked" if phase["asked"] else "between trials, nothing asked"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        killed.append((kind, victim, saw))
        alive.remove(victim)
        alive.append(_worker(path, tmp_path, env))  # the supervisor's replacement

    gate.unlink()  # full speed to the end of the budget
    results = [(w, *_communicate(w, 300, url, name)) for w in alive]
    wall = time.monotonic() - t0
    for w, _, err in results:
        assert w.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    trials = _trials(url, name)
    states = [t.state.name for t in trials]
    b = budget_of(trials)
    retried = [t for t in trials if t.system_attrs.get("retry_history")]
    figures = {"asked": n, "kills": len(killed), **{f"kills_{k.replace(' ', '_').replace('-', '_')}": sum(x[0] == k for x in killed)
                                                     for k in KILL_KINDS},
               "kills_hitting_a_running_trial": sum("running" in x[2] for x in killed),
               "completed": states.count("COMPLETE"), "running_left": states.count("RUNNING"),
               "failed_and_retried": len(retried), "surplus": sum(t.user_attrs.get("stop_reason") == "surplus" for t in trials),
               "surviving_workers_exit_0": sum(w.returncode == 0 for w, _, _ in results), "seconds": round(wall, 1)}
    report_figures("SIGKILL of 10 random workers at random moments (SQLite, 2 workers + replacements)", figures)
    assert len(killed) == 10 and all(w.returncode == -signal.SIGKILL for _, w, _ in killed)
    assert figures["running_left"] == 0 and figures["completed"] == n and b.used == n and b.failed == 0
    for t in trials:
        if t.state.name == "COMPLETE":
            _assert_whole(t)
            assert (tmp_path / "artifacts" / t.user_attrs["checkpoint"]).exists()
        else:  # a killed worker's trial, failed by the others' heartbeat check and run again
            assert t.state.name == "FAIL" and (any(t.number in r.system_attrs["retry_history"] for r in retried)
                                               or t.user_attrs.get("stop_reason") == "surplus"), t.number


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_requeued(tmp_path):
    """A RUNNING trial without a heartbeat row (its worker was killed between Optuna's ``ask`` and its first
    beat: stock Optuna, or a worker of a version before trials were created with their first beat): Optuna's
    stale check skips it forever and the others wait for it without end (a hang found by the SIGKILL test).
    It is failed and re-queued once it is old enough; a trial just asked is left alone."""
    import datetime

    import sqlite3

    from hpo.store.rdb import fail_stale as _fail_stale
    from hpo.store.storage import open_storage

    url = f"sqlite:///{tmp_path / 'hb.db'}"
    ostudy = optuna.create_study(study_name="hb", storage=open_storage(url, heartbeat=True, heartbeat_interval=1,
                                                                       grace_period=2, max_retry=3))
    orphan = ostudy.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    fresh = ostudy.ask()
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=60)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(tmp_path / "hb.db") as c:  # it started a minute ago and never beat
        c.execute("update trials set datetime_start = ? where trial_id = ?", (old, orphan._trial_id))
        # this storage writes a trial's first beat with its creation: take both beats away, as the creating
        # worker of such a trial never wrote one
        c.execute("delete from trial_heartbeats where trial_id in (?, ?)", (orphan._trial_id, fresh._trial_id))
    _fail_stale(ostudy)
    trials = {t.number: t for t in _trials(url, "hb")}
    assert trials[orphan.number].state.name == "FAIL" and trials[fresh.number].state.name == "RUNNING"
    (retry,) = [t for t in trials.values() if t.state.name == "WAITING"]
    assert retry.params == trials[orphan.number].params and retry.system_attrs["retry_history"] == [orphan.number]
    _fail_stale(ostudy)  # once
    assert sum(t.state.name == "WAITING" for t in _trials(url, "hb")) == 1


# ------------------------------------------------------------------------------ 3. one sampler seed per worker
def test_sampler_seeds_hpo_run_keeps_the_study_seed_workers_get_their_own(toy_study):
    from hpo.search import build_sampler, sampler_seed
    from hpo.spec import load_study

    study = load_study(toy_study())
    assert sampler_seed(study, 0) == 3 and sampler_seed(study, 2) == 5  # `hpo run`: seed + worker, as before
    derived = {sampler_seed(study, None, identity=f"host:{pid}") for pid in range(200)}
    assert len(derived) == 200 and 3 not in derived
    assert sampler_seed(study, None, identity="h:1") == sampler_seed(study, None, identity="h:1")  # derived, not random
    assert sampler_seed(study, None) != sampler_seed(study, None)  # this process's identity includes its start time
    assert build_sampler(study, 0) is not None


@pytest.mark.slow
def test_two_hpo_worker_processes_never_sample_the_same_trial(tmp_path, report_figures):
    n, name = 8, "seeds"
    path = _study_file(tmp_path, name, n, epochs=8)
    url = _url(tmp_path)
    assert hpo_cli("create", path, cwd=tmp_path).returncode == 0
    a, b = _worker(path, tmp_path), _worker(path, tmp_path)
    for w in (a, b):
        _, err = w.communicate(timeout=400)
        assert w.returncode == 0, err[-3000:]
    trials = [t for t in _trials(url, name) if t.state.name == "COMPLETE"]
    assert len(trials) == n
    by_worker = {t.user_attrs["worker"] for t in trials}
    assert len(by_worker) == 2, "both workers must have served trials for the test to mean anything"
    params = [(t.params["lr"], t.params["hidden"]) for t in trials]
    assert len(set(params)) == n, params  # today both workers draw the same sequence: trial k of A == trial k of B
    seeds = {t.user_attrs["worker"]: t.user_attrs["sampler_seed"] for t in trials}
    assert len(set(seeds.values())) == 2  # recorded, and distinct
    report_figures("two `hpo worker` processes, random sampler", {"trials": n, "distinct_params": len(set(params)),
                                                                 "distinct_sampler_seeds": len(set(seeds.values()))})


# ------------------------------------------------------------------------------ 4. SIGINT / SIGTERM mid-validation
@pytest.mark.slow
def test_sigint_and_sigterm_mid_validation_stop_within_seconds_and_the_study_resumes(tmp_path, report_figures):
    """A validation pass of 24 one-second batches: the signal lands in it, the run stops within a few
    seconds (today: at the end of the pass, then Optuna's traceback; SIGTERM left the trial RUNNING),
    one line, exit 130 / 143, the trial recorded as interrupted; a third run finishes the budget."""
    n, name = 2, "sig"
    path = _study_file(tmp_path, name, n, epochs=2, batch_size=1, n_samples=160,
                       family="tests.test_worker_faults:SlowValToy")
    url = _url(tmp_path)
    mark = tmp_path / "validating"
    figures = {}
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        mark.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "run", str(path), "--threads", "1"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env({"HPO_TEST_SLOW_VAL": "1", "HPO_TEST_VAL_MARK": str(mark)}))
        _wait(mark.exists, 240, "the validation pass to begin")
        time.sleep(1.5)  # well inside the 24 s pass
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
        figures[f"{sig.name}_seconds_to_stop"] = round(took, 2)
        assert proc.returncode == code, err[-3000:]
        assert took < 8.0, f"{sig.name} took {took:.1f}s to take effect"
        assert "Traceback" not in err, err[-3000:]
        lines = [line for line in err.splitlines() if "interrupted" in line or "stopped by" in line]
        assert len(lines) == 1, err[-3000:]
        trials = _trials(url, name)
        assert not any(t.state.name == "RUNNING" for t in trials)
        last = max(trials, key=lambda t: t.number)
        assert last.state.name == "FAIL" and last.user_attrs["stop_reason"] == "interrupted"
    r = hpo_cli("run", path, "--threads", "1", cwd=tmp_path, env={"HPO_TEST_SLOW_VAL": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    trials = _trials(url, name)
    interrupted = [t for t in trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert len(interrupted) == 2
    assert sum(t.state.name == "COMPLETE" for t in trials) == n and budget_of(trials).used == n
    rerun = [t for t in trials if t.user_attrs.get("rerun_of") == interrupted[-1].number]
    assert len(rerun) == 1 and rerun[0].params == interrupted[0].params and rerun[0].state.name == "COMPLETE"
    report_figures("Ctrl-C and SIGTERM mid-validation (24 s pass)", figures)


@pytest.mark.slow
def test_sigterm_to_hpo_run_with_two_workers_stops_both_trials_cleanly(tmp_path):
    """SIGTERM reaches only the parent (unlike Ctrl-C, which the terminal sends to the whole group):
    it must pass it on, so both workers record their trials as interrupted. Today the parent dies
    at once and its workers' trials stay RUNNING."""
    name = "term2"
    path = _study_file(tmp_path, name, 20, epochs=60)
    url = _url(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "run", str(path), "--workers", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())

    def two_training():
        if not (tmp_path / "hpo.db").exists():
            return False
        try:
            return sum(t.state.name == "RUNNING" and "config" in t.user_attrs for t in _trials(url, name)) == 2
        except (KeyError, optuna.exceptions.StorageInternalError):  # not created yet
            return False
        except sqlalchemy.exc.OperationalError as e:  # this reader and `hpo run` both created the empty schema
            if "already exists" in str(e):
                return False
            raise

    _wait(two_training, 240, "both workers to be mid-trial", poll=0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    trials = _trials(url, name)
    assert not any(t.state.name == "RUNNING" for t in trials)
    interrupted = [t for t in trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert len(interrupted) == 2 and all(t.state.name == "FAIL" for t in interrupted)
    assert len({t.user_attrs["worker"] for t in interrupted}) == 2


# ------------------------------------------------------------------------------ 5. a failed checkpoint write
CKPT_SPACE = """
space:
  params:
    lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  fixed: {hidden: 512, depth: 2}
"""


def _ckpt_study(tmp_path: Path, artifacts: Path, n: int = 3):
    from hpo.spec import load_study

    text = fault_study(name="ckpt", n=n, epochs=2, batch_size=32, n_samples=160, storage=f"sqlite:///{tmp_path / 'hpo.db'}",
                       artifacts=artifacts)
    head, _, tail = text.partition("space:")
    tail = tail.split("objectives:", 1)[1]
    path = tmp_path / "ckpt.yaml"
    path.write_text(head + textwrap.dedent(CKPT_SPACE).strip() + "\nobjectives:" + tail)
    return load_study(path)


def _ckpt_trials(tmp_path):
    return _trials(_url(tmp_path), "ckpt")


@pytest.mark.slow
def test_a_full_disk_at_checkpoint_time_keeps_the_trials_result_and_leaves_no_partial_file(tmp_path, report_figures):
    """The artifact folder is a 1 MiB tmpfs; each checkpoint is ~2 MiB: the write fails half-way
    with ENOSPC. Today the finished trial becomes FAIL with no metrics and a partial file stays."""
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tiny tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(artifacts)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        study = _ckpt_study(tmp_path, artifacts)
        summary = run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
        trials = _ckpt_trials(tmp_path)
        left = sorted(p.name for p in artifacts.iterdir())
    finally:
        subprocess.run(["umount", str(artifacts)], check=False)
    assert summary.budget.complete == 3 and summary.budget.failed == 0
    for t in trials:
        assert t.state.name == "COMPLETE" and t.value == t.user_attrs["metrics"]["val_mae"]
        assert "checkpoint" not in t.user_attrs and "No space left on device" in t.user_attrs["checkpoint_error"]
        assert not any(k.startswith("artifacts:") for k in t.system_attrs)  # no record of a file that is not there
    assert left == []  # no partial file
    report_figures("checkpoint writes on a full disk", {"trials": len(trials), "complete": summary.budget.complete,
                                                          "partial_files_left": len(left)})


@pytest.mark.slow
def test_an_artifact_folder_that_became_a_file_keeps_the_trials_result(tmp_path):
    """Works as root too: after the first trial the artifact folder is replaced by a regular file
    (a lost share, a clean-up script): later checkpoints cannot be written; the trials stay COMPLETE."""
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions

    artifacts = tmp_path / "artifacts"
    study = _ckpt_study(tmp_path, artifacts)

    def break_folder(ostudy, t):
        if artifacts.is_dir():
            shutil.rmtree(artifacts)
            artifacts.write_text("not a folder\n")

    summary = run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")), on_trial=break_folder)
    trials = _ckpt_trials(tmp_path)
    assert summary.budget.complete == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert trials[0].user_attrs.get("checkpoint") and "checkpoint_error" not in trials[0].user_attrs
    for t in trials[1:]:
        assert "checkpoint" not in t.user_attrs and "NotADirectoryError" in t.user_attrs["checkpoint_error"]
        assert t.user_attrs["metrics"]["val_mae"] == t.value and t.user_attrs["curves"]["val_mae"]


# ------------------------------------------------------------------------------ 6. corrupt cache entries
def _entry(root: Path) -> Path:
    (path,) = list(root.rglob("*.pkl"))
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty", "not a cache file"])
def test_a_corrupt_cache_entry_is_detected_and_rebuilt_once(tmp_path, caplog, damage):
    import pickle

    from hpo.data.cache import DataCache

    builds = []

    def build():
        builds.append(1)
        return {"ids": list(range(5000)), "name": "x" * 100}

    want = build()
    builds.clear()
    assert DataCache(tmp_path).get_or_build("ns", {"k": 1}, build) == want and len(builds) == 1
    path = _entry(tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbled":  # same length, one byte of the payload changed: still unpickles, wrongly
        i = len(data) - 200
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(pickle.dumps({"something": "else"}))
    cache = DataCache(tmp_path)
    with caplog.at_level("WARNING", logger="hpo.data.cache"):
        assert cache.get_or_build("ns", {"k": 1}, build) == want
    assert len(builds) == 2 and cache.stats.rebuilt == 1 and cache.stats.misses == 1
    assert any("corrupt" in r.message and "rebuilding" in r.message for r in caplog.records)
    again = DataCache(tmp_path)  # rebuilt once: the new entry is whole
    assert again.get_or_build("ns", {"k": 1}, build) == want and len(builds) == 2 and again.stats.disk_hits == 1


@pytest.mark.slow
def test_a_study_with_a_truncated_cache_entry_goes_on(toy_study, tmp_path):
    """Today a truncated entry failed every trial until max_consecutive_failures stopped the study."""
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    path = toy_study(n_trials=1)
    opts = RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False)
    run_study(load_study(path), opts)
    entry = _entry(tmp_path / "cache")
    entry.write_bytes(entry.read_bytes()[:100])
    summary = run_study(load_study(path, ["budget.n_trials=3"]), opts)
    assert summary.budget.failed == 0 and summary.budget.used == 3 and summary.budget.complete + summary.budget.pruned == 3
    from hpo.data.cache import _read_entry

    assert _read_entry(_entry(tmp_path / "cache")) is not None  # rebuilt whole on disk


# ------------------------------------------------------------------------------ 7. same name, different spec
def test_spec_changes_name_what_differs_and_ignore_the_budget():
    from hpo.run.study import spec_changes

    base = {"name": "s", "task": {"family": "toy", "dataset": {"n_samples": 160}}, "objectives": ["val_mae"],
            "space": {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}}, "baselines": {}},
            "budget": {"n_trials": 5}, "training": {"epochs": 6}}

    def changed(**kw):
        import copy

        new = copy.deepcopy(base)
        for dotted, value in kw.items():
            node = new
            *parts, last = dotted.split("__")
            for p in parts:
                node = node[p]
            node[last] = value
        return spec_changes(base, new)

    assert changed(budget={"n_trials": 50}, training={"epochs": 9}, sampler={"type": "random"}) == []
    assert changed(space__baselines={"plan2": {"lr": 2e-3}}) == []  # a new baseline is enqueued, not a new study
    assert changed(objectives=[{"metric": "val_mae", "direction": "minimize"}]) == []  # same metric, spelled out
    assert changed(objectives=["val_rmse"]) == ['objectives: stored ["val_mae"], this file ["val_rmse"]']
    assert changed(task__dataset={"n_samples": 999}) == ["task.dataset.n_samples: stored 160, this file 999"]
    assert changed(task__family="traffic") == ['task.family: stored "toy", this file "traffic"']
    assert changed(space__params={"lr": {"type": "float", "low": 1e-3, "high": 1e-1}}) == \
        ["space.params.lr.high: stored 0.01, this file 0.1"]
    assert changed(space__params={"dropout": [0.0, 0.1]})[0].startswith("space.params.lr: stored")
    assert spec_changes(None, base) == []  # a study created elsewhere: nothing to compare


@pytest.mark.slow
def test_a_second_study_file_with_the_same_name_is_refused_unless_asked(toy_study, tmp_path):
    path = toy_study(n_trials=1)
    r = hpo_cli("create", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    stored = optuna.load_study(study_name="toy", storage=optuna.storages.RDBStorage(url))
    record = stored.user_attrs["fusion_hpo"]
    n_before = len(stored.trials)
    other = tmp_path / "other.yaml"  # another file, the same name: val_rmse instead of val_mae, more data
    other.write_text(path.read_text().replace("objectives: [val_mae]", "objectives: [val_rmse]")
                     .replace("n_samples: 160", "n_samples: 200"))
    for cmd in (["run", other], ["worker", other], ["create", other]):
        r = hpo_cli(*cmd, cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert line.startswith(f"error: {other}: name: a study named 'toy' exists in"), line
        assert 'objectives: stored ["val_mae"], this file ["val_rmse"]' in line and "task.dataset.n_samples" in line
        assert "--resume-changed" in line and "Traceback" not in r.stderr
    again = optuna.load_study(study_name="toy", storage=optuna.storages.RDBStorage(url))
    assert len(again.trials) == n_before and again.user_attrs["fusion_hpo"] == record  # nothing written
    # only the budget (and training defaults) changed: resuming with --trials goes on as before
    budget_only = tmp_path / "more.yaml"
    budget_only.write_text(path.read_text().replace("training: {epochs: 6, scheduler: cosine}", "training: {epochs: 4, scheduler: cosine}"))
    r = hpo_cli("run", budget_only, "--trials", "2", "--no-checkpoints", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # asked for explicitly: the stored study goes on with the new spec
    r = hpo_cli("run", other, "--resume-changed", "--trials", "3", "--no-checkpoints", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    final = optuna.load_study(study_name="toy", storage=optuna.storages.RDBStorage(url))
    assert final.user_attrs["fusion_hpo"]["spec"]["objectives"] == ["val_rmse"]
    assert budget_of(final.trials).used == 3


# ------------------------------------------------------------------------------ two first runs at once
CREATE_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hpo.run.study import create_or_load, prepare
    from hpo.spec import load_study
    study_file, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    study = load_study(study_file)
    ostudy = create_or_load(study, study.storage_url(), study.name)
    ostudy.get_trials()
    ready.touch()  # everything imported, the study created or loaded: now all prepare at one moment
    while not go.exists():
        time.sleep(0.001)
    print(prepare(study, ostudy)["enqueued_baselines"])
""")


def _prepare_at_once(path: Path, workdir: Path, n: int) -> int:
    """n processes create/load the study, then call prepare() at one moment; the baselines each enqueued."""
    barrier = workdir / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_AT_ONCE, str(path), str(barrier / f"ready{i}"), str(barrier / "go")],
                              cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for i in range(n)]
    deadline = time.monotonic() + 240
    while len(list(barrier.glob("ready*"))) < n and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    (barrier / "go").touch()
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), [e[-2000:] for _, _, e in results]
    return [ast.literal_eval(out.strip().splitlines()[-1]) for _, out, _ in results]


@pytest.mark.slow
def test_two_first_runs_at_once_enqueue_each_baseline_once(toy_study, tmp_path, report_figures):
    """Real processes started at one moment on a fresh store (the study has two baselines): whoever
    enqueued, each baseline is trained once; the later copies are recorded as surplus, not trained.
    (On a loaded machine the processes may not overlap: then the race is tried again on a fresh store.)"""
    for attempt in range(5):
        workdir = tmp_path / f"attempt{attempt}"
        workdir.mkdir()
        path = toy_study(n_trials=4).rename(workdir / "toy.yaml")
        (tmp_path / "space.yaml").rename(workdir / "space.yaml")
        path.write_text(path.read_text().replace(str(tmp_path / "hpo.db"), str(workdir / "hpo.db")))
        enqueued = _prepare_at_once(path, workdir, 4)
        enqueuers = sum(bool(names) for names in enqueued)
        if enqueuers >= 2:
            break
    assert enqueuers >= 2, "the processes never raced: the test proves nothing"
    assert hpo_cli("run", path, cwd=workdir).returncode == 0
    trials = optuna.load_study(study_name="toy", storage=f"sqlite:///{workdir / 'hpo.db'}").get_trials()
    trained = [t.user_attrs["baseline"] for t in trials if t.user_attrs.get("baseline") and t.user_attrs.get("stop_reason") != "surplus"]
    surplus = [t for t in trials if t.user_attrs.get("stop_reason") == "surplus"]
    report_figures("two first runs at once", {"processes": 4, "enqueued": enqueuers, "duplicates dropped": len(surplus),
                                              "attempts": attempt + 1})
    assert sorted(trained) == ["current", "single_modality"]
    assert all(t.state.name == "FAIL" and "config" not in t.user_attrs for t in surplus)  # never trained
    copies = sum(len(names) for names in enqueued)  # a process may have seen some baselines already there
    assert len(surplus) == copies - 2
    assert budget_of(trials).used == 4


def test_a_retry_queued_after_the_budget_was_used_up_is_recorded_not_left_waiting(tmp_path):
    """The race the 10-SIGKILL test hit once in CI: a worker dies in a trial that started while the budget had
    room; the others fill the budget meanwhile; the dead trial is failed and re-queued. The budget is used up,
    so no worker runs the copy: it must not stay WAITING in a finished study. It is recorded FAIL ``surplus``
    (not trained, not counted) by the worker that sees the budget used up, and the budget stays exact."""
    path = _study_file(tmp_path, "late", 2, epochs=2, n_samples=64)
    r = hpo_cli("run", str(path), "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="late", storage=_url(tmp_path))
    done = study.get_trials()
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"]
    # the dead worker's trial as the heartbeat check leaves it: FAIL, and a WAITING copy with Optuna's retry attrs
    dead = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=done[0].params,
                                     distributions=done[0].distributions)
    study.add_trial(dead)
    dead_number = study.get_trials()[-1].number
    study.enqueue_trial(done[0].params)
    copy = study.get_trials()[-1]
    study._storage.set_trial_system_attr(copy._trial_id, "failed_trial", dead_number)
    study._storage.set_trial_system_attr(copy._trial_id, "retry_history", [dead_number])
    assert copy.state.name == "WAITING"

    r = hpo_cli("worker", str(path), "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="late", storage=_url(tmp_path)).get_trials()
    assert [t.state.name for t in trials].count("WAITING") == 0
    late = trials[copy.number]
    assert late.state.name == "FAIL" and late.user_attrs["stop_reason"] == "surplus"
    assert f"retry of trial #{dead_number}" in late.user_attrs["stop_detail"]
    b = budget_of(trials)
    assert b.used == 2 and b.complete == 2 and b.rejected == 1 and b.rerun == 1
