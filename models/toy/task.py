from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from hpo.tasks import DatasetSpec, Splits, StepOutput, Task, register_task


class ToyDataset(DatasetSpec):
    format: Literal["synthetic"] = "synthetic"
    n_samples: int = Field(256, ge=7)  # total samples, split 70/15/15 (7: the fewest that leave none of them empty)
    noise: float = Field(0.1, ge=0.0, allow_inf_nan=False)  # std of the target noise (NaN/inf would make every target so)
    seed: int = 0  # data generation and split seed


@dataclass
class ToyConfig:
    hidden: int = 32  # width of each modality encoder
    depth: int = 1  # hidden layers per encoder (0 makes a model whose shapes do not fit: a crash, for tests)
    fusion: Literal["concat", "gated", "sum"] = "concat"  # how the two modality embeddings are fused
    dropout: float = 0.0
    use_second_modality: bool = True  # off: the model sees modality A only


@dataclass
class ToyDataConfig:
    standardize: bool = True  # standardise inputs with training statistics


@register_task("toy")
class ToyTask(Task):
    ModelConfig = ToyConfig
    DataConfig = ToyDataConfig
    DatasetSpec = ToyDataset
    metrics = {"mae": "minimize", "rmse": "minimize"}
    default_objective = "val_mae"
    param_groups = ("encoder", "head")
    presets = {"tiny": {"hidden": 8, "depth": 1, "epochs": 3, "batch_size": 32}}
    needs_target = False

    def load(self, data_cfg: ToyDataConfig) -> Splits:
        spec = self.dataset
        key = {"spec": spec.model_dump(), "data": vars(data_cfg)}
        return self.cache.get_or_build("toy", key, lambda: _generate(spec, data_cfg))

    def loader(self, splits, split, batch_size, *, shuffle, seed=0):
        import torch

        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(splits[split], batch_size=batch_size, shuffle=shuffle, generator=g)

    def build_model(self, cfg: ToyConfig, splits):
        return ToyFusionNet(cfg, splits.info["dim_a"], splits.info["dim_b"])

    def step(self, model, batch, *, train):
        import torch.nn.functional as F

        xa, xb, y = batch
        pred = model(xa, xb)
        return StepOutput(loss=F.mse_loss(pred, y), pred=pred.detach(), target=y, n=len(y))

    def compute_metrics(self, pred, target):
        err = pred - target
        return {"mae": float(err.abs().mean()), "rmse": float(err.pow(2).mean().sqrt())}


def _generate(spec: ToyDataset, data_cfg: ToyDataConfig) -> Splits:
    import torch

    g = torch.Generator().manual_seed(spec.seed)
    n, da, db = spec.n_samples, 6, 4
    xa, xb = torch.randn(n, da, generator=g), torch.randn(n, db, generator=g)
    y = torch.sin(xa[:, 0]) + 0.5 * xa[:, 1] * xb[:, 0] + 0.3 * xb[:, 1] ** 2
    y = (y + spec.noise * torch.randn(n, generator=g)).unsqueeze(1)
    perm = torch.randperm(n, generator=g)
    n_tr, n_va = int(0.7 * n), int(0.15 * n)
    idx = {"train": perm[:n_tr], "val": perm[n_tr : n_tr + n_va], "test": perm[n_tr + n_va :]}
    if data_cfg.standardize:
        tr = idx["train"]
        xa = (xa - xa[tr].mean(0)) / xa[tr].std(0)
        xb = (xb - xb[tr].mean(0)) / xb[tr].std(0)
    parts = {k: torch.utils.data.TensorDataset(xa[v], xb[v], y[v]) for k, v in idx.items()}
    return Splits(parts["train"], parts["val"], parts["test"], info={"dim_a": da, "dim_b": db})


def _mlp(d_in: int, hidden: int, depth: int, dropout: float):
    import torch.nn as nn

    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
        d = hidden
    return nn.Sequential(*layers)


def ToyFusionNet(cfg: ToyConfig, dim_a: int, dim_b: int):
    import torch
    import torch.nn as nn

    class _Net(nn.Module):
        """Two MLP encoders fused by concat / gate / sum, then a linear head. Shapes: (B, Da), (B, Db) -> (B, 1)."""

        def __init__(self) -> None:
            super().__init__()
            self.enc_a = _mlp(dim_a, cfg.hidden, cfg.depth, cfg.dropout)
            self.enc_b = _mlp(dim_b, cfg.hidden, cfg.depth, cfg.dropout)
            self.gate = nn.Linear(2 * cfg.hidden, cfg.hidden) if cfg.fusion == "gated" else None
            width = 2 * cfg.hidden if cfg.fusion == "concat" else cfg.hidden
            self.head = nn.Linear(width, 1)

        def forward(self, xa, xb):
            a = self.enc_a(xa)
            b = self.enc_b(xb) if cfg.use_second_modality else torch.zeros_like(a)
            if cfg.fusion == "concat":
                h = torch.cat([a, b], dim=-1)
            elif cfg.fusion == "gated":
                z = torch.sigmoid(self.gate(torch.cat([a, b], dim=-1)))
                h = z * a + (1 - z) * b
            else:
                h = a + b
            return self.head(h)

        def param_groups(self):
            enc = [*self.enc_a.parameters(), *self.enc_b.parameters()]
            enc += list(self.gate.parameters()) if self.gate is not None else []
            return {"encoder": enc, "head": list(self.head.parameters())}

    return _Net()
