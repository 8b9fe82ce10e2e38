"""Tests of the traffic task (models/traffic): model variants, masked metrics, every data format on
files written here, the cache, the restricted pickle, the training loop and the shipped YAML files.

Everything runs on tiny tensors on CPU in seconds; nothing reads ../shared/data.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hpo.data.cache import DataCache
from hpo.errors import DataError
from hpo.data.safe_pickle import UnsafePickleError
from hpo.tasks import get_task
from hpo.train import TrainConfig, fit
from models.traffic import TrafficConfig, TrafficDataConfig, TrafficDataset, TrafficTask
from models.traffic.augment import augment
from models.traffic.config import FUSION_TYPES, POSITIONAL_ENCODINGS
from models.traffic.data import WindowLoader
from models.traffic.metrics import masked_loss, masked_metrics
from models.traffic.model import TrafficTransformer

ROOT = Path(__file__).resolve().parents[2]


SMALL = dict(embed_dim=8, num_heads=2, mlp_ratio=1.0, fusion_heads=2, dropout=0.0,
             temporal_depth_1=1, spatial_depth_1=1, temporal_depth_2=1, spatial_depth_2=1)


def _model(N=4, L=4, H=3, F=2, Ft=1, adj=None, **over) -> TrafficTransformer:
    cfg = TrafficConfig(**{**SMALL, **over})
    return TrafficTransformer(cfg, n_nodes=N, in_features=F, time_features=Ft, input_len=L, output_len=H, adj=adj,
                              scaler_mean=[50.0], scaler_std=[10.0])


def _one_step(model, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, L, H = model.n_nodes, model.input_len, model.output_len
    F = model.input_proj.in_features
    Ft = model.query_proj.in_features if model.query_proj is not None else 0
    batch = {"x": torch.randn(B, L, N, F, generator=g), "y": 40 + 10 * torch.rand(B, H, N, generator=g),
             "tf": torch.rand(B, H, Ft, generator=g)}
    batch["y"][0, 0, 0] = 0.0  # a missing reading
    task = TrafficTask(TrafficDataset.model_validate({"format": "synthetic"}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    out = task.step(model, batch, train=True)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    opt.step()
    return out, grads


def _ring_adj(N):
    a = np.eye(N, dtype=np.float32)
    for i in range(N):
        a[i, (i + 1) % N] = 0.5
    return a


# ------------------------------------------------------------------------------------------------
# registry and configs
# ------------------------------------------------------------------------------------------------
def test_registered_and_config_keys():
    assert get_task("traffic") is TrafficTask
    keys = TrafficTask.config_keys()
    for k in ("lr_encoder", "lr_decoder", "lr_head", "embed_dim", "fusion_type", "input_len", "noise_std",
              "grad_accum_steps", "scheduler"):
        assert k in keys
    train, model, data = TrafficTask.split_config({"lr": 5e-4, "lr_head": 1e-3, "embed_dim": 96, "input_len": 24})
    assert train.group_lr == {"head": 1e-3} and model.embed_dim == 96 and data.input_len == 24
    assert TrafficTask.needs_target is False and TrafficTask.default_objective == "val_mae"
    assert list(TrafficTask.metrics)[0] == "mae"
    d = TrafficConfig()  # the plan's Phase-1 baseline
    assert (d.embed_dim, d.num_heads, d.fusion_type, d.positional_encoding_type) == (96, 4, "gated", "fixed")
    assert (d.temporal_depth_1, d.spatial_depth_1, d.temporal_depth_2, d.spatial_depth_2) == (2, 2, 2, 2)


@pytest.mark.parametrize("bad, msg", [
    ({"embed_dim": 10, "num_heads": 4}, "multiple of num_heads"),
    ({"embed_dim": 12, "num_heads": 4, "positional_encoding_type": "rotary"}, "even head width"),
    ({"fusion_type": "sum"}, "fusion_type must be one of"),
    ({"fusion_type": "cross_attn", "embed_dim": 96, "fusion_heads": 5}, "fusion_heads"),
    ({"mask_ratio": 1.5}, "mask_ratio"),
])
def test_config_rejects(bad, msg):
    with pytest.raises(ValueError, match=msg):
        TrafficConfig(**bad)


def test_dataset_spec_dispatch(tmp_path):
    spec = TrafficDataset.model_validate({"format": "dcrnn_h5", "path": "m.h5", "adj": "adj_mx.pkl"},
                                         context={"base_dir": str(tmp_path)})
    assert type(spec).__name__ == "DcrnnH5Dataset" and spec.path == tmp_path / "m.h5"
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'csv', 'dcrnn_h5', 'dcrnn_npz', 'pems_npz', 'synthetic'") as e:
        TrafficDataset.model_validate({"format": "h5", "path": "m.h5"})
    assert e.value.errors()[0]["type"] == "union_tag_invalid"
    with pytest.raises(ValidationError) as e:
        TrafficDataset.model_validate({"path": "m.h5"})
    assert e.value.errors()[0]["type"] == "union_tag_not_found"
    assert TrafficDataset.variant_for({"format": "csv"}).__name__ == "CsvDataset"
    with pytest.raises(ValidationError, match="Extra inputs"):
        TrafficDataset.model_validate({"format": "csv", "path": "a.csv", "heder": True})
    with pytest.raises(ValidationError, match="train_frac \\+ val_frac"):
        TrafficDataset.model_validate({"format": "synthetic", "train_frac": 0.8, "val_frac": 0.2})


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pe", POSITIONAL_ENCODINGS)
@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_every_fusion_and_position_trains_one_step(fusion, pe):
    model = _model(fusion_type=fusion, positional_encoding_type=pe)
    out, grads = _one_step(model)
    assert out.pred.shape == (2, 3, 4) and out.target.shape == (2, 3, 4)
    assert torch.isfinite(out.loss) and out.loss > 0
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mode", ["none", "mask", "bias"])
def test_spatial_graph_modes(mode):
    model = _model(N=5, adj=_ring_adj(5), spatial_graph=mode, graph_hops=2)
    out, grads = _one_step(model)
    assert torch.isfinite(out.loss) and all(torch.isfinite(g).all() for g in grads)
    if mode == "mask":  # ring 0->1->2->3->4->0, symmetrised; within 2 hops node 0 reaches every node
        assert model.graph.dtype == torch.bool and model.graph[0].tolist() == [True, True, True, True, True]
        m1 = _model(N=5, adj=_ring_adj(5), spatial_graph="mask", graph_hops=1)
        assert m1.graph[0].tolist() == [True, True, False, False, True]


def test_spatial_graph_needs_adjacency():
    with pytest.raises(ValueError, match="needs a sensor graph"):
        _model(spatial_graph="mask")


def test_24_in_12_out():
    model = _model(N=3, L=24, H=12)
    out, _ = _one_step(model)
    assert out.pred.shape == (2, 12, 3) and torch.isfinite(out.loss)


def test_asymmetric_depth_1_1_3_3():
    model = _model(temporal_depth_1=1, spatial_depth_1=1, temporal_depth_2=3, spatial_depth_2=3, stochastic_depth_rate=0.1)
    assert (len(model.stage1.temporal), len(model.stage1.spatial)) == (1, 1)
    assert (len(model.stage2.temporal), len(model.stage2.spatial)) == (3, 3)
    rates = [b.drop_path.p for b in model.stage2.temporal]
    assert rates == sorted(rates) and math.isclose(rates[-1], 0.1)  # linear in depth up to the rate
    out, _ = _one_step(model)
    assert torch.isfinite(out.loss)


def test_stages_share_no_parameters():
    model = _model()
    s1 = {id(p) for p in model.stage1.parameters()}
    assert not s1 & {id(p) for p in model.stage2.parameters()}


@pytest.mark.parametrize("over, Ft", [({}, 1), ({"fusion_type": "cross_attn", "positional_encoding_type": "learnable"}, 0),
                                      ({"spatial_graph": "bias", "positional_encoding_type": "relative",
                                        "fusion_type": "gated_residual", "node_embedding": False}, 2)])
def test_param_groups_cover_every_parameter_once(over, Ft):
    model = _model(N=5, Ft=Ft, F=1 + Ft, adj=_ring_adj(5), **over)
    groups = model.param_groups()
    assert set(groups) == set(TrafficTask.param_groups)
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert all(groups.values())


def test_layerwise_learning_rates_reach_the_optimizer():
    from hpo.train.optim import make_optimizer

    model = _model()
    cfg = TrainConfig(lr=5e-4, group_lr={"encoder": 3e-4, "decoder": 5e-4, "head": 1e-3})
    opt = make_optimizer(TrafficTask(TrafficDataset.model_validate({"format": "synthetic"})).group_parameters(model), cfg)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["encoder"] == 3e-4 and lrs["decoder"] == 5e-4 and lrs["head"] == 1e-3


def test_eval_is_deterministic_and_batch_size_one_works():
    model = _model(dropout=0.2, stochastic_depth_rate=0.2).eval()
    x, tf = torch.randn(1, 4, 4, 2), torch.rand(1, 3, 1)
    with torch.no_grad():
        a, b = model(x, tf), model(x, tf)
    assert a.shape == (1, 3, 4) and torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# metrics and loss
# ------------------------------------------------------------------------------------------------
def test_masked_metrics_by_hand():
    # (S=1, H=3, N=2); zeros in the target are missing readings
    target = torch.tensor([[[10.0, 0.0], [20.0, 40.0], [30.0, 0.0]]])
    pred = torch.tensor([[[12.0, 5.0], [18.0, 50.0], [33.0, 7.0]]])
    m = masked_metrics(pred, target)
    # observed errors: 2 (of 10), -2 (of 20), 10 (of 40), 3 (of 30)
    assert math.isclose(m["mae"], 17 / 4)
    assert math.isclose(m["rmse"], math.sqrt((4 + 4 + 100 + 9) / 4))
    assert math.isclose(m["mape"], (0.2 + 0.1 + 0.25 + 0.1) / 4 * 100)
    assert math.isclose(m["mae_h3"], 3.0) and math.isclose(m["rmse_h3"], 3.0) and math.isclose(m["mape_h3"], 10.0)
    assert "mae_h6" not in m and "mae_h12" not in m  # only horizons <= output_len
    loss = masked_loss(pred, target)
    assert math.isclose(float(loss), 17 / 4)


def test_per_horizon_metrics_pick_the_right_step():
    target = torch.full((2, 12, 3), 50.0)
    pred = target.clone()
    pred[:, 2] += 1.0  # error only at horizon 3
    pred[:, 11] -= 4.0  # and at horizon 12
    m = masked_metrics(pred, target)
    assert m["mae_h3"] == 1.0 and m["mae_h6"] == 0.0 and m["mae_h12"] == 4.0
    assert math.isclose(m["mae"], 5 / 12)
    assert set(TrafficTask.metrics) <= set(m)


def test_masked_loss_ignores_missing_targets():
    target = torch.tensor([[[10.0, 0.0]]])
    pred = torch.tensor([[[11.0, 99.0]]], requires_grad=True)
    loss = masked_loss(pred, target)
    loss.backward()
    assert loss.item() == 1.0 and pred.grad[0, 0, 1] == 0.0
    assert math.isnan(masked_metrics(pred.detach(), torch.zeros(1, 1, 2))["mae"])
    for kind in ("huber", "mse"):
        assert torch.isfinite(masked_loss(pred, target, kind))


# ------------------------------------------------------------------------------------------------
# data: helpers writing small files
# ------------------------------------------------------------------------------------------------
T_STEPS, IDS = 120, ["717447", "717446", "773869", "767541"]


def _series(T=T_STEPS, N=4):
    """Readings that encode their time step (t + 1 + 1000 * node) so windows can be traced; a few zeros."""
    v = (np.arange(T)[:, None] + 1 + 1000 * np.arange(N)[None, :]).astype(np.float32)
    v[5, 1] = 0.0
    v[100, 2] = 0.0
    return v


def _frame(values=None, ids=IDS):
    import pandas as pd

    values = _series() if values is None else values
    idx = pd.date_range("2012-03-01 00:00", periods=len(values), freq="5min")
    return pd.DataFrame(values, index=idx, columns=ids)


def _write_pkl(path, ids, adj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump([list(ids), {s: i for i, s in enumerate(ids)}, adj], f, protocol=protocol)


def _task(tmp_path, ds: dict, cache: DataCache | None = None, target=None) -> TrafficTask:
    spec = TrafficDataset.model_validate(ds, context={"base_dir": str(tmp_path)})
    return TrafficTask(spec, target=target, cache=cache or DataCache(None))


DC = TrafficDataConfig(input_len=4, output_len=3)


def _all_windows(splits, split):
    batches = list(WindowLoader(splits[split], 1000, shuffle=False))
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


# ------------------------------------------------------------------------------------------------
# data formats
# ------------------------------------------------------------------------------------------------
def test_h5_with_dcrnn_pickle_aligned_by_sensor_id(tmp_path):
    _frame().to_hdf(tmp_path / "metr-la.h5", key="df")
    pkl_ids = IDS[::-1]  # the adjacency lists the sensors in another order
    adj = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    _write_pkl(tmp_path / "adj_mx.pkl", pkl_ids, adj, protocol=0)
    task = _task(tmp_path, {"format": "dcrnn_h5", "path": "metr-la.h5", "adj": "adj_mx.pkl"})
    assert task.check() == []
    splits = task.load(DC)
    info = splits.info
    assert info["sensor_ids"] == IDS and info["n_nodes"] == 4 and info["in_features"] == 2
    order = [pkl_ids.index(s) for s in IDS]
    np.testing.assert_array_equal(info["adj"], adj[np.ix_(order, order)])
    w = _all_windows(splits, "train")
    assert w["x"].shape[1:] == (4, 4, 2) and w["y"].shape[1:] == (3, 4) and w["tf"].shape[1:] == (3, 1)
    # time of day: the first target of the first window is step 4 = 00:20
    assert math.isclose(float(w["tf"][0, 0, 0]), 20 / 1440, rel_tol=1e-5)
    assert math.isclose(float(w["x"][0, 1, 0, 1]), 5 / 1440, rel_tol=1e-5)


@pytest.mark.filterwarnings("ignore::tables.NaturalNameWarning")  # pandas naming a numeric data column
@pytest.mark.parametrize("fmt", [{"format": "table"}, {"format": "table", "data_columns": ["773869"]}])
def test_h5_table_format_reads_like_the_fixed_format(tmp_path, fmt):
    """pandas' table format (columns in blocks and data columns) gives the same series as the fixed one."""
    _frame().to_hdf(tmp_path / "fixed.h5", key="df")
    _frame().to_hdf(tmp_path / "table.h5", key="df", **fmt)
    a = _task(tmp_path, {"format": "dcrnn_h5", "path": "fixed.h5"}).load(DC)
    b = _task(tmp_path, {"format": "dcrnn_h5", "path": "table.h5"}).load(DC)
    assert a.info["sensor_ids"] == b.info["sensor_ids"] == IDS
    for split in ("train", "val", "test"):
        wa, wb = _all_windows(a, split), _all_windows(b, split)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_chronological_split_and_train_only_scaler(tmp_path):
    values = _series()
    _frame(values).to_hdf(tmp_path / "m.h5", key="df")
    splits = _task(tmp_path, {"format": "dcrnn_h5", "path": "m.h5"}).load(DC)
    n_train, n_val = int(round(T_STEPS * 0.7)), int(round(T_STEPS * 0.1))
    assert splits.info["split_steps"] == {"train": n_train, "val": n_val, "test": T_STEPS - n_train - n_val}
    # parts are disjoint in time and in order: node 0 reads t + 1
    spans = {}
    for split in ("train", "val", "test"):
        w = _all_windows(splits, split)
        steps = torch.cat([w["y"][:, :, 0].flatten()])
        spans[split] = (float(steps.min()), float(steps.max()))
        assert len(w["y"]) == splits.size(split)
    assert spans["train"][1] <= n_train < spans["val"][0] and spans["val"][1] <= n_train + n_val < spans["test"][0]
    # in time order without shuffling; the first window's inputs are steps 1..4 of node 0
    w = _all_windows(splits, "train")
    assert torch.all(w["y"][1:, 0, 0] - w["y"][:-1, 0, 0] == 1)
    # scaler: observed readings of the train part only
    tr = values[:n_train]
    obs = tr[tr != 0]
    assert math.isclose(float(splits.info["scaler_mean"][0]), obs.mean(), rel_tol=1e-5)
    assert math.isclose(float(splits.info["scaler_std"][0]), obs.std(), rel_tol=1e-5)
    assert not math.isclose(float(splits.info["scaler_mean"][0]), values[values != 0].mean(), rel_tol=1e-3)
    # missing inputs are the scaled mean (0); targets keep the raw 0
    x0 = (values[:4, 0] - obs.mean()) / obs.std()
    np.testing.assert_allclose(w["x"][0, :, 0, 0].numpy(), x0, rtol=1e-5)
    assert float(w["x"][2, 3, 1, 0]) == 0.0 and float(w["x"][1, 3, 1, 0]) != 0.0  # row 5 of node 1 is missing


def test_shuffled_loader_is_seeded_and_stays_in_its_part(tmp_path):
    _frame().to_hdf(tmp_path / "m.h5", key="df")
    task = _task(tmp_path, {"format": "dcrnn_h5", "path": "m.h5"})
    splits = task.load(DC)
    a = [b["y"][:, 0, 0] for b in task.loader(splits, "train", 16, shuffle=True, seed=3)]
    b = [b["y"][:, 0, 0] for b in task.loader(splits, "train", 16, shuffle=True, seed=3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ys = torch.cat(a)
    assert sorted(ys.tolist()) == sorted(_all_windows(splits, "train")["y"][:, 0, 0].tolist())
    assert not torch.equal(ys, torch.sort(ys).values)


def test_per_node_scaler(tmp_path):
    values = _series()
    _frame(values).to_hdf(tmp_path / "m.h5", key="df")
    splits = _task(tmp_path, {"format": "dcrnn_h5", "path": "m.h5"}).load(TrafficDataConfig(4, 3, scaler="per_node"))
    tr = values[: int(round(T_STEPS * 0.7))]
    expect = [tr[:, j][tr[:, j] != 0].mean() for j in range(4)]
    np.testing.assert_allclose(splits.info["scaler_mean"], expect, rtol=1e-5)


def test_csv_with_string_header_and_csv_adjacency(tmp_path):
    import pandas as pd

    values = _series()
    pd.DataFrame(values, columns=["a", "b", "c", "d"]).to_csv(tmp_path / "speed.csv", index=False)
    np.savetxt(tmp_path / "adj.csv", _ring_adj(4), delimiter=",")
    task = _task(tmp_path, {"format": "csv", "path": "speed.csv", "adj": "adj.csv", "start": "2012-03-01 00:00"})
    assert task.check() == []
    splits = task.load(DC)
    assert splits.info["sensor_ids"] == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(splits.info["adj"], _ring_adj(4))
    assert float(_all_windows(splits, "train")["y"][0, 0, 0]) == 5.0


@pytest.mark.parametrize("header", [None, True])
def test_csv_with_numeric_sensor_id_header(tmp_path, header):
    import pandas as pd

    values = (_series() % 70 + 1).astype(np.float32)  # speeds, ids are 6-digit integers (like los_speed.csv)
    pd.DataFrame(values, columns=IDS).to_csv(tmp_path / "los_speed.csv", index=False)
    task = _task(tmp_path, {"format": "csv", "path": "los_speed.csv", "header": header, "start": "2012-03-01"})
    splits = task.load(DC)
    assert splits.info["sensor_ids"] == IDS and splits.info["split_steps"]["train"] == 84


@pytest.mark.parametrize("header", [None, False])
def test_csv_without_header(tmp_path, header):
    values = _series()
    np.savetxt(tmp_path / "speed.csv", values, delimiter=",", fmt="%.3f")
    task = _task(tmp_path, {"format": "csv", "path": "speed.csv", "header": header, "adj": "adj.csv"})
    np.savetxt(tmp_path / "adj.csv", _ring_adj(4), delimiter=",")
    splits = task.load(TrafficDataConfig(4, 3, time_of_day=False))
    assert splits.info["sensor_ids"] is None and splits.info["in_features"] == 1
    assert sum(splits.info["split_steps"].values()) == T_STEPS  # the first row is data
    assert float(_all_windows(splits, "train")["x"].shape[0]) == 84 - 7 + 1


def test_csv_time_features_need_a_clock(tmp_path):
    np.savetxt(tmp_path / "speed.csv", _series(), delimiter=",")
    with pytest.raises(DataError, match="time features need timestamps"):
        _task(tmp_path, {"format": "csv", "path": "speed.csv", "header": False}).load(DC)


def test_csv_time_column_and_day_of_week(tmp_path):
    df = _frame().reset_index(names="timestamp")
    df.to_csv(tmp_path / "s.csv", index=False)
    task = _task(tmp_path, {"format": "csv", "path": "s.csv", "time_column": "timestamp"})
    splits = task.load(TrafficDataConfig(4, 3, day_of_week=True))
    assert splits.info["in_features"] == 3 and splits.info["sensor_ids"] == IDS
    tf = _all_windows(splits, "train")["tf"]
    assert math.isclose(float(tf[0, 0, 1]), 3 / 7, rel_tol=1e-6)  # 2012-03-01 was a Thursday


def test_distance_list_adjacency(tmp_path):
    import pandas as pd

    pd.DataFrame(_series(), columns=IDS).to_csv(tmp_path / "s.csv", index=False)
    rows = ["from,to,cost", f"{IDS[0]},{IDS[1]},100", f"{IDS[1]},{IDS[2]},300", f"{IDS[2]},{IDS[3]},5000", f"{IDS[0]},999,1"]
    (tmp_path / "dist.csv").write_text("\n".join(rows) + "\n")
    task = _task(tmp_path, {"format": "csv", "path": "s.csv", "adj": "dist.csv", "header": True, "start": "2012-03-01"})
    adj = task.load(DC).info["adj"]
    d = np.array([100.0, 300.0, 5000.0])
    assert math.isclose(adj[0, 1], math.exp(-((100 / d.std()) ** 2)), rel_tol=1e-5)
    assert adj[2, 3] == 0.0 and adj[1, 0] == 0.0 and np.all(np.diag(adj) == 1)


def _write_npz(folder: Path, N=3, Tx=12, Ty=12, F=2):
    rng = np.random.default_rng(0)
    folder.mkdir()
    means = {"train": 40.0, "val": 60.0, "test": 60.0}
    for split, S in (("train", 20), ("val", 5), ("test", 6)):
        x = np.zeros((S, Tx, N, F))
        y = np.zeros((S, Ty, N, F))
        x[..., 0] = means[split] + rng.normal(0, 5, (S, Tx, N))
        y[..., 0] = means[split] + rng.normal(0, 5, (S, Ty, N))
        x[..., 1] = np.arange(Tx)[None, :, None] / 288
        y[..., 1] = (Tx + np.arange(Ty))[None, :, None] / 288
        x[0, 0, 0, 0] = 0.0
        np.savez_compressed(folder / f"{split}.npz", x=x, y=y, x_offsets=np.arange(-Tx + 1, 1)[:, None],
                            y_offsets=np.arange(1, Ty + 1)[:, None])
    return means


def test_dcrnn_npz(tmp_path):
    _write_npz(tmp_path / "METR-LA")
    task = _task(tmp_path, {"format": "dcrnn_npz", "dir": "METR-LA"})
    assert task.check() == []
    splits = task.load(TrafficDataConfig(input_len=6, output_len=12))
    assert [splits.size(s) for s in ("train", "val", "test")] == [20, 5, 6]
    with np.load(tmp_path / "METR-LA" / "train.npz") as z:
        tr = z["x"][..., 0]
        y_first = z["y"][0, :, :, 0]
    obs = tr[tr != 0]
    assert math.isclose(float(splits.info["scaler_mean"][0]), obs.mean(), rel_tol=1e-5)  # train only (val/test are at 60)
    w = _all_windows(splits, "train")
    assert w["x"].shape == (20, 6, 3, 2) and w["tf"].shape == (20, 12, 1)
    np.testing.assert_allclose(w["x"][0, :, 0, 1].numpy(), np.arange(6, 12) / 288, rtol=1e-6)  # the last 6 steps
    np.testing.assert_allclose(w["y"][0].numpy(), y_first, rtol=1e-6)
    with pytest.raises(DataError, match="must not exceed"):
        _task(tmp_path, {"format": "dcrnn_npz", "dir": "METR-LA"}).load(TrafficDataConfig(input_len=24))


def test_pems_npz_channels_as_target(tmp_path):
    data = np.stack([_series(), _series() / 100, 70 - _series() / 10], axis=2)  # flow, occupancy, speed
    data[:, :, 2] = np.where(_series() == 0, 0, data[:, :, 2])
    np.savez(tmp_path / "PEMS04.npz", data=data)
    (tmp_path / "distance.csv").write_text("from,to,cost\n0,1,100.0\n1,2,200.0\n2,3,300.0\n")
    ds = {"format": "pems_npz", "path": "PEMS04.npz", "adj": "distance.csv", "start": "2018-01-01"}
    flow = _task(tmp_path, ds).load(DC)
    speed_task = _task(tmp_path, ds, target="speed")
    assert speed_task.check() == []
    speed = speed_task.load(DC)
    assert flow.info["sensor_ids"] == ["0", "1", "2", "3"] and flow.info["adj"][0, 1] > 0 and flow.info["adj"][0, 3] == 0
    np.testing.assert_allclose(_all_windows(speed, "val")["y"].numpy()[0, 0], data[84 + 4, :, 2], rtol=1e-6)
    np.testing.assert_allclose(_all_windows(flow, "val")["y"].numpy()[0, 0], data[84 + 4, :, 0], rtol=1e-6)
    [p] = _task(tmp_path, ds, target="volume").check()
    assert p.path == "task.target" and "flow, occupancy, speed" in p.message
    [p] = _task(tmp_path, {"format": "csv", "path": "x.csv"}, target="speed").check()[:1]
    assert p.path == "task.target"


def test_synthetic_generator_has_graph_periodicity_and_waves():
    from models.traffic.data import generate_synthetic

    spec = TrafficDataset.model_validate({"format": "synthetic", "n_nodes": 8, "n_days": 7, "steps_per_day": 96,
                                          "events_per_day": 0, "missing_rate": 0.0, "reading_noise": 0.0})
    raw = generate_synthetic(spec)
    assert raw.values.shape == (7 * 96, 8) and raw.adj.shape == (8, 8) and np.all(np.diag(raw.adj) == 1)
    mon, tue, sat = raw.values[:96], raw.values[96:192], raw.values[5 * 96 : 6 * 96]
    np.testing.assert_allclose(mon, tue, atol=1e-4)  # daily periodicity (no noise, no events)
    assert (mon.mean(1).min() < sat.mean(1).min() - 5)  # weekday rush hours are deeper
    again = generate_synthetic(spec)
    np.testing.assert_array_equal(raw.values, again.values)
    noisy = generate_synthetic(spec.model_copy(update={"missing_rate": 0.05, "events_per_day": 3}))
    assert 0.02 < (noisy.values == 0).mean() < 0.08


# ------------------------------------------------------------------------------------------------
# cache, checks, unsafe pickles
# ------------------------------------------------------------------------------------------------
def test_cache_hit_on_second_load(tmp_path):
    _frame().to_hdf(tmp_path / "m.h5", key="df")
    ds = {"format": "dcrnn_h5", "path": "m.h5"}
    cache = DataCache(tmp_path / "cache")
    task = _task(tmp_path, ds, cache)
    first = task.load(DC)
    assert task.load(DC) is first and cache.stats.memory_hits == 1 and cache.stats.misses == 1
    other = DataCache(tmp_path / "cache")  # another worker: from disk
    again = _task(tmp_path, ds, other).load(DC)
    assert other.stats.disk_hits == 1 and other.stats.misses == 0
    assert torch.equal(_all_windows(again, "val")["x"], _all_windows(first, "val")["x"])
    _task(tmp_path, ds, other).load(TrafficDataConfig(input_len=6, output_len=3))  # another window: a new entry
    assert other.stats.misses == 1
    df = _frame()
    df.iloc[0, 0] = 99.0
    df.to_hdf(tmp_path / "m.h5", key="df")  # new content: a new entry
    _task(tmp_path, ds, other).load(DC)
    assert other.stats.misses == 2


def test_check_reports_missing_files_mismatches_and_target(tmp_path):
    import pandas as pd

    task = _task(tmp_path, {"format": "dcrnn_h5", "path": "nope.h5", "adj": "adj_mx.pkl"}, target="speed")
    problems = {p.path: p for p in task.check()}
    assert set(problems) == {"task.target", "task.dataset.path", "task.dataset.adj"}
    assert "does not exist" in problems["task.dataset.path"].message

    pd.DataFrame(_series(), columns=list("abcd")).to_csv(tmp_path / "s.csv", index=False)
    np.savetxt(tmp_path / "adj5.csv", np.eye(5), delimiter=",")
    [p] = _task(tmp_path, {"format": "csv", "path": "s.csv", "adj": "adj5.csv"}).check()
    assert p.path == "task.dataset.adj" and "one row per sensor (4" in p.message

    _frame().to_hdf(tmp_path / "m.h5", key="df")
    _write_pkl(tmp_path / "adj_mx.pkl", IDS[:3] + ["000000"], np.eye(4, dtype=np.float32))
    [p] = _task(tmp_path, {"format": "dcrnn_h5", "path": "m.h5", "adj": "adj_mx.pkl"}).check()
    assert p.path == "task.dataset.adj" and "1 of 4 are missing" in p.message and IDS[3] in p.message

    _write_npz(tmp_path / "npz")
    np.savetxt(tmp_path / "adj4.csv", np.eye(4), delimiter=",")
    [p] = _task(tmp_path, {"format": "dcrnn_npz", "dir": "npz", "adj": "adj4.csv"}).check()
    assert "one row per sensor (3" in p.message


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_adjacency_pickle_is_refused(tmp_path):
    _frame().to_hdf(tmp_path / "m.h5", key="df")
    marker = tmp_path / "pwned"
    with open(tmp_path / "adj_mx.pkl", "wb") as f:
        pickle.dump([IDS, {s: i for i, s in enumerate(IDS)}, _Evil(marker)], f, protocol=0)
    task = _task(tmp_path, {"format": "dcrnn_h5", "path": "m.h5", "adj": "adj_mx.pkl"})
    [p] = task.check()
    assert "posix.system" in p.message and "nothing it names is run" in p.message and "adj_mx.pkl" in p.message
    with pytest.raises(UnsafePickleError):
        task.load(DC)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# augmentation and the step
# ------------------------------------------------------------------------------------------------
def test_augmentations():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 5, 2)
    x[0, 0, 0, 0] = 0.0
    y = 40 + torch.rand(8, 3, 5)
    y[1, 0, 0] = 0.0
    tf = torch.rand(8, 3, 1)
    same = augment(x, y, tf, TrafficConfig())
    assert same[0] is x and same[1] is y  # nothing on: untouched
    xa, _, _ = augment(x, y, tf, TrafficConfig(noise_std=0.1))
    assert not torch.equal(xa[..., 0], x[..., 0]) and torch.equal(xa[..., 1], x[..., 1]) and xa[0, 0, 0, 0] == 0
    xa, _, _ = augment(x, y, tf, TrafficConfig(mask_ratio=0.5))
    frac = float((xa[..., 0] == 0).float().mean())
    assert 0.3 < frac < 0.7
    xa, _, _ = augment(x, y, tf, TrafficConfig(temporal_shift=2))
    for b in range(8):  # each window's signal delayed by 0..2 steps, time features untouched
        assert any(torch.equal(xa[b, s:, :, 0], x[b, : 6 - s, :, 0]) for s in range(3))
    assert torch.equal(xa[..., 1], x[..., 1])
    _, ya, _ = augment(x, y, tf, TrafficConfig(mixup_alpha=0.2))
    assert not torch.equal(ya, y) and (ya == 0).sum() >= 1  # mixed targets missing where either is missing
    xa, ya, _ = augment(x, y, tf, TrafficConfig(cutmix_prob=0.99))
    assert torch.isfinite(xa).all() and set(ya.flatten().tolist()) <= set(y.flatten().tolist())


def test_step_augments_only_in_training():
    model = _model(noise_std=0.5, mask_ratio=0.3, temporal_shift=2, mixup_alpha=0.2, cutmix_prob=0.5)
    task = TrafficTask(TrafficDataset.model_validate({"format": "synthetic"}))
    batch = {"x": torch.randn(4, 4, 4, 2), "y": 40 + torch.rand(4, 3, 4), "tf": torch.rand(4, 3, 1)}
    model.eval()
    with torch.no_grad():
        a, b = task.step(model, batch, train=False), task.step(model, batch, train=False)
    assert torch.equal(a.pred, b.pred) and torch.equal(a.target, batch["y"])
    model.train()
    out = task.step(model, batch, train=True)
    assert torch.isfinite(out.loss) and out.n == 4


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
SYN = {"format": "synthetic", "n_nodes": 6, "n_days": 8, "steps_per_day": 48, "events_per_day": 0, "reading_noise": 0.5}


def _fit(epochs=3, **over):
    task = _task(Path("."), SYN)
    train, model, data = TrafficTask.split_config({**TrafficTask.presets["tiny"], "epochs": epochs, "batch_size": 16, **over})
    splits = task.load(data)
    return fit(task, splits, train, model, device="cpu")


def test_fit_tiny_lowers_the_loss_and_is_reproducible():
    a = _fit()
    assert a.stop_reason == "completed" and a.epochs_run == 3
    assert a.curves["train_loss"][-1] < 0.85 * a.curves["train_loss"][0]
    assert a.curves["val_mae"][-1] < a.curves["val_mae"][0]
    assert {"val_mae_h3", "val_mae_h6", "val_mae_h12", "val_rmse", "val_mape"} <= set(a.best)
    b = _fit()
    assert a.best == b.best and a.curves["val_mae"] == b.curves["val_mae"]


def test_fit_with_layerwise_lr_onecycle_and_accumulation():
    r = _fit(epochs=2, scheduler="onecycle", lr_encoder=3e-4, lr_decoder=5e-4, lr_head=1e-3, grad_accum_steps=2,
             fusion_type="cross_attn", positional_encoding_type="rotary", spatial_graph="mask", noise_std=0.01,
             mask_ratio=0.1, temporal_shift=2)
    assert r.stop_reason == "completed" and math.isfinite(r.best["val_mae"])


# ------------------------------------------------------------------------------------------------
# the shipped YAML files, through the real study loader
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("study_file, baselines", [
    ("studies/metr_la.yaml", {"phase1", "onecycle", "warm_restarts", "cross_attn", "asymmetric_1133", "layerwise_lr",
                              "phase1_optimized"}),
    ("studies/los_loop.yaml", None),
    ("studies/smoke/traffic.yaml", {"tiny", "tiny_cross_attn"}),
])
def test_shipped_studies_load_and_their_baselines_build(study_file, baselines):
    from hpo.spec import load_study

    study = load_study(ROOT / study_file, check_data=False)
    assert study.task_cls is TrafficTask and study.objectives[0].metric == "val_mae"
    if baselines is not None:
        assert set(study.space.baselines) == baselines
    for b in study.space.baselines.values():
        config = study.space.resolve(b.params, b.overrides)
        assert not study.space.violated(config)
        train, model, data = TrafficTask.split_config(config)
        if b.name == "phase1":  # the plan's Phase-1 baseline
            assert (train.lr, train.batch_size, model.embed_dim, model.num_heads, model.fusion_type) == (5e-4, 32, 96, 4, "gated")
        if b.name == "layerwise_lr":
            assert train.group_lr == {"encoder": 3e-4, "decoder": 5e-4, "head": 1e-3}
        if b.name == "asymmetric_1133":
            assert (model.temporal_depth_1, model.spatial_depth_1, model.temporal_depth_2, model.spatial_depth_2) == (1, 1, 3, 3)
    if study_file == "studies/metr_la.yaml":  # the plan's quick test as pruning: val MAE > 4.5 from epoch 10 on
        assert (study.spec.pruner.type, study.spec.pruner.upper, study.spec.pruner.n_warmup_steps) == ("threshold", 4.5, 10)


def test_smoke_study_data_is_small():
    from hpo.spec import load_study

    study = load_study(ROOT / "studies/smoke/traffic.yaml")
    assert study.make_task().check() == []
    splits = study.make_task().load(TrafficDataConfig())
    assert splits.info["n_nodes"] == 8 and splits.size("train") < 300 and splits.size("val") > 10


def test_train_stride_subsamples_training_windows_only(tmp_path):
    from hpo.data.cache import DataCache

    T = get_task("traffic")
    task = T(T.DatasetSpec.model_validate({"format": "synthetic", "n_nodes": 5, "n_days": 1.0}), None, DataCache(tmp_path))
    full = task.load(T.DataConfig(output_len=3))
    strided = task.load(T.DataConfig(output_len=3, train_stride=4))
    n = len(full["train"])
    assert len(task.loader(strided, "train", 8, shuffle=False)) == -(-(-(-n // 4)) // 8)
    assert len(task.loader(strided, "val", 8, shuffle=False)) == len(task.loader(full, "val", 8, shuffle=False))
    starts = [b["x"] for b in task.loader(strided, "train", 1000, shuffle=False)][0]
    assert starts.shape[0] == -(-n // 4)
    assert task.cache.stats.misses == 1  # the stride only picks windows: one cached dataset
    with strided.locked_test():
        with pytest.raises(Exception):
            strided["test"]
    full["test"]  # the shared parts keep their own lock
