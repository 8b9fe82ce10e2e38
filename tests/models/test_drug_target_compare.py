"""`hpo compare`: the seed's comparison of the standard and the gated DeepBindNet, from a real study."""

import pytest

from tests.conftest import ROOT, hpo_cli

pytestmark = pytest.mark.slow


def test_compare_standard_and_gated_trials(tmp_path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    r = hpo_cli("run", ROOT / "studies" / "smoke" / "drug_target.yaml", "--storage", db, "--artifacts", tmp_path / "art", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[gated]" in r.stdout and "[standard]" in r.stdout  # both models measured in the study
    import optuna

    trials = optuna.load_study(study_name="smoke-drug-target", storage=db).get_trials()
    tag = {t.user_attrs.get("baseline"): t.number for t in trials}
    out = tmp_path / "cmp.html"
    r = hpo_cli("compare", "smoke-drug-target", tag["standard"], tag["gated"], "--storage", db,
                "--artifacts", tmp_path / "art", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    html = out.read_text()
    for needle in ("Predicted vs true", "rror", "improvement"):
        assert needle.lower() in html.lower(), needle
    assert "improvement rmse:" in r.stdout and "%" in r.stdout
