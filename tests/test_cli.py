"""The `hpo` command line, run for real in subprocesses against real SQLite files."""

import json
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from tests.conftest import ROOT, hpo_cli


def test_help_is_fast_and_lists_commands():
    t0 = time.monotonic()
    r = hpo_cli("--help")
    assert r.returncode == 0
    for verb in ("run", "worker", "create", "validate", "train", "export", "status", "dashboard"):
        assert verb in r.stdout
    assert time.monotonic() - t0 < 10
    code = "import sys, hpo.cli; hpo.cli.build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'optuna', 'plotly', 'torch_geometric')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout  # heavy imports stay lazy


def test_bad_spec_exits_2_and_writes_nothing(toy_study, tmp_path):
    path = toy_study()
    (tmp_path / "space.yaml").write_text((tmp_path / "space.yaml").read_text().replace("low: 1e-3", "low: 0"))
    for verb in ("validate", "run"):
        r = hpo_cli(verb, path, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines == [f"error: {tmp_path / 'space.yaml'}: params.lr.low: must be > 0 with log: true, but got 0"] or \
            lines == ["error: space.yaml: params.lr.low: must be > 0 with log: true, but got 0"], lines
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "hpo.db").exists()  # nothing written to the store
    assert not (tmp_path / "runs").exists()


def test_unknown_study_in_store(tmp_path):
    r = hpo_cli("export", "nope", "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr and "study must name a known study" in r.stderr


def test_password_in_storage_url_is_refused(toy_study, tmp_path):
    r = hpo_cli("run", toy_study(), "--storage", "postgresql+psycopg://hpo:secret@127.0.0.1:5/db", cwd=tmp_path)
    assert r.returncode == 2 and "password must not be written in the URL" in r.stderr and "secret" not in r.stderr


@pytest.mark.slow
def test_run_export_train_reproduces_the_trial(toy_study, tmp_path):
    path = toy_study(n_trials=4)
    r = hpo_cli("run", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "enqueued baselines: current, single_modality" in r.stdout
    assert r.stdout.count(" | ") >= 4 and "best config:" in r.stdout and "hpo dashboard" in r.stdout
    db = f"sqlite:///{tmp_path / 'hpo.db'}"
    r = hpo_cli("export", "toy", "--storage", db, "--format", "yaml", "--out", "best.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = hpo_cli("train", "--config", "best.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reproduced exactly" in r.stdout, r.stdout
    r = hpo_cli("export", "toy", "--storage", db, "--top", "2", "--format", "json", cwd=tmp_path)
    docs = [json.loads(d) for d in r.stdout.replace("}\n{", "}\n\x00{").split("\x00")]
    assert len(docs) == 2 and docs[0]["source"]["values"]["val_mae"] <= docs[1]["source"]["values"]["val_mae"]
    r = hpo_cli("export", "toy", "--storage", db, "--format", "cli", cwd=tmp_path)
    cmd = r.stdout.strip()
    assert cmd.startswith(f"hpo train {path} -p ") and "--threads" in cmd
    r = hpo_cli("train", *shlex.split(cmd)[2:], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout or "early stopped" in r.stdout
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert f"{best['source']['values']['val_mae']:.6g}" in r.stdout  # the same config, the same result
    r = hpo_cli("status", "--storage", db, cwd=tmp_path)
    assert r.returncode == 0 and "toy" in r.stdout


@pytest.mark.slow
def test_ctrl_c_then_rerun_resumes_without_duplicating_baselines(toy_study, tmp_path):
    path = toy_study(n_trials=5)
    text = path.read_text().replace("training: {epochs: 6, scheduler: cosine}", "training: {epochs: 6, scheduler: cosine, batch_size: 4}")
    path.write_text(text.replace("budget: {n_trials: 5, max_epochs: 6}", "budget: {n_trials: 5, max_epochs: 6}\n"))
    (tmp_path / "space.yaml").write_text((tmp_path / "space.yaml").read_text().replace('batch_size: "2 * hidden"', 'patience: "100 + hidden"'))
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "run", str(path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    db = tmp_path / "hpo.db"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the second trial to be running
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    rows = c.execute("select number, state from trials").fetchall()
                if any(n == 1 and s == "RUNNING" for n, s in rows):
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials()
    interrupted = [t for t in trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state.name == "FAIL"
    assert not any(t.state.name == "RUNNING" for t in trials)

    r = hpo_cli("run", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"re-queued interrupted trials: #{interrupted[0].number}" in r.stdout
    trials = optuna.load_study(study_name="toy", storage=storage).get_trials()
    tags = sorted(t.user_attrs["baseline"] for t in trials if t.user_attrs.get("baseline") and t.state.name != "FAIL")
    assert tags == ["current", "single_modality"]  # each baseline measured once
    rerun = [t for t in trials if t.user_attrs.get("rerun_of") == interrupted[0].number]
    assert len(rerun) == 1 and rerun[0].params == interrupted[0].params and rerun[0].state.name in ("COMPLETE", "PRUNED")
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 5


def test_import_and_help_stay_light():
    heavy = ("torch", "optuna", "ray", "plotly", "pandas", "sqlalchemy")
    code = f"import sys, hpo.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout  # `import hpo.cli` imports no heavy library
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "hpo", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "keys" in r.stdout, r.stderr
    assert time.monotonic() - t0 < 2.0  # `hpo --help` starts in well under a second on an idle machine
