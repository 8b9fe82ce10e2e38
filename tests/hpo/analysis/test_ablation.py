"""The ablation report: rows per (knob, value) with mean / std over seeds, deltas against the baseline
row, runs that did not complete; its text lines and its HTML section (table and one figure per knob).

The stored studies are real SQLite files built with plain Optuna (trials with the attrs ``hpo run``
writes), and one toy study with ``ablations:`` is run in-process."""

from __future__ import annotations

import math
import re
import textwrap

import pytest

from hpo.analysis.ablation import ablation_html, ablation_rows, ablation_text
from hpo.store.record import (ABLATION, BASELINE, FORMAT, FORMAT_VERSION, METRICS, RECORD_ATTR, RERUN_OF, SPEC,
                              STOP_DETAIL, STOP_REASON, WARM_START_OF, StopReason)
from hpo.store.stored import StoredStudy, load_stored_study

SPEC_OF = {
    "name": "abl",
    "task": {"family": "toy", "dataset": {"n_samples": 160}},
    # the primary objective is the second one: its values are trial.values[1]
    "objectives": [{"metric": "val_rmse"}, {"metric": "val_mae", "primary": True}],
    "space": {"params": {"lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True}},
              "baselines": {"current": {"lr": 1.0e-3}}},
    # lr is listed before fusion_type: rows follow the spec, not the alphabet
    "ablations": {"baseline": "current", "knobs": {"lr": [1.0e-4, 3.0e-4], "fusion_type": ["gated", "concat"]},
                  "seeds": [0, 1, 2]},
}
GATE_DETAIL = "gate quick_test at epoch 10: continue_if val_mae < 4.0 failed (val_mae=4.21)"
OOM_DETAIL = "CUDA out of memory at epoch 3"


def _name(knob, value, seed):
    return f"ablation.{'baseline' if knob is None else f'{knob}={value}'}.seed{seed}"


def _add(study, knob, value, seed, mae=None, state="COMPLETE", extra=None, ablation=True):
    """One trial as the trial body stores it (values: [val_rmse, val_mae])."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    attrs = {BASELINE: _name(knob, value, seed), STOP_REASON: StopReason.COMPLETED.value, **(extra or {})}
    if ablation:
        attrs[ABLATION] = {"knob": knob, "value": value, "seed": seed}
    values = None
    if mae is not None:
        values = [mae * 1.5, mae]
        attrs[METRICS] = {"val_mae": mae, "val_rmse": mae * 1.5}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState[state], params={"lr": 1e-3}, distributions={"lr": FloatDistribution(1e-5, 1e-2, log=True)},
        values=values, user_attrs=attrs))


@pytest.fixture
def ablated(tmp_path):
    """A study holding every ablation run of SPEC_OF, stored out of order, with failures, a re-run,
    a sampled trial, a warm-start copy and a run still waiting."""
    import optuna

    url = f"sqlite:///{tmp_path / 'abl.db'}"
    study = optuna.create_study(study_name="abl", storage=url, directions=["minimize", "minimize"])
    study.set_user_attr(RECORD_ATTR, {FORMAT: FORMAT_VERSION, SPEC: SPEC_OF, "dataset": {"n_samples": 160}})
    # concat first in the store: the rows still come in spec order
    _add(study, "fusion_type", "concat", 0, mae=1.1)
    _add(study, "fusion_type", "concat", 1, state="PRUNED",
         extra={STOP_REASON: StopReason.GATE.value, STOP_DETAIL: GATE_DETAIL})
    _add(study, "fusion_type", "concat", 2, state="FAIL", extra={STOP_REASON: StopReason.INTERRUPTED.value})  # trial 2
    for seed, mae in enumerate([1.0, 1.2, 1.4]):
        _add(study, None, None, seed, mae=mae)
    for seed, mae in enumerate([0.9, 1.1, 1.0]):
        _add(study, "lr", 1.0e-4, seed, mae=mae)
    _add(study, "lr", 3.0e-4, 0, mae=1.5)
    _add(study, "lr", 3.0e-4, 1, mae=1.7)
    _add(study, "lr", 3.0e-4, 2, state="FAIL", extra={STOP_REASON: StopReason.OUT_OF_MEMORY.value, STOP_DETAIL: OOM_DETAIL})
    _add(study, "fusion_type", "gated", 0, mae=1.3)
    _add(study, "fusion_type", "gated", 1, mae=1.3)
    # the re-run of interrupted trial 2 (carrying only what prepare() keeps) counts for concat seed 2
    _add(study, "fusion_type", "concat", 2, mae=1.3, ablation=False, extra={RERUN_OF: 2})
    _add(study, "fusion_type", "gated", 2, state="WAITING")  # not run yet
    _add(study, "lr", 1.0e-4, 0, mae=50.0, extra={WARM_START_OF: "abl/quick#4"})  # told, never trained here
    _add(study, None, None, 0, mae=0.1, ablation=False, extra={BASELINE: "current"})  # a plain baseline, not an ablation
    return url


def _by_label(rows):
    return {r["label"]: r for r in rows}


def test_rows_in_spec_order_with_means_stds_and_deltas(ablated):
    rows = ablation_rows(StoredStudy.open(ablated, "abl"))
    assert [r["label"] for r in rows] == ["baseline", "lr=0.0001", "lr=0.0003", "fusion_type=gated", "fusion_type=concat"]
    base, lr1, lr3, gated, concat = rows
    assert base["knob"] is None and lr1["knob"] == "lr" and lr1["value"] == pytest.approx(1e-4)
    assert all(r["metric"] == "val_mae" for r in rows)  # the objective marked primary, not the first
    assert base["n"] == 3 and base["seeds"] == [0, 1, 2] and base["expected"] == 3
    assert base["mean"] == pytest.approx(1.2) and base["std"] == pytest.approx(0.2)
    assert base["delta"] == pytest.approx(0.0)
    assert lr1["mean"] == pytest.approx(1.0) and lr1["std"] == pytest.approx(0.1)  # the warm-start copy left out
    assert lr1["delta"] == pytest.approx(-0.2) and lr1["delta_pct"] == pytest.approx(-100 * 0.2 / 1.2)
    assert lr1["better"] is True and lr3["better"] is False
    assert lr3["n"] == 2 and lr3["mean"] == pytest.approx(1.6) and lr3["std"] == pytest.approx(math.sqrt(0.02))
    # every other objective too, with its own delta
    rmse = lr1["metrics"]["val_rmse"]
    assert rmse["mean"] == pytest.approx(1.5) and rmse["delta"] == pytest.approx(1.5 - 1.8)
    assert concat["n"] == 2 and concat["seeds"] == [0, 2] and concat["mean"] == pytest.approx(1.2)
    assert gated["n"] == 2 and gated["std"] == pytest.approx(0.0) and gated["pending"]


def test_runs_that_did_not_complete_are_reported_with_their_stop_reason(ablated):
    rows = _by_label(ablation_rows(StoredStudy.open(ablated, "abl")))
    [oom] = rows["lr=0.0003"]["not_completed"]
    assert oom["state"] == "FAIL" and oom["seed"] == 2 and oom["stop_reason"] == "out_of_memory" and oom["stop_detail"] == OOM_DETAIL
    # the interrupted run was run again: only the gate's stop remains
    [gate] = rows["fusion_type=concat"]["not_completed"]
    assert gate["state"] == "PRUNED" and gate["stop_reason"] == "gate" and gate["stop_detail"] == GATE_DETAIL
    assert rows["baseline"]["not_completed"] == [] and rows["fusion_type=gated"]["not_completed"] == []
    text = "\n".join(ablation_text(StoredStudy.open(ablated, "abl")))
    assert "out_of_memory: CUDA out of memory at epoch 3" in text and GATE_DETAIL in text
    assert "still to run: #" in text


def test_text_lines(ablated):
    lines = ablation_text(StoredStudy.open(ablated, "abl"))
    assert lines[0].startswith("Ablation around baseline 'current' (val_mae, minimize; mean ± std over seeds 0, 1, 2")
    header = lines[1].split()
    assert header[:5] == ["run", "runs", "val_mae", "delta", "delta"] and "val_rmse" in header
    lr1 = next(line for line in lines if line.strip().startswith("lr=0.0001"))
    assert "3/3" in lr1 and "1 ± 0.1" in lr1 and "-0.2" in lr1 and "-16.7 %" in lr1
    assert next(line for line in lines if line.strip().startswith("lr=0.0003")).split()[1] == "2/3"


def test_html_section_has_the_table_and_a_figure_per_knob(ablated):
    from hpo.analysis.view import StudyView

    view = StudyView(load_stored_study(ablated, "abl"))
    assert ablation_rows(view) == ablation_rows(StoredStudy.open(ablated, "abl"))  # a StudyView reads the same
    page = ablation_html(view)
    assert page.startswith("<section class='ablation'><h2>Ablations</h2>")
    table = re.search(r"<table class='ablation'>.*?</table>", page).group(0)
    assert table.count("<tr>") == 1 + 5  # header + five rows
    assert "<td>lr=0.0001</td><td>3/3</td><td>1 ± 0.1</td><td>-0.2</td><td>-16.7 %</td>" in table
    assert "out_of_memory" in table and "gate quick_test at epoch 10" in table
    figures = re.findall(r"<div id=\"(ablation-figure-\d+)\" class=\"plotly-graph-div\"", page)
    assert figures == ["ablation-figure-0", "ablation-figure-1"]
    assert "Ablation: lr" in page and "Ablation: fusion_type" in page
    assert page.count('"error_y"') >= 2 and '"type":"line"' in page.replace(" ", "")  # error bars, the baseline line
    assert "baseline 1.2" in page  # the line's label: the baseline row's mean
    assert len(page) < 200_000  # plotly.js (megabytes) is left to the page that holds the section


def test_values_match_across_types_and_a_study_without_ablations_has_none(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    spec = {"objectives": ["val_mae"], "ablations": {"baseline": "current", "knobs": {"hidden": [16, 32], "second": [True, False]}}}
    study.set_user_attr(RECORD_ATTR, {FORMAT: FORMAT_VERSION, SPEC: spec})
    assert ablation_rows(StoredStudy(study)) == [] and ablation_text(StoredStudy(study)) == [] and ablation_html(study) == ""
    from optuna.distributions import FloatDistribution

    def add(knob, value, mae):
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, values=[mae],
                                                  user_attrs={ABLATION: {"knob": knob, "value": value, "seed": None}}))

    add(None, None, 2.0)
    add("hidden", 32.0, 1.0)  # a value stored as a float matches the spec's int
    add("second", 1, 3.0)  # 1 is not true: a row of its own, after the spec's
    add("second", False, 4.0)
    rows = ablation_rows(study)
    assert [r["label"] for r in rows] == ["baseline", "hidden=16", "hidden=32", "second=true", "second=false", "second=1"]
    by = _by_label(rows)
    assert by["hidden=16"]["n"] == 0 and by["hidden=16"]["mean"] is None and by["hidden=16"]["delta"] is None
    assert by["hidden=32"]["delta_pct"] == pytest.approx(-50.0) and by["hidden=32"]["std"] == 0.0
    assert by["second=false"]["better"] is False and by["second=true"]["n"] == 0
    assert all(r["expected"] == 1 for r in rows)
    assert "one run each" in ablation_text(study)[0]


# -- end to end: a toy study with ablations: run in-process ---------------------------------------------
ABLATION_EXTRA = """
ablations:
  baseline: current
  knobs: {hidden: [8], dropout: [0.1]}
  seeds: [0, 1]
"""


@pytest.mark.slow
def test_a_toy_study_with_ablations_reports_its_rows(toy_study, tmp_path):
    from hpo.analysis.report import build_report
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    pytest.importorskip("hpo.spec.ablations", reason="the ablations expansion has not landed")
    path = toy_study(name="toy_abl", n_trials=10, extra=ABLATION_EXTRA)
    path.write_text(path.read_text().replace("epochs: 6, scheduler", "epochs: 3, scheduler"))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    stored = StoredStudy.open(study.storage_url(), study.name)
    rows = ablation_rows(stored)
    assert [(r["knob"], r["value"]) for r in rows] == [(None, None), ("hidden", 8), ("dropout", 0.1)]
    for r in rows:
        assert r["n"] == 2 and sorted(r["seeds"]) == [0, 1] and r["not_completed"] == [] and r["mean"] > 0
        assert r["metric"] == "val_mae" and r["delta"] is not None
    assert rows[0]["delta"] == 0.0
    page = ablation_html(stored)
    assert page.count("class=\"plotly-graph-div\"") == 2 and "Ablation: hidden" in page
    report = build_report(stored.study, tmp_path / "report.html").read_text()
    assert "<h2>Ablations</h2>" in report and "ablation-figure-1" in report
