"""face3d: the loss, the .npz reader and splits, the transformer, and training on synthetic faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from hpo.errors import DataError
from hpo.tasks import get_task
from hpo.train import fit
from models.face3d.data import Face3DDataset
from models.face3d.model import face_loss


@pytest.fixture(scope="module")
def Task():
    return get_task("face3d")


def synthetic(**kw):
    spec = {"format": "synthetic", "n_samples": 192, "n_identities": 96, "n_keypoints": 6, "identity_dim": 8,
            "target_dim": 8, "val_fraction": 0.2, "test_fraction": 0.1}
    return Face3DDataset.model_validate({**spec, **kw})


def test_loss_is_weighted_mse_plus_one_minus_cosine_by_hand():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    # MSE over all entries: ((1)^2 + (-2)^2 + (-1)^2 + (-1)^2) / 4 = 7/4; cosines: 0 and 1 -> mean 0.5
    assert face_loss(pred, target, 0.2, 0.8).item() == pytest.approx(0.2 * 7 / 4 + 0.8 * (1 - 0.5))
    assert face_loss(pred, target, 1.0, 0.0).item() == pytest.approx(7 / 4)
    assert face_loss(target, target, 0.1, 0.9).item() == pytest.approx(0.0, abs=1e-6)


def test_step_uses_the_config_weights(Task):
    task = Task(synthetic())
    _, model_cfg, data_cfg = Task.split_config({**Task.presets["tiny"], "mse_weight": 0.1, "cosine_weight": 0.9})
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits)
    batch = next(iter(task.loader(splits, "train", 8, shuffle=False)))
    out = task.step(model, batch, train=True)
    p, t = out.pred, batch["target"]
    cos = torch.nn.functional.cosine_similarity(p, t, dim=-1).mean()
    assert out.loss.item() == pytest.approx((0.1 * ((p - t) ** 2).mean() + 0.9 * (1 - cos)).item(), rel=1e-5)
    out.loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
    m = task.compute_metrics(t, t)
    assert m["cosine"] == pytest.approx(1.0) and m["mse"] == 0.0 and m["cosine_p10"] == pytest.approx(1.0)


def write_npz(path, n=40, t=5, f=3, d=4, with_ids=True, **extra):
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.normal(size=(n, t, f)), "targets": rng.normal(size=(n, d))}
    if with_ids:
        arrays["ids"] = np.arange(n) // 4  # 10 people, 4 samples each
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def test_npz_loader_shapes_and_grouped_split(Task, tmp_path):
    write_npz(tmp_path / "faces.npz", identity=np.random.default_rng(1).normal(size=(40, 6)))
    spec = Face3DDataset.model_validate({"format": "npz", "path": "faces.npz", "val_fraction": 0.2, "test_fraction": 0.2},
                                        context={"base_dir": tmp_path})
    task = Task(spec)
    assert task.check() == []
    splits = task.load(Task.DataConfig())
    assert splits.info["n_tokens"] == 5 and splits.info["token_dim"] == 3 and splits.info["identity_dim"] == 6
    assert {k: splits.size(k) for k in ("train", "val", "test")} == {"train": 24, "val": 8, "test": 8}  # 6/2/2 ids
    train = splits["train"]
    np.testing.assert_allclose(train.inputs.reshape(-1, 3).mean(0), 0.0, atol=1e-5)  # standardised on train
    batch = next(iter(task.loader(splits, "val", 3, shuffle=False)))
    assert batch["tokens"].shape == (3, 5, 3) and batch["identity"].shape == (3, 6) and batch["target"].shape == (3, 4)
    model = task.build_model(Task.split_config(Task.presets["tiny"])[1], splits)
    assert model(batch["tokens"], batch["identity"]).shape == (3, 4)

    # samples of one id never straddle splits
    raw = np.load(tmp_path / "faces.npz")
    key = lambda part: {tuple(np.round(x, 5)) for x in part.targets}  # noqa: E731
    ids_of = {tuple(np.round(raw["targets"][i].astype(np.float32), 5)): raw["ids"][i] for i in range(40)}
    ids = {k: {ids_of[x] for x in key(splits[k])} for k in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_npz_errors(Task, tmp_path):
    np.savez(tmp_path / "bad.npz", inputs=np.zeros((4, 2, 3)))
    spec = Face3DDataset.model_validate({"format": "npz", "path": str(tmp_path / "bad.npz")})
    assert "targets" in Task(spec).check()[0].message
    with pytest.raises(DataError, match="targets"):
        Task(spec).load(Task.DataConfig())
    np.savez(tmp_path / "rows.npz", inputs=np.zeros((4, 2, 3)), targets=np.zeros((5, 2)))
    with pytest.raises(DataError, match="4 rows"):
        Task(Face3DDataset.model_validate({"format": "npz", "path": str(tmp_path / "rows.npz")})).load(Task.DataConfig())
    with pytest.raises(ValidationError, match="expected tags: 'npz', 'synthetic'"):
        Face3DDataset.model_validate({"format": "hdf5"})


def test_model_without_identity_and_config_rules(Task, tmp_path):
    write_npz(tmp_path / "f.npz", with_ids=False)
    task = Task(Face3DDataset.model_validate({"format": "npz", "path": str(tmp_path / "f.npz")}))
    splits = task.load(Task.DataConfig(standardize_inputs=False))
    assert splits.info["identity_dim"] == 0 and splits.size("val") == 4
    _, cfg, _ = Task.split_config({**Task.presets["tiny"], "pooling": "mean"})
    model = task.build_model(cfg, splits)
    batch = next(iter(task.loader(splits, "train", 2, shuffle=True)))
    assert "identity" not in batch and model(batch["tokens"]).shape == (2, 4)
    with pytest.raises(ValueError, match="divisible by nhead"):
        Task.ModelConfig(d_model=100, nhead=8)
    train_keys = {"warmup_epochs", "warmup_lr", "eta_min", "scheduler"}
    assert all(Task.config_fields()[k][0] == "train" for k in train_keys)


def test_fit_on_synthetic_raises_val_cosine_reproducibly(Task):
    task = Task(synthetic())
    train_cfg, model_cfg, data_cfg = Task.split_config(
        {**Task.presets["tiny"], "d_model": 32, "nhead": 4, "dim_feedforward": 64, "epochs": 6, "batch_size": 16})
    splits = task.load(data_cfg)
    r = fit(task, splits, train_cfg, model_cfg, monitor="val_cosine", direction="maximize")
    cos = r.curves["val_cosine"]
    assert r.best["val_cosine"] > cos[0] + 0.1, cos
    assert len(r.curves["train_loss"]) == len(r.curves["val_loss"]) == r.epochs_run  # val/train loss ratio derivable
    again = fit(task, splits, train_cfg, model_cfg, monitor="val_cosine", direction="maximize")
    assert again.curves["val_cosine"] == cos
