"""Seed 004's checkpoints: ``hpo train --save-every N`` keeps best.pt, latest.pt and epoch_N.pt, each a
checkpoint of the one format that the safe loader reads, each holding the weights of its own epoch."""

from __future__ import annotations

import math

import pytest

from tests.conftest import hpo_cli


def _evaluate_on_val(ckpt: dict, study_path) -> float:
    """val_mae of the checkpoint's weights, rebuilt from its config and evaluated on the validation split."""
    from hpo.data.cache import DataCache
    from hpo.spec import load_study
    from hpo.train.loop import evaluate

    study = load_study(study_path, [])
    task = study.task_cls(study.dataset, study.spec.task.target, DataCache(str(study_path.parent / "cache")))
    train_cfg, model_cfg, data_cfg = task.split_config(ckpt["config"])
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits)
    model.load_state_dict(ckpt["model_state"])
    return evaluate(task, model, splits, "val", train_cfg.batch_size, device="cpu")["val_mae"]


def test_save_every_2_over_6_epochs_keeps_epochs_2_4_6_latest_and_best(toy_study, tmp_path):
    from hpo.store.checkpoint import load_checkpoint

    path = toy_study()  # training: 6 epochs, no early stopping
    out = tmp_path / "ckpts"
    r = hpo_cli("train", path, "--baseline", "current", "--save-every", "2", "--out", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr

    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.pt", "epoch_2.pt", "epoch_4.pt", "epoch_6.pt", "latest.pt"], names  # no temporary file left
    ckpts = {name: load_checkpoint(out / name) for name in names}  # weights_only=True: tensors and plain data
    for name, epoch in [("epoch_2.pt", 2), ("epoch_4.pt", 4), ("epoch_6.pt", 6), ("latest.pt", 6)]:
        assert ckpts[name]["epoch"] == epoch
        assert ckpts[name]["task"] == "toy" and ckpts[name]["config"]["lr"] == 1.0e-2
    best = ckpts["best.pt"]
    assert 1 <= best["best_epoch"] <= 6 and best["epoch"] == best["best_epoch"]
    assert ckpts["latest.pt"]["best_epoch"] == best["best_epoch"]  # the best epoch as of the last epoch

    # each file holds the weights of its epoch: evaluating them gives the val_mae recorded with them
    for name in ("epoch_2.pt", "epoch_4.pt", "latest.pt", "best.pt"):
        assert math.isclose(_evaluate_on_val(ckpts[name], path), ckpts[name]["metrics"]["val_mae"], rel_tol=1e-5), name
    assert ckpts["epoch_2.pt"]["metrics"]["val_mae"] != ckpts["epoch_6.pt"]["metrics"]["val_mae"]
    assert f"checkpoint: {out / 'best.pt'}" in r.stdout


def test_without_save_every_only_best_and_latest(toy_study, tmp_path):
    from hpo.store.checkpoint import load_checkpoint

    path = toy_study()
    out = tmp_path / "ckpts"
    r = hpo_cli("train", path, "--baseline", "current", "--out", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "latest.pt"]
    assert load_checkpoint(out / "latest.pt")["epoch"] == 6


def test_negative_save_every_is_a_usage_error_before_training(toy_study, tmp_path):
    path = toy_study()
    out = tmp_path / "ckpts"
    r = hpo_cli("train", path, "--baseline", "current", "--save-every", "-1", "--out", out)
    assert r.returncode == 2
    assert "--save-every: must be >= 0" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("eval_every", [1, 2])
def test_fit_hands_every_epoch_to_on_epoch_state(eval_every):
    """Every trained epoch reaches the callback, evaluated or not; its state is a CPU copy taken when asked."""
    import torch

    from hpo.data.cache import DataCache
    from hpo.tasks import get_task
    from hpo.train import fit

    task_cls = get_task("toy")
    task = task_cls(task_cls.DatasetSpec(n_samples=64), None, DataCache(None))
    train_cfg, model_cfg, data_cfg = task.split_config({"epochs": 4, "batch_size": 16, "eval_every": eval_every, "hidden": 8})
    seen: list = []
    result = fit(task, task.load(data_cfg), train_cfg, model_cfg, monitor="val_mae",
                 on_epoch_state=lambda snap: seen.append((snap.epoch, "val_mae" in snap.metrics, snap.best_epoch, snap.state())))
    assert [e for e, *_ in seen] == [1, 2, 3, 4]
    assert [has_val for _, has_val, *_ in seen] == [(e % eval_every == 0) or e == 4 for e in (1, 2, 3, 4)]
    assert seen[-1][2] == result.best_epoch
    last_state = seen[-1][3]
    assert all(t.device == torch.device("cpu") for t in last_state.values())
    assert not torch.equal(seen[0][3]["head.weight"], last_state["head.weight"])  # a copy per epoch, not a live view


STAGED = """
stages:
  - name: first
    budget: {n_trials: 2}
  - name: short
    training: {epochs: 4}
    baselines:
      wide_short: {extends: current, hidden: 8}
"""


def test_a_staged_studys_stage_baseline_trains_with_that_stages_fidelity(toy_study, tmp_path):
    from hpo.store.checkpoint import load_checkpoint

    path = toy_study(extra=STAGED)
    out = tmp_path / "ckpts"
    r = hpo_cli("train", path, "--baseline", "wide_short", "--save-every", "2", "--out", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "epoch_2.pt", "epoch_4.pt", "latest.pt"]  # the stage's 4 epochs
    latest = load_checkpoint(out / "latest.pt")
    assert latest["epoch"] == 4 and latest["config"]["hidden"] == 8 and latest["config"]["epochs"] == 4

    r = hpo_cli("train", path, "--stage", "nope", "--baseline", "current", "--out", out)
    assert r.returncode == 2 and "--stage" in r.stderr and "short" in r.stderr
