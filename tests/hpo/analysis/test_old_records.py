"""A study written by the code before records carried a format (built with plain Optuna) still exports,
reports, narrows and goes to the dashboard."""

import pytest

from hpo.analysis.dashboard import publish_to_dashboard
from hpo.analysis.export import exported, select_trials
from hpo.plan.narrow import narrow_space
from hpo.analysis.report import build_report
from hpo.errors import UsageError
from hpo.store.stored import load_stored_study
from tests.hpo.analysis.old_study import OLD_RECORD, old_study


@pytest.fixture
def old(tmp_path):
    url, _ = old_study(tmp_path / "old.db")
    return url, load_stored_study(url, "old")


def test_export_of_an_old_record(old):
    url, ostudy = old
    [best] = select_trials(ostudy)
    doc = exported(ostudy, best, url)
    assert doc["source"]["trial"] == 3 and doc["source"]["values"] == {"val_mae": 0.20}
    assert doc["source"]["study_file"] == "studies/old.yaml" and doc["source"]["threads"] == 1
    assert doc["task"] == {"family": "toy", "dataset": OLD_RECORD["dataset"]}
    assert doc["objectives"] == [{"metric": "val_mae", "direction": "minimize"}]
    assert doc["config"]["seed"] == 3
    base = exported(ostudy, ostudy.trials[0], url)
    assert base["source"]["baseline"] == "current" and base["source"]["overrides"] == {}


def test_report_of_an_old_record(old, tmp_path):
    _, ostudy = old
    html = build_report(ostudy, tmp_path / "old.html").read_text()
    for needle in ("task <b>toy</b>", "5 trials (5 complete)", "best: trial <b>#3</b> val_mae = 0.2", "Plans vs tuned",
                   "Optimisation history", "Learning curves", "Curve diagnosis"):
        assert needle in html, needle


def test_dashboard_note_of_an_old_record(old):
    from optuna_dashboard import get_note

    _, ostudy = old
    publish_to_dashboard(ostudy)
    assert "Plans vs tuned" in get_note(ostudy) and ostudy.metric_names == ["val_mae"]


def test_narrow_of_an_old_record(old):
    _, ostudy = old
    space, facts = narrow_space(ostudy, top=2)
    assert facts["top"] == [3, 1]
    assert space["params"]["hidden"] == {"type": "categorical", "choices": [8]}
    assert {"phase1_trial_3", "phase1_trial_1"} <= set(space["baselines"])


def test_a_study_without_a_record_is_refused_by_export_and_narrow(tmp_path):
    url, _ = old_study(tmp_path / "plain.db", record=None)
    ostudy = load_stored_study(url, "old")
    with pytest.raises(UsageError, match="was not created by fusion-hpo"):
        exported(ostudy, select_trials(ostudy)[0], url)
    with pytest.raises(UsageError, match="was not created by fusion-hpo"):
        narrow_space(ostudy, top=1)
