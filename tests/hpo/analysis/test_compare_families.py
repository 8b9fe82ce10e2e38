"""``hpo compare STUDY A B`` for every built-in family: a tiny study of two baselines trained for real (SQLite
in tmp_path, checkpoints on disk), then the comparison of the two trials from their checkpoints.

Each family's page has the learning curves, its prediction figures, the metric bars and the improvement, and
every metric of the task recomputed from the checkpoints (equal to what the trials stored at their best
epoch); the improvement is signed by each metric's direction. The test split stays locked unless asked for.
"""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

from hpo.analysis.compare import (BARS_ID, CURVES_ID, IMPROVEMENT_ID, compare_analysis, compare_trials, improvement,
                                  split_guard)
from hpo.analysis.trained import load_trials
from hpo import errors
from hpo.errors import UsageError
from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.spec.yaml_io import dump_yaml
from hpo.store.record import BASELINE, METRICS, WARM_START_OF
from hpo.tasks import Splits, get_task
from tests.contract.test_tasks import SYNTHETIC, TARGETS

#: the figures each family adds to the page (besides curves, bars and improvement)
VIEWS = {
    "toy": ("pred-vs-true", "error-histogram"),
    "crystal_text": ("pred-vs-true", "error-histogram"),
    "drug_target": ("pred-vs-true", "error-histogram"),
    "face3d": ("cosine-distribution",),
    "traffic": ("mae-by-horizon", "sample-series"),
}
#: the two baselines of each tiny study: A the reference, B a different learning rate
LRS = {"a": 1.0e-3, "b": 1.0e-2}
EPOCHS = 2


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_study(family: str, tmp_path) -> optuna.Study:
    """Run a two-trial study of ``family`` (its tiny preset, synthetic data, baselines ``a`` and ``b``) in tmp_path."""
    cls = get_task(family)
    training = {k: v for k, v in cls.presets["tiny"].items() if k != "lr"} | {"epochs": EPOCHS}
    task = {"family": family, "dataset": SYNTHETIC.get(family, {"format": "synthetic"})}
    if family in TARGETS:
        task["target"] = TARGETS[family]
    spec = {
        "name": f"cmp-{family}", "task": task,
        "space": {"params": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True}},
                  "baselines": {name: {"lr": lr} for name, lr in LRS.items()}},
        "objectives": [cls.default_objective], "pruner": {"type": "none"}, "budget": {"n_trials": 2},
        "training": training, "storage": f"sqlite:///{tmp_path / 'c.db'}", "artifacts": str(tmp_path / "art"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(dump_yaml(spec))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    return optuna.load_study(study_name=f"cmp-{family}", storage=study.storage_url())


def numbers_by_baseline(ostudy: optuna.Study) -> dict[str, int]:
    return {t.user_attrs[BASELINE]: t.number for t in ostudy.get_trials() if t.state.name == "COMPLETE"}


def assert_signed_by_direction(res: dict, task_cls, a: str, b: str) -> None:
    """Every finite improvement is positive exactly when B is better by the metric's direction."""
    checked = set()
    for name, gain in res["improvement"].items():
        va, vb = res["metrics"][a][name], res["metrics"][b][name]
        if not math.isfinite(gain) or va == vb:
            continue
        direction = task_cls.metrics[name]
        assert res["directions"][name] == direction
        b_better = vb < va if direction == "minimize" else vb > va
        assert (gain > 0) == b_better, (name, direction, va, vb, gain)
        assert gain == pytest.approx(100 * ((va - vb) if direction == "minimize" else (vb - va)) / abs(va))
        checked.add(direction)
    assert "minimize" in checked or "maximize" in checked


@pytest.mark.parametrize("family", sorted(VIEWS))
def test_compare_two_trials_of_every_family(family, tmp_path):
    ostudy = tiny_study(family, tmp_path)
    n = numbers_by_baseline(ostudy)
    assert set(n) == set(LRS), [t.user_attrs.get("stop_detail") for t in ostudy.get_trials()]
    out = tmp_path / "cmp.html"
    res = compare_trials(ostudy, n["a"], n["b"], artifacts_dir=str(tmp_path / "art"), out=out,
                         cache_dir=str(tmp_path / "cache"))
    a, b = f"#{n['a']} [a]", f"#{n['b']} [b]"
    cls = get_task(family)
    assert res["split"] == "val" and list(res["metrics"]) == [a, b]

    page = out.read_text()
    for div in (CURVES_ID, *VIEWS[family], BARS_ID, IMPROVEMENT_ID):
        assert f'id="{div}"' in page, div
    assert "<script" in page and "plotly" in page.lower()  # plotly.js inlined: opens offline
    assert f"Improvement of {b} over {a}" in page

    # every metric of the task on the split, recomputed from the checkpoints: what the trials stored
    stored = {t.number: t.user_attrs[METRICS] for t in ostudy.get_trials()}
    for label, number in ((a, n["a"]), (b, n["b"])):
        metrics = res["metrics"][label]
        assert metrics and set(metrics) <= set(cls.metrics)
        for name, value in metrics.items():
            assert f"<td>{name}</td>" in page
            if math.isfinite(value):
                assert value == pytest.approx(stored[number][f"val_{name}"], rel=1e-4, abs=1e-6), (label, name)
    assert metrics != res["metrics"][a]  # two different models
    assert_signed_by_direction(res, cls, a, b)
    assert json.loads(json.dumps(ostudy.user_attrs["analysis_compare"]))["trials"] == [n["a"], n["b"]]  # stored with the study


def test_the_test_split_is_read_only_when_asked_for(tmp_path, monkeypatch, capsys):
    from hpo.cli import main

    ostudy = tiny_study("toy", tmp_path)
    n = numbers_by_baseline(ostudy)
    loaded = load_trials(ostudy, [n["a"], n["b"]], str(tmp_path / "art"), str(tmp_path / "cache"))
    models = {t.label: t.model for t in loaded}
    val = compare_analysis(loaded[0].task, loaded[0].splits, models, out=tmp_path / "v.html", loaded=loaded)
    assert val["split"] == "val" and all(t.splits.test_reads == 0 for t in loaded)
    test = compare_analysis(loaded[0].task, loaded[0].splits, models, split="test", out=tmp_path / "t.html", loaded=loaded)
    assert all(t.splits.test_reads > 0 for t in loaded)
    assert test["metrics"] != val["metrics"]

    monkeypatch.chdir(tmp_path)  # the command's data cache: runs/cache
    code = main(["compare", "cmp-toy", str(n["a"]), str(n["b"]), "--storage", f"sqlite:///{tmp_path / 'c.db'}",
                 "--artifacts", str(tmp_path / "art"), "--split", "test", "--out", str(tmp_path / "cli.html")])
    printed = capsys.readouterr().out
    assert code == 0 and "test split" in printed and "improvement mae:" in printed
    label = f"#{n['a']} [a]"
    assert f"mae={test['metrics'][label]['mae']:.4g}" in printed
    assert (tmp_path / "cli.html").exists()
    with pytest.raises(UsageError, match="two different trials"):
        compare_trials(ostudy, n["a"], n["a"], artifacts_dir=str(tmp_path / "art"))
    # a trial told to a stage from an earlier one was never trained there: refused, by name
    told = optuna.trial.create_trial(value=1.0, params={}, distributions={}, user_attrs={WARM_START_OF: "plan/quick#0"})
    ostudy.add_trial(told)
    number = max(t.number for t in ostudy.get_trials())
    with pytest.raises(UsageError, match="told to this stage from plan/quick#0 and never trained here"):
        compare_trials(ostudy, n["a"], number, artifacts_dir=str(tmp_path / "art"), cache_dir=str(tmp_path / "cache"))


def test_split_guard_locks_the_test_part_unless_it_is_the_split():
    splits = Splits([1], [2], [3])
    for split in ("train", "val"):
        with split_guard(splits, split), pytest.raises(errors.TestSplitAccessError):
            splits["test"]
    with split_guard(splits, "test"):
        assert splits["test"] == [3]
    assert splits["test"] == [3]  # the lock is gone after the comparison
    with pytest.raises(UsageError, match="split: must be one of train, val, test"):
        with split_guard(splits, "holdout"):
            pass


def test_improvement_is_signed_by_the_direction():
    directions = {"mae": "minimize", "cosine": "maximize", "odd": None}
    gain = improvement({"mae": 2.0, "cosine": 0.5, "odd": 1.0, "zero": 0.0},
                       {"mae": 1.5, "cosine": 0.4, "odd": 2.0, "zero": 1.0}, directions)
    assert gain["mae"] == pytest.approx(25.0)  # lower is better: B improves
    assert gain["cosine"] == pytest.approx(-20.0)  # higher is better: B is worse
    assert math.isnan(gain["odd"]) and math.isnan(gain["zero"])  # no direction; A is 0
    assert list(gain)[:2] == ["mae", "cosine"]
