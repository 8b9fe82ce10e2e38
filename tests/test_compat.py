"""A store written by the code before the package layout (commit 6075bc6, the flat ``hpo/`` modules) still
works: status, export, report, its checkpoints load and resuming the study with more trials.

``tests/fixtures/store_v1/`` holds what that code wrote for ``toy_v1.yaml``: the SQLite store (4 trials, 2
complete with checkpoints, 2 pruned) and its artifact folder. Nothing in it was rewritten except the space
file's absolute path in the study record, made relative (no machine path in the repository).
"""

import shutil

import optuna
import pytest

from tests.conftest import ROOT, hpo_cli

FIXTURE = ROOT / "tests" / "fixtures" / "store_v1"


@pytest.fixture
def old_store(tmp_path):
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    return tmp_path


def _trials(path):
    return optuna.load_study(study_name="toy_v1", storage=f"sqlite:///{path / 'old.db'}").get_trials()


def test_the_fixture_is_what_the_old_code_wrote(old_store):
    trials = _trials(old_store)
    assert [t.state.name for t in trials].count("COMPLETE") == 2 and len(trials) == 4
    study = optuna.load_study(study_name="toy_v1", storage=f"sqlite:///{old_store / 'old.db'}")
    assert study.user_attrs["fusion_hpo"]["format"] == 1


@pytest.mark.slow
def test_a_store_from_before_the_layout_still_reads_exports_reports_and_loads_its_checkpoints(old_store):
    url = "sqlite:///old.db"
    r = hpo_cli("status", "--storage", url, cwd=old_store)
    assert r.returncode == 0, r.stderr
    assert "toy_v1" in r.stdout and "#0 0.6441" in r.stdout

    r = hpo_cli("export", "toy_v1", "--storage", url, "--out", "best.yaml", cwd=old_store)
    assert r.returncode == 0, r.stderr
    text = (old_store / "best.yaml").read_text()
    assert "trial: 0" in text and "baseline: current" in text and "lr: 0.01" in text

    r = hpo_cli("report", "toy_v1", "--storage", url, "--out", "report.html", cwd=old_store)
    assert r.returncode == 0, r.stderr
    assert "toy_v1" in (old_store / "report.html").read_text()

    # both old checkpoints load (format, recorded sha256, weights_only) and predict what they scored
    from hpo.analysis.trained import load_trial_model

    study = optuna.load_study(study_name="toy_v1", storage=f"sqlite:///{old_store / 'old.db'}")
    with_ckpt = [t for t in study.get_trials() if "checkpoint" in t.user_attrs]
    assert len(with_ckpt) == 2
    for t in with_ckpt:
        task, splits, model = load_trial_model(study, t.number, str(old_store / "artifacts"), cache_dir=str(old_store / "cache"))
        assert sum(p.numel() for p in model.parameters()) == t.user_attrs["n_params"]


@pytest.mark.slow
def test_a_study_from_before_the_layout_resumes_with_more_trials(old_store):
    r = hpo_cli("run", "toy_v1.yaml", "--trials", "6", "--threads", "1", cwd=old_store)
    assert r.returncode == 0, r.stderr
    trials = _trials(old_store)
    assert len(trials) == 6
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert all("config" in t.user_attrs for t in trials[4:])  # the new trials wrote the same record
