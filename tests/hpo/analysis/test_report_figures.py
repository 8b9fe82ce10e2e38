"""The report's figures drawn by Optuna's own visualisation (slice, parallel coordinates, importances, rank,
timeline) beside the ones only this service draws (history with the plans, curves with the gap): on studies
written straight into a SQLite store (single- and multi-objective, and one of 2,000 trials whose report is built
in seconds from the one read of its trials), and on a real toy study (slow: it trains)."""

from __future__ import annotations

import datetime
import json
import math
import random
import re
import textwrap
import time

import pytest

from tests.conftest import TOY_SPACE, TOY_STUDY

def _write_study(url: str, n: int, *, name: str = "big", objectives=("val_mae",), directions=("minimize",),
                 seed: int = 0):
    """``n`` trials written in one transaction into Optuna's tables (through Optuna a trial at a time takes
    minutes for thousands): params (``lr`` log-scaled), values (``val_mae``; a second objective ``val_r2`` when
    two are named), 30-epoch curves and the user attrs a real trial has; about 30 % pruned; 3 plans."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution, distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import insert, select

    from hpo.store.record import RECORD_ATTR
    from hpo.store.storage import open_storage

    rng = random.Random(seed)
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name=name, storage=storage, directions=list(directions))
    study.set_user_attr(RECORD_ATTR, {
        "format": 1, "file": None, "space_file": None, "dataset": {"format": "synthetic"},
        "spec": {"name": name, "task": {"family": "toy", "dataset": {}}, "objectives": list(objectives),
                 "space": {"params": {}}, "training": {}}})
    dists = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "hidden": CategoricalDistribution((8, 16, 32, 64)),
             "depth": IntDistribution(1, 4), "dropout": FloatDistribution(0.0, 0.5),
             "fusion": CategoricalDistribution(("concat", "gated", "sum"))}
    json_dist = {k: distribution_to_json(d) for k, d in dists.items()}
    start = datetime.datetime(2026, 1, 1)
    trials, params, values, attrs = [], [], [], []
    for i in range(n):
        p = {"lr": 10 ** rng.uniform(-4, -2), "hidden": rng.choice((8, 16, 32, 64)), "depth": rng.randint(1, 4),
             "dropout": rng.uniform(0, 0.5), "fusion": rng.choice(("concat", "gated", "sum"))}
        quality = abs(math.log10(p["lr"]) + 3) + p["dropout"] + rng.gauss(0, 0.1)
        pruned = i >= 3 and rng.random() < 0.3
        epochs = rng.randint(3, 12) if pruned else 30
        val = [0.3 + quality * 0.2 + 1.0 / (e + 1) for e in range(epochs)]
        train = [x * 0.7 for x in val]
        a = {"config": {**p, "epochs": 30}, "curves": {"epoch": list(range(1, epochs + 1)), "train_mae": train, "val_mae": val},
             "metrics": {"val_mae": min(val)}, "stop_reason": "pruned" if pruned else "completed"}
        if i < 3:
            a["baseline"] = f"plan{i}"
        t0 = start + datetime.timedelta(seconds=20 * i)
        trials.append({"number": i, "study_id": study._study_id, "datetime_start": t0,
                       "state": optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
                       "datetime_complete": t0 + datetime.timedelta(seconds=epochs)})
        params.append([(k, dists[k].to_internal_repr(x), json_dist[k]) for k, x in p.items()])
        values.append(None if pruned else [min(val), 1.0 - 0.1 * quality + rng.gauss(0, 0.05)][: len(directions)])
        attrs.append([(k, json.dumps(x)) for k, x in a.items()])
    with storage.engine.begin() as conn:
        conn.execute(insert(models.TrialModel.__table__), trials)
        ids = {number: tid for tid, number in conn.execute(
            select(models.TrialModel.trial_id, models.TrialModel.number).where(models.TrialModel.study_id == study._study_id)).all()}
        conn.execute(insert(models.TrialParamModel.__table__), [
            {"trial_id": ids[i], "param_name": k, "param_value": x, "distribution_json": d}
            for i, ps in enumerate(params) for k, x, d in ps])
        conn.execute(insert(models.TrialValueModel.__table__), [
            {"trial_id": ids[i], "objective": k, "value": x, "value_type": models.TrialValueModel.TrialValueType.FINITE}
            for i, xs in enumerate(values) if xs is not None for k, x in enumerate(xs)])
        conn.execute(insert(models.TrialUserAttributeModel.__table__), [
            {"trial_id": ids[i], "key": k, "value_json": x} for i, kv in enumerate(attrs) for k, x in kv])
    return storage


FIGURE_IDS = ("fig-history", "fig-importances", "fig-parallel", "fig-slice", "fig-rank", "fig-timeline", "fig-curves")


def _figure_json(page: str, div_id: str) -> dict:
    """The data and layout plotly draws in the div ``div_id`` of a report page."""
    m = re.search(r'Plotly\.newPlot\(\s*"' + div_id + r'",\s*', page)
    assert m, div_id
    data, end = json.JSONDecoder().raw_decode(page, m.end())
    layout, _ = json.JSONDecoder().raw_decode(page[end:].lstrip()[1:].lstrip())
    return {"data": data, "layout": layout}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 40-trial study written into SQLite, its stored study and its report page."""
    from hpo.analysis.report import build_report
    from hpo.store.stored import load_stored_study

    root = tmp_path_factory.mktemp("written")
    url = f"sqlite:///{root / 'hpo.db'}"
    _write_study(url, 40, name="small")
    ostudy = load_stored_study(url, "small")
    return ostudy, build_report(ostudy, root / "report.html").read_text()


def _complete(ostudy) -> list:
    return [t for t in ostudy.trials if t.state.name == "COMPLETE"]


def test_the_report_has_each_figure_with_its_id_and_title(written):
    ostudy, page = written
    n = len(_complete(ostudy))
    for div_id in FIGURE_IDS:
        assert f'id="{div_id}"' in page, div_id
    titles = {i: _figure_json(page, i)["layout"]["title"]["text"] for i in FIGURE_IDS}
    assert titles["fig-history"] == "Optimisation history"
    assert titles["fig-importances"] == "Parameter importances (PED-ANOVA, val_mae)"
    assert titles["fig-parallel"] == f"Parallel coordinates (val_mae; {n} complete trials)"
    assert titles["fig-slice"].startswith("Slice plots (val_mae vs each parameter")
    assert titles["fig-rank"] == "Rank on val_mae over the 3 most important parameters"
    assert titles["fig-timeline"] == "Timeline (40 trials, by state)"
    assert titles["fig-curves"].startswith("Learning curves of the top trials and the plans")
    plans = [t for t in _figure_json(page, "fig-history")["data"] if t.get("name") == "baselines (plans)"]
    assert plans and plans[0]["text"] == ["plan0", "plan1", "plan2"]  # the plans overlay on the history


def test_the_importances_are_ped_anovas_and_the_title_says_so(written):
    import optuna

    from hpo.analysis.figures import importance_evaluator

    ostudy, page = written
    ev, name = importance_evaluator()
    assert isinstance(ev, optuna.importance.PedAnovaImportanceEvaluator) and name == "PED-ANOVA"
    bars = _figure_json(page, "fig-importances")["data"]
    assert len(bars) == 1 and bars[0]["name"] == "val_mae"
    drawn = dict(zip(bars[0]["y"], bars[0]["x"]))
    # Optuna's PED-ANOVA over the stored study read whole by Optuna (not the report's snapshot): the same numbers
    expected = optuna.importance.get_param_importances(ostudy, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert drawn.keys() == expected.keys() == {"lr", "hidden", "depth", "dropout", "fusion"}
    assert all(math.isclose(drawn[k], expected[k], rel_tol=1e-9, abs_tol=1e-12) for k in drawn)
    # the rank plot takes the three most important of them
    rank = _figure_json(page, "fig-rank")["layout"]
    shown = {a["title"]["text"] for k, a in rank.items() if k.startswith("xaxis") and a.get("title")}
    assert shown == set(list(expected)[:3])


def _assert_log_axes(ostudy, page, log_param: str, linear_param: str, categorical: str) -> None:
    layout = _figure_json(page, "fig-slice")["layout"]
    axes = {a["title"]["text"]: a for k, a in layout.items() if k.startswith("xaxis") and a.get("title")}
    assert axes[log_param]["type"] == "log"
    assert axes[linear_param].get("type") in (None, "linear", "-")  # a linear parameter stays linear
    assert axes[categorical]["type"] == "category"
    # parallel coordinates: the log parameter's axis is log10 (each trial's position on it log-normalised)
    fig = _figure_json(page, "fig-parallel")
    xs = [t.params[log_param] for t in _complete(ostudy)]
    if fig["data"][0]["type"] == "parcoords":  # Optuna < 5: one Parcoords trace, log10 values with tick labels
        dim = next(d for d in fig["data"][0]["dimensions"] if d["label"] == log_param)
        assert sorted(dim["values"]) == pytest.approx(sorted(math.log10(x) for x in xs))
    else:  # Optuna 5: a line per trial across the axes
        axis = fig["layout"]["xaxis"]["ticktext"].index(log_param)
        lines = [t for t in fig["data"] if t.get("mode") == "lines" and t.get("customdata")]
        assert len(lines) == len(xs)
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        assert sorted(t["y"][axis] for t in lines) == pytest.approx(sorted((math.log10(x) - lo) / (hi - lo) for x in xs), abs=1e-9)


def test_log_parameters_are_on_log_axes(written):
    _assert_log_axes(*written, log_param="lr", linear_param="dropout", categorical="fusion")


def test_the_slice_panels_are_laid_out_in_rows_on_one_value_axis(written):
    _, page = written
    layout = _figure_json(page, "fig-slice")["layout"]
    titled = [a for k, a in layout.items() if k.startswith("xaxis") and a.get("title")]
    assert len(titled) == 5 and len({tuple(a["domain"]) for a in titled}) == 4  # 4 columns, a second row
    assert "width" not in layout  # no 1,500-pixel row of five panels
    shared = {a.get("matches") or "y" + k[len("yaxis"):] for k, a in layout.items() if k.startswith("yaxis")}
    assert len(shared) == 1  # every panel on the one value axis


def test_the_timeline_hover_keeps_the_plan_names_not_each_trials_attrs(written):
    _, page = written
    bars = [t for t in _figure_json(page, "fig-timeline")["data"] if t["type"] == "bar"]
    assert {b["name"] for b in bars} == {"COMPLETE", "PRUNED"}
    texts = [s for b in bars for s in b["text"]]
    assert len(texts) == 40
    assert any('"baseline": "plan0"' in s for s in texts) and any('"stop_reason": "pruned"' in s for s in texts)
    assert not any('"config"' in s or '"metrics"' in s for s in texts)  # the rest of the user attrs stay out of the page


def test_a_multi_objective_report_draws_the_primary_objective_with_its_name_and_direction(tmp_path):
    from hpo.analysis.figures import importance_figure, parallel_figure, rank_figure, slice_figure
    from hpo.analysis.view import StudyView
    from hpo.store.stored import load_stored_study

    url = f"sqlite:///{tmp_path / 'mo.db'}"
    # the primary second, and maximised: what is drawn is it, coloured the way a maximised objective is
    _write_study(url, 30, name="mo", objectives=("val_mae", {"metric": "val_r2", "primary": True}),
                 directions=("minimize", "maximize"))
    v = StudyView(load_stored_study(url, "mo"))
    assert v.monitor == "val_r2" and v.stored.primary_index == 1
    primary = sorted(t.values[1] for t in v.complete)
    fig = slice_figure(v)
    assert fig.layout.title.text.startswith("Slice plots (val_r2 vs")
    first_panel = [tr for tr in fig.data if tr.xaxis in (None, "x")]
    assert sorted(first_panel[0].y) == pytest.approx(primary)  # the primary's values, not the first objective's
    assert fig.layout.yaxis.title.text == "val_r2"
    imp = importance_figure(v)
    assert [t.name for t in imp.data] == ["val_r2", "val_mae"]  # a bar group per objective, the primary first
    assert imp.layout.title.text == "Parameter importances (PED-ANOVA, val_r2, val_mae)"
    par = parallel_figure(v)
    assert par.layout.title.text.startswith("Parallel coordinates (val_r2;")
    if par.data[0].type == "parcoords":
        assert par.data[0].dimensions[0].label == "val_r2" and par.data[0].line.reversescale is False
    else:
        assert par.layout.xaxis.ticktext[0] == "val_r2"
        scale = [t for t in par.data if t.marker and t.marker.showscale]
        assert scale and scale[0].marker.reversescale is False  # maximised: high is good, not reversed
    assert rank_figure(v).layout.title.text.startswith("Rank on val_r2 over")


def _run_toy(root, name: str, n_trials: int):
    """A real toy study (random sampler, no pruner: every trial completes, 3 epochs) on SQLite."""
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.store.stored import load_stored_study

    (root / "space.yaml").write_text(textwrap.dedent(TOY_SPACE))
    text = textwrap.dedent(TOY_STUDY.format(name=name, n_trials=n_trials, db=root / "hpo.db", artifacts=root / "artifacts"))
    text = (text.replace("sampler: {type: tpe, seed: 3, n_startup_trials: 3}", "sampler: {type: random, seed: 1}")
                .replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}", "pruner: {type: none}")
                .replace("epochs: 6", "epochs: 3").replace("max_epochs: 6", "max_epochs: 3"))
    (root / f"{name}.yaml").write_text(text)
    study = load_study(root / f"{name}.yaml")
    run_study(study, RunOptions(cache_dir=str(root / "cache"), checkpoints=False))
    return load_stored_study(study.storage_url(), study.name)


@pytest.mark.slow
def test_the_report_of_a_real_toy_study_has_each_figure_and_log_axes(tmp_path):
    from hpo.analysis.report import build_report

    ostudy = _run_toy(tmp_path, "figs", 5)
    page = build_report(ostudy, tmp_path / "report.html").read_text()
    for div_id in FIGURE_IDS:
        assert f'id="{div_id}"' in page, div_id
    assert _figure_json(page, "fig-importances")["layout"]["title"]["text"] == "Parameter importances (PED-ANOVA, val_mae)"
    plans = [t for t in _figure_json(page, "fig-history")["data"] if t.get("name") == "baselines (plans)"]
    assert plans and set(plans[0]["text"]) == {"current", "single_modality"}
    curves = _figure_json(page, "fig-curves")["data"]
    assert any(t["name"].endswith("current val") for t in curves)  # the plans' curves, with the gap panel
    _assert_log_axes(ostudy, page, log_param="lr", linear_param="dropout", categorical="hidden")


# -- a 2,000-trial study -------------------------------------------------------------------------------


def test_a_2000_trial_study_reports_in_seconds_from_one_read_of_its_trials(tmp_path):
    import optuna.visualization  # noqa: F401  (imported once, as any report does; not what is timed)
    import plotly.graph_objects  # noqa: F401
    from sqlalchemy import event

    from hpo.analysis.report import build_report
    from hpo.store import rdb
    from hpo.store.stored import load_stored_study

    url = f"sqlite:///{tmp_path / 'big.db'}"
    _write_study(url, 2000)
    ostudy = load_stored_study(url, "big")
    statements = []  # every SQL statement the report sends to the store
    event.listen(rdb.backend_of(rdb.storage_of(ostudy)).engine, "before_cursor_execute",
                 lambda *a, **k: statements.append(a[2]))
    t0 = time.perf_counter()
    page = build_report(ostudy, tmp_path / "big.html").read_text()
    seconds = time.perf_counter() - t0
    for div_id in FIGURE_IDS:
        assert f'id="{div_id}"' in page, div_id
    assert seconds < 20, f"report of 2,000 trials took {seconds:.1f} s"
    # the trials read once (light: without curves), then only the few whose curves are drawn, each by its id;
    # Optuna's plots handed the stored study instead would read all 2,000 again (a study-wide read each)
    study_wide = [q for q in statements if q.lstrip().startswith("SELECT trials.") and re.search(r"^FROM trials\s+WHERE trials\.study_id", q, re.M)]
    assert len(study_wide) == 1, study_wide
    assert len(statements) < 150, len(statements)
    parallel = _figure_json(page, "fig-parallel")["layout"]["title"]["text"]
    assert re.search(r"500 of \d{4} complete trials", parallel), parallel
    assert len(page) < 12e6  # plotly.js (~4.7 MB) once, and the figures
