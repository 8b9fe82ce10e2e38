"""bench/time_to_quality.py and its plain references (bench/reference/): the pieces that decide the figures."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "reference"))

import deepdta  # noqa: E402
import gru_losloop  # noqa: E402
import time_to_quality as ttq  # noqa: E402


def test_concordance_index_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300).round(1)  # ties in y are not pairs
    p = (y + rng.normal(size=300)).round(1)  # ties in p count 1/2
    num = den = 0.0
    for i in range(300):
        for j in range(300):
            if y[i] > y[j]:
                den += 1
                num += 1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0
    assert deepdta.concordance_index(y, p, chunk=37) == pytest.approx(num / den)
    assert deepdta.concordance_index(y, y) == 1.0


def test_protein_batches_cover_every_pair_once_with_few_proteins_each():
    protein = torch.arange(40).repeat_interleave(7)[torch.randperm(280, generator=torch.Generator().manual_seed(0))]
    batches = list(deepdta.protein_batches(protein, 6, torch.Generator().manual_seed(1)))
    seen = torch.cat(batches).sort().values
    assert torch.equal(seen, torch.arange(280))
    assert all(len(torch.unique(protein[b])) <= 6 for b in batches)
    assert len(batches) == math.ceil(40 / 6)


def test_deepdta_shapes_and_valid_convolutions():
    model = deepdta.DeepDTA()
    d = model.drug(torch.randint(1, 60, (3, 85)))
    p = model.protein(torch.randint(1, 25, (2, 1200)))
    assert d.shape == (3, 96) and p.shape == (2, 96)
    out = model.pairs(d, p, torch.tensor([0, 2, 1, 0]), torch.tensor([1, 1, 0, 0]))
    assert out.shape == (4,)
    assert [c.kernel_size[0] for c in model.protein.convs] == [4, 8, 12]


def test_gru_reference_split_and_scaler_are_the_traffic_familys(tmp_path):
    """The reference reads Los-loop as the service's traffic family does: the same chronological parts
    (70/10/20), the same train-only scaler of observed readings and the same windows."""
    from models.traffic.data import RawSeries, series_splits
    from models.traffic.config import TrafficDataConfig

    rng = np.random.default_rng(0)
    values = rng.uniform(20, 70, size=(300, 5)).astype(np.float32)
    values[3, 1] = 0.0  # a missing reading
    csv = tmp_path / "speed.csv"
    np.savetxt(csv, values, delimiter=",", header=",".join(f"{i}" for i in range(5)), comments="")
    ref = gru_losloop.load(csv, 0.7, 0.1, 12, 12)
    times = np.datetime64("2012-03-01T00:00") + np.arange(300) * np.timedelta64(5, "m")
    spec = SimpleNamespace(train_frac=0.7, val_frac=0.1, path=str(csv))
    fam = series_splits(RawSeries(values, times, [str(i) for i in range(5)], None), spec, TrafficDataConfig())
    for part in ("train", "val", "test"):
        assert ref["parts"][part]["n"] == len(fam[part])
        assert torch.allclose(ref["parts"][part]["x"], fam[part].x, atol=1e-5)
    assert ref["mean"] == pytest.approx(float(fam.info["scaler_mean"][0]), rel=1e-5)
    assert ref["std"] == pytest.approx(float(fam.info["scaler_std"][0]), rel=1e-4)


def test_anytime_curve_follows_validation_never_test():
    pts = [{"elapsed_s": 10, "val": 0.9, "test": 0.80, "label": "a"},
           {"elapsed_s": 20, "val": 0.95, "test": 0.10, "label": "b"},  # better on test, worse on val: not selected
           {"elapsed_s": 30, "val": 0.7, "test": 0.60, "label": "c"},
           {"elapsed_s": 70, "val": 0.1, "test": 0.05, "label": "late"}]  # past the budget
    curve = ttq.selected(pts, budget=60)
    assert [c[3] for c in curve] == ["a", "c"]
    assert ttq.at(curve, 5) is None and ttq.at(curve, 25) == 0.80 and ttq.at(curve, 60) == 0.60


def _trial(params, frac, secs):
    return SimpleNamespace(params=params, user_attrs={"config": {"train_subsample": frac}, "curves": {"epoch_seconds": secs}})


def test_final_epoch_time_extrapolates_the_same_config_over_fidelities():
    best = _trial({"lr": 1e-3}, 0.3, [40.0, 40.0])
    trials = [("explore", _trial({"lr": 1e-3}, 0.1, [20.0])), ("explore", _trial({"lr": 2e-3}, 0.1, [99.0])), ("promote", best)]
    assert ttq._final_epoch_seconds(trials, best, full=True) == pytest.approx(20.0 + 100.0 * 0.9)  # 10 s per 0.1
    assert ttq._final_epoch_seconds([("promote", best)], best, full=True) == pytest.approx(40.0 / 0.3)
    assert ttq._final_epoch_seconds(trials, best, full=False) == 40.0


def _timed(number, params, secs, vals, value=None):
    return SimpleNamespace(number=number, params=params, value=vals[-1] if value is None else value,
                           intermediate_values=dict(enumerate(vals, 1)), user_attrs={"curves": {"epoch_seconds": secs}})


def test_retrain_choice_compares_at_equal_training_time_not_at_equal_epochs():
    cheap = _timed(0, {"fusion_layers": 0}, [3.0] * 4, [0.80, 0.75, 0.67, 0.635])
    costly = _timed(1, {"fusion_layers": 1}, [11.0] * 4, [0.78, 0.64, 0.61, 0.588])  # best final value, 1 epoch by 12 s
    slow = _timed(2, {"fusion_layers": 1}, [23.0] * 6, [0.77, 0.58, 0.55, 0.55, 0.52, 0.505])  # no epoch by 12 s
    (stage, best), why = ttq._retrain_choice([("explore", cheap), ("explore", costly), ("promote", slow)])
    assert (stage, best.number) == ("explore", 0)
    assert why["horizon_s"] == 12.0 and why["candidates"] == 2 and why["best_final_value"] == "promote #2"
    # at a longer common horizon the costlier config is ahead, and it is chosen
    longer = _timed(3, {"fusion_layers": 0}, [3.0] * 16, [0.80] * 15 + [0.70])
    (_, best), why = ttq._retrain_choice([("explore", longer), ("explore", costly)])
    assert best.number == 1 and why["horizon_s"] == 44.0
    # without epoch times: the best final value
    bare = [("explore", SimpleNamespace(number=n, params={}, value=v, intermediate_values={}, user_attrs={})) for n, v in [(0, 0.7), (1, 0.6)]]
    assert ttq._retrain_choice(bare)[0][1].number == 1
