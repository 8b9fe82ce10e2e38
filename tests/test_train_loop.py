"""The shared training loop: early stopping, divergence, schedulers, accumulation, determinism."""

import math
from dataclasses import dataclass

import pytest
import torch

from hpo.errors import Pruned
from hpo.tasks import DatasetSpec, Splits, StepOutput, Task
from hpo.tasks import get_task
from hpo.train import TrainConfig, fit
from hpo.train.optim import make_optimizer, make_scheduler


@dataclass
class _NoModelCfg:
    scale: float = 1.0


class ScriptedTask(Task):
    """A task whose val metric follows a script, one value per epoch (to test stopping rules)."""

    name = "scripted"
    ModelConfig = _NoModelCfg
    DatasetSpec = DatasetSpec
    metrics = {"mae": "minimize"}

    def __init__(self, val_curve, train_loss=1.0):
        super().__init__(DatasetSpec())
        self.val_curve, self.train_loss, self.calls = list(val_curve), train_loss, 0

    def load(self, data_cfg):
        x = torch.zeros(4, 1)
        return Splits(x, x, x)

    def loader(self, splits, split, batch_size, *, shuffle, seed=0):
        return [splits[split]]

    def build_model(self, cfg, splits):
        return torch.nn.Linear(1, 1)

    def step(self, model, batch, *, train):
        out = model(batch)
        loss = out.pow(2).mean() * 0 + (self.train_loss if train else 0.0) + out.sum() * 0
        return StepOutput(loss=loss, pred=out.detach(), target=batch, n=len(batch))

    def compute_metrics(self, pred, target):
        self.calls += 1
        if self.calls % 2 == 1:  # the train pass comes first each epoch
            return {"mae": 0.1}
        epoch = self.calls // 2 - 1
        return {"mae": self.val_curve[min(epoch, len(self.val_curve) - 1)]}


def _fit_scripted(curve, cfg, model_cfg, **kw):
    train_loss = kw.pop("train_loss", 1.0)
    task = ScriptedTask(curve, train_loss)
    return fit(task, task.load(None), cfg, model_cfg, **kw)


def _flat_then_noise(n=800, plateau_at=100):
    """Seed 001: improves until epoch 100, then flat with tiny fluctuations for 700 more epochs
    (a slow drift makes a new 'best' every few epochs, by far less than any sensible min_delta)."""
    curve = [1.0 / (1 + 0.05 * e) for e in range(plateau_at)]
    flat = curve[-1]
    curve += [flat + 1e-5 * math.sin(e) - 1e-7 * e for e in range(n - plateau_at)]
    return curve


def test_early_stopping_fires_on_a_noisy_plateau():
    curve = _flat_then_noise()
    cfg = TrainConfig(epochs=800, patience=150, min_delta=1e-4, scheduler="none", deterministic=False)
    r = _fit_scripted(curve, cfg, _NoModelCfg())
    assert r.stop_reason == "early_stopped"
    # last improvement larger than min_delta is around epoch 100; stop 150 epochs later, not at 800
    assert 200 <= r.epochs_run <= 260, r.epochs_run
    assert r.best_epoch == r.epochs_run  # the best (tiny improvements) is still tracked for the checkpoint


def test_without_min_delta_patience_never_fires_reproducing_seed_001():
    cfg = TrainConfig(epochs=800, patience=150, min_delta=0.0, scheduler="none", deterministic=False)
    r = _fit_scripted(_flat_then_noise(), cfg, _NoModelCfg())
    assert r.stop_reason == "completed" and r.epochs_run == 800


def test_early_stopped_result_is_the_best_epoch():
    curve = [5, 4, 3, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0]
    cfg = TrainConfig(epochs=9, patience=3, scheduler="none", deterministic=False)
    r = _fit_scripted(curve, cfg, _NoModelCfg())
    assert r.stop_reason == "early_stopped" and r.epochs_run == 7
    assert r.best_epoch == 4 and r.best["val_mae"] == 2.5
    assert r.curves["val_mae"] == [5, 4, 3, 2.5, 2.6, 2.7, 2.8]


def test_maximize_direction():
    curve = [0.5, 0.7, 0.6, 0.65]
    r = _fit_scripted(curve, TrainConfig(epochs=4, scheduler="none"), _NoModelCfg(), monitor="val_mae", direction="maximize")
    assert r.best_epoch == 2 and r.best["val_mae"] == 0.7


def test_divergence_stops_the_run():
    r = _fit_scripted([1.0] * 5, TrainConfig(epochs=5, scheduler="none"), _NoModelCfg(), train_loss=float("nan"))
    assert r.stop_reason == "diverged" and r.epochs_run == 1 and "non-finite" in r.stop_detail


def test_pruning_callback_stops():
    def cb(epoch, metrics):
        if epoch == 3:
            raise Pruned(epoch)

    r = _fit_scripted([3, 2, 1, 0.5], TrainConfig(epochs=4, scheduler="none"), _NoModelCfg(), on_epoch=cb)
    assert r.stop_reason == "pruned" and r.epochs_run == 3


def _toy():
    T = get_task("toy")
    task = T(T.DatasetSpec(n_samples=128))
    return T, task


def test_toy_training_is_deterministic_and_learns():
    T, task = _toy()
    train, model, data = T.split_config({"epochs": 8, "lr": 1e-2, "hidden": 16, "scheduler": "cosine", "batch_size": 16})
    splits = task.load(data)
    a = fit(task, splits, train, model)
    b = fit(task, splits, train, model)
    assert a.best == b.best and a.curves["train_loss"] == b.curves["train_loss"]
    assert a.curves["train_loss"][-1] < a.curves["train_loss"][0]
    assert set(a.curves) >= {"epoch", "lr", "epoch_seconds", "train_loss", "val_loss", "train_mae", "val_mae", "train_val_gap"}
    assert all(len(v) == 8 for v in a.curves.values())


def test_grad_accumulation_matches_bigger_batch_steps():
    T, task = _toy()
    train, model, data = T.split_config({"epochs": 2, "batch_size": 8, "grad_accum_steps": 4, "scheduler": "none"})
    r = fit(task, task.load(data), train, model)
    assert math.isfinite(r.best["val_mae"])


def test_layerwise_learning_rates():
    T, task = _toy()
    train, model_cfg, data = T.split_config({"lr": 1e-3, "lr_head": 1e-2, "scheduler": "none"})
    model = task.build_model(model_cfg, task.load(data))
    opt = make_optimizer(task.group_parameters(model), train)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["encoder"] == 1e-3 and lrs["head"] == 1e-2 and lrs["head_no_decay"] == 1e-2
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if g["name"].endswith("_no_decay"))
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "cosine_warm_restarts", "lambda", "step", "none"])
def test_schedulers_with_warmup(scheduler):
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(lr=1e-3, scheduler=scheduler, warmup_steps=5, warmup_lr=1e-6, T_0=2, T_mult=2, eta_min=1e-5, step_size=1, lambda_decay=0.5)
    opt = make_optimizer({"all": list(model.parameters())}, cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=10, epochs=4)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < 1e-4  # warmup starts low
    assert max(lrs) == pytest.approx(1e-3, rel=0.05)
    if scheduler == "cosine":
        assert lrs[-1] < 1e-4
    if scheduler == "none":
        assert lrs[10:] == [1e-3] * 30


def test_unknown_config_key_names_closest():
    T = get_task("toy")
    with pytest.raises(KeyError, match="did you mean 'hidden'"):
        T.split_config({"hiden": 3})


@pytest.mark.parametrize("steps_per_epoch, epochs", [(1, 1), (2, 1), (1, 3), (2, 2), (3, 3), (10, 1)])
def test_onecycle_survives_tiny_step_counts(steps_per_epoch, epochs):
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(lr=1e-3, scheduler="onecycle", pct_start=0.3)
    opt = make_optimizer({"all": list(model.parameters())}, cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=steps_per_epoch, epochs=epochs)
    for _ in range(steps_per_epoch * epochs):
        opt.step()
        sched.step()
        assert math.isfinite(opt.param_groups[0]["lr"])
