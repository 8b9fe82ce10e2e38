"""Success targets on real SQLite stores: which levels are met, by which trial, on validation and after
``hpo reevaluate`` on test; ``stop_at_target`` ends a study early; the run summary, ``hpo status`` and the
report say it (and say nothing about targets for a study without them)."""

from __future__ import annotations

import pytest

from hpo.run.targets import STOPPED_AT_TARGET, record_met, stop_met, targets_met
from hpo.store.record import METRICS, RECORD_ATTR, REEVALUATION, SPEC, TARGETS_MET, WARM_START_OF

TARGETS = """
targets:
  reachable: {val_mae: 1000.0}
  unreachable: {val_mae: 0.0}
"""


# -- the rows, from a stored study read without its YAML ------------------------------------------------
def _stored_study(tmp_path, spec: dict, trials: list[tuple[str, float, dict]]):
    """A study in a real SQLite file with a fusion-hpo record and the given (state, value, user attrs) trials."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    directions = [o.get("direction", "minimize") for o in spec["objectives"]]
    ostudy = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}", directions=directions)
    ostudy.set_user_attr(RECORD_ATTR, {SPEC: spec, "format": 2})
    for state, value, attrs in trials:
        complete = state == "COMPLETE"
        ostudy.add_trial(create_trial(state=TrialState[state], value=value if complete else None,
                                      params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                      user_attrs=attrs, intermediate_values={} if complete else {1: value}))
    return ostudy


SPEC_TARGETS = {"task": {"family": "toy"}, "objectives": [{"metric": "val_mae", "direction": "minimize"}],
                "targets": {"conservative": {"val_mae": 3.8}, "aggressive": {"val_mae": 3.5}, "rmse": {"val_rmse": 5.0}}}


def test_a_stored_study_says_which_level_is_met_first_by_which_trial(tmp_path):
    ostudy = _stored_study(tmp_path, SPEC_TARGETS, [
        ("COMPLETE", 4.0, {METRICS: {"val_mae": 4.0, "val_rmse": 6.0}}),
        ("PRUNED", 3.0, {METRICS: {"val_mae": 3.0, "val_rmse": 4.0}}),  # pruned: does not count
        ("COMPLETE", 3.4, {METRICS: {"val_mae": 3.4, "val_rmse": 4.0}, WARM_START_OF: "p/quick#2"}),  # told, not trained
        ("COMPLETE", 3.7, {METRICS: {"val_mae": 3.7, "val_rmse": 4.5}}),
        ("COMPLETE", 3.6, {METRICS: {"val_mae": 3.6, "val_rmse": 5.5}}),
    ])
    rows = {r["level"]: r for r in targets_met(ostudy, ostudy.trials)}
    assert list(rows) == ["conservative", "aggressive", "rmse"]
    c = rows["conservative"]
    assert (c["met"], c["trial"], c["value"], c["best_trial"], c["best_value"]) == (True, 3, {"val_mae": 3.7}, 4, {"val_mae": 3.6})
    assert c["rule"] == "val_mae <= 3.8" and c["test"] is None
    a = rows["aggressive"]  # only the warm-started copy and the pruned trial were below 3.5
    assert (a["met"], a["trial"], a["best_trial"], a["best_value"]) == (False, None, 4, {"val_mae": 3.6})
    rmse = rows["rmse"]  # not an objective: the task's natural direction decides
    assert rmse["rule"] == "val_rmse <= 5" and (rmse["met"], rmse["trial"], rmse["best_trial"]) == (True, 3, 3)


def test_a_stored_study_without_targets_has_no_rows(tmp_path):
    spec = {k: v for k, v in SPEC_TARGETS.items() if k != "targets"}
    ostudy = _stored_study(tmp_path, spec, [("COMPLETE", 1.0, {METRICS: {"val_mae": 1.0}})])
    assert targets_met(ostudy, ostudy.trials) == []


def test_the_test_verdict_reads_the_reevaluation_mean_over_seeds(tmp_path):
    ostudy = _stored_study(tmp_path, SPEC_TARGETS, [("COMPLETE", 3.6, {METRICS: {"val_mae": 3.6}})])
    ostudy.set_user_attr(REEVALUATION, {"configs": {
        "tuned_rank1_trial0": {"trial": 0, "seeds": [0, 1], "summary": {"mae": {"mean": 3.7, "std": 0.1, "values": [3.6, 3.8]}},
                               "runs": [{"seed": 0, "val": {"val_mae": 3.5}}, {"seed": 1, "val": {"val_mae": 3.7}}]},
        "current": {"trial": 1, "seeds": [0, 1], "summary": {"mae": {"mean": 3.4, "std": 0.0, "values": [3.4, 3.4]}}, "runs": []},
    }})
    rows = {r["level"]: r for r in targets_met(ostudy, ostudy.trials)}
    assert rows["conservative"]["test"]["met"] and rows["conservative"]["test"]["config"] == "tuned_rank1_trial0"
    assert rows["conservative"]["test"]["met_by"] == ["tuned_rank1_trial0", "current"]
    aggressive = rows["aggressive"]["test"]  # met on test by the plan only, though not on validation
    assert aggressive["met"] and aggressive["config"] == "current" and aggressive["value"] == {"test_mae": 3.4}
    assert not rows["aggressive"]["met"]


def test_targets_met_records_the_lowest_trial_number_across_workers(tmp_path):
    ostudy = _stored_study(tmp_path, SPEC_TARGETS, [
        ("COMPLETE", 3.7, {METRICS: {"val_mae": 3.7}}),
        ("COMPLETE", 3.4, {METRICS: {"val_mae": 3.4}}),
        ("COMPLETE", 3.3, {METRICS: {"val_mae": 3.3, "val_rmse": 1.0}, WARM_START_OF: "p/quick#0"}),
    ])
    from hpo.run.targets import levels_of

    levels = levels_of(ostudy)
    t0, t1, warm = ostudy.trials
    assert record_met(ostudy, levels, t1) == {"conservative": 1, "aggressive": 1}  # finished first (another worker)
    assert record_met(ostudy, levels, t0) == {"conservative": 0}  # lower number: replaces it
    assert record_met(ostudy, levels, t1) == {}  # nothing new
    assert record_met(ostudy, levels, warm) == {}  # a warm-started copy meets nothing
    assert ostudy.user_attrs[TARGETS_MET] == {"conservative": 0, "aggressive": 1}
    assert stop_met(levels, "aggressive", ostudy.trials).number == 1
    assert stop_met(levels, None, ostudy.trials) is None


# -- end to end on the toy family ---------------------------------------------------------------------------
def _hpo(capsys, *argv) -> str:
    """Run the real ``hpo`` command line in this process; its standard output."""
    from hpo.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    text = capsys.readouterr().out
    assert code == 0, text
    return text


def _first_complete(ostudy) -> int:
    return min(t.number for t in ostudy.trials if t.state.name == "COMPLETE")


@pytest.mark.slow
def test_summary_status_and_report_say_which_level_is_met_and_on_test_after_reevaluate(toy_study, tmp_path, monkeypatch, capsys):
    from hpo.store.stored import load_stored_study

    monkeypatch.chdir(tmp_path)
    path = toy_study(n_trials=3, extra=TARGETS)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    run_out = _hpo(capsys, "run", path, "--no-checkpoints")
    ostudy = load_stored_study(url, "toy")
    first = _first_complete(ostudy)
    assert ostudy.user_attrs[TARGETS_MET] == {"reachable": first}
    met_line = f"reachable (val_mae <= 1000): met by trial #{first} (val_mae="
    for text in (run_out, _hpo(capsys, "status", "--storage", url)):
        assert "targets: 1 of 2 met on validation" in text, text
        assert met_line in text and "unreachable (val_mae <= 0): not met (closest: trial #" in text
        assert text.count("test: not re-evaluated") == 2
    html = (tmp_path / "r.html")
    _hpo(capsys, "report", "toy", "--storage", url, "--out", html, "--no-dashboard")
    page = html.read_text()
    assert "<h2>Targets</h2>" in page and "1 of 2 levels met on validation" in page
    assert f"<td>reachable</td><td>val_mae &lt;= 1000</td><td>met</td><td>#{first} (val_mae=" in page
    assert "<td>unreachable</td><td>val_mae &lt;= 0</td><td>not met</td><td></td>" in page
    assert page.count("test: not re-evaluated") == 2

    _hpo(capsys, "reevaluate", "toy", "--storage", url, "--top", "1", "--seeds", "2", "--no-baselines")
    best = load_stored_study(url, "toy").best_trial.number
    status = _hpo(capsys, "status", "--storage", url)
    assert f"test: met by tuned_rank1_trial{best} (test_mae=" in status and "mean of 2 seeds" in status
    assert f"test: not met (tuned_rank1_trial{best}: test_mae=" in status and "not re-evaluated" not in status
    _hpo(capsys, "report", "toy", "--storage", url, "--out", html, "--no-dashboard")
    page = html.read_text()
    assert f"test: met by tuned_rank1_trial{best}" in page and f"test: not met (tuned_rank1_trial{best}:" in page


@pytest.mark.slow
def test_stop_at_target_ends_the_study_after_the_first_trial_that_meets_it(toy_study, tmp_path, monkeypatch):
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.store.stored import load_stored_study

    monkeypatch.chdir(tmp_path)
    study = load_study(toy_study(n_trials=6, extra=TARGETS + "stop_at_target: reachable\nrun_baselines: false\n"))
    opts = RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False)
    summary = run_study(study, opts)
    assert summary.stopped_because == STOPPED_AT_TARGET == "target met"
    assert summary.budget.used == 1 < 6
    assert [(r["level"], r["met"], r["stops"]) for r in summary.targets] == [("reachable", True, True), ("unreachable", False, False)]
    again = run_study(study, opts)  # the study is over: a second run trains nothing
    assert again.stopped_because == "target met" and again.budget.used == 1
    ostudy = load_stored_study(study.storage_url(), study.name)
    assert ostudy.user_attrs[TARGETS_MET] == {"reachable": _first_complete(ostudy)}


def test_stop_at_target_lets_the_queued_named_runs_finish_first(toy_study, tmp_path, monkeypatch):
    # the baselines are the yardstick: a target met by the first one ends the search, not the plan's own runs
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.store.stored import load_stored_study

    monkeypatch.chdir(tmp_path)
    study = load_study(toy_study(n_trials=6, extra=TARGETS + "stop_at_target: reachable\n"))
    summary = run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    assert summary.stopped_because == "target met" and summary.budget.used == 2 < 6
    trials = load_stored_study(study.storage_url(), study.name).get_trials(deepcopy=False)
    assert sorted(t.user_attrs.get("baseline") for t in trials) == ["current", "single_modality"]  # no sampled trial ran
    assert all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.slow
def test_stop_at_target_stops_every_worker_process(toy_study, tmp_path, monkeypatch):
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    monkeypatch.chdir(tmp_path)
    study = load_study(toy_study(n_trials=8, extra=TARGETS + "stop_at_target: reachable\nrun_baselines: false\n"))
    summary = run_study(study, RunOptions(workers=2, threads=1, cache_dir=str(tmp_path / "cache"), checkpoints=False))
    assert summary.stopped_because == "target met"
    assert 1 <= summary.budget.used <= 2  # each worker ends after its own first trial, or before starting one


@pytest.mark.slow
def test_a_study_without_targets_says_nothing_about_targets(toy_study, tmp_path, monkeypatch, capsys):
    from hpo.store.stored import load_stored_study

    monkeypatch.chdir(tmp_path)
    path = toy_study(n_trials=2)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    run_out = _hpo(capsys, "run", path, "--no-checkpoints")
    assert "done (budget)" in run_out
    status = _hpo(capsys, "status", "--storage", url)
    _hpo(capsys, "report", "toy", "--storage", url, "--out", tmp_path / "r.html", "--no-dashboard")
    page = (tmp_path / "r.html").read_text()
    for text in (run_out, status, page):
        assert "targets:" not in text and "re-evaluated" not in text and "<h2>Targets</h2>" not in text
    assert TARGETS_MET not in load_stored_study(url, "toy").user_attrs
