"""Every model family's smoke study, end to end through the real command line on CPU:
validate -> run (some trials pruned) -> export -> train the exported config (same metrics)."""

import shutil

import optuna
import pytest
import yaml

from tests.conftest import ROOT, hpo_cli

pytestmark = pytest.mark.slow

SMOKE = sorted(p.name for p in (ROOT / "studies" / "smoke").glob("*.yaml"))


@pytest.mark.parametrize("name", SMOKE)
def test_smoke_study_end_to_end(name, tmp_path):
    src = ROOT / "studies" / "smoke" / name
    study_file = tmp_path / "studies" / "smoke" / name
    study_file.parent.mkdir(parents=True)
    shutil.copy(src, study_file)
    text = src.read_text()
    for line in text.splitlines():  # a space file named by the study travels with it
        if line.startswith("space:") and line.split(":", 1)[1].strip().endswith(".yaml"):
            rel = line.split(":", 1)[1].strip()
            (study_file.parent / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy((src.parent / rel).resolve(), (study_file.parent / rel).resolve())
    db = f"sqlite:///{tmp_path / 'smoke.db'}"
    assert hpo_cli("validate", study_file, cwd=tmp_path).returncode == 0
    r = hpo_cli("run", study_file, "--storage", db, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    study_name = yaml.safe_load(text)["name"]
    trials = optuna.load_study(study_name=study_name, storage=db).get_trials()
    states = [t.state.name for t in trials]
    assert "COMPLETE" in states and "RUNNING" not in states
    assert states.count("FAIL") == 0, [t.user_attrs.get("stop_detail") for t in trials if t.state.name == "FAIL"]
    seconds = sum(t.user_attrs.get("seconds", 0) for t in trials)
    assert seconds < 120, f"smoke trials took {seconds:.0f}s of training"
    r = hpo_cli("export", study_name, "--storage", db, "--out", "best.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = hpo_cli("train", "--config", "best.yaml", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reproduced exactly" in r.stdout, r.stdout[-2000:]
