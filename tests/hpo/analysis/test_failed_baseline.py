"""A failed baseline is reported as such: the report's "plans vs tuned" table names it with its failure,
instead of leaving the plan out (a real toy study whose baseline crashes, real SQLite)."""

from __future__ import annotations

from tests.conftest import TOY_SPACE

CRASHING = TOY_SPACE.replace("  single_modality: {extends: current, use_second_modality: false}",
                             "  single_modality: {extends: current, use_second_modality: false}\n  broken: {extends: current, depth: 0}")


def test_a_failed_baseline_is_in_the_report_with_its_failure(toy_study, tmp_path, monkeypatch):
    from hpo.analysis.report import build_report
    from hpo.analysis.view import StudyView, plans_vs_tuned
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.store.stored import load_stored_study

    monkeypatch.chdir(tmp_path)
    study = load_study(toy_study(n_trials=4, space=CRASHING))
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    ostudy = load_stored_study(study.storage_url(), study.name)
    rows = {r["plan"]: r for r in plans_vs_tuned(StudyView(ostudy))}
    assert set(rows) == {"current", "single_modality", "broken"}
    assert rows["broken"]["state"].startswith("FAIL: ") and rows["broken"]["value"] is None
    assert rows["current"]["state"] == "COMPLETE"
    page = build_report(ostudy, str(tmp_path / "r.html"), "sqlite")
    text = open(page).read()
    assert "broken" in text and "FAIL: " in text
