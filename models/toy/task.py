"""The ``toy`` task: the smallest complete family, the one to copy for a new one.

Two synthetic modalities (6 and 4 features) and a smooth target that needs both; a model of two MLP
encoders fused by concat / gate / sum. Everything that is not the family's own comes from :mod:`hpo.data`:
the split cut (:func:`hpo.data.split.cut`), the train-only scaler, the cache key
(:meth:`hpo.tasks.Task.cache_key`) and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from hpo.data.metrics import mae, rmse
from hpo.data.scaling import Standardizer
from hpo.data.split import cut
from hpo.tasks import DatasetSpec, Splits, StepOutput, Task, register_task
from hpo.train.config import knob


class ToyDataset(DatasetSpec):
    format: Literal["synthetic"] = Field("synthetic", description="selects this format: generated data (the only one)")
    n_samples: int = Field(256, ge=7, description="total samples, split 70/15/15 (7: the fewest that leave none of them empty)")
    noise: float = Field(0.1, ge=0.0, allow_inf_nan=False,
                         description="std of the target noise (NaN/inf would make every target so)")
    seed: int = Field(0, description="data generation and split seed")


@dataclass
class ToyConfig:
    hidden: int = knob(32, "width of each modality encoder")
    depth: int = knob(1, "hidden layers per encoder (0 makes a model whose shapes do not fit: a crash, for tests)")
    fusion: Literal["concat", "gated", "sum"] = knob("concat", "how the two modality embeddings are fused")
    dropout: float = knob(0.0, "dropout after every encoder layer")
    use_second_modality: bool = knob(True, "off: the model sees modality A only")


@dataclass
class ToyDataConfig:
    standardize: bool = knob(True, "standardise inputs with training statistics")


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
    analyses = {"compare": "hpo.analysis.compare:compare_analysis"}

    def load(self, data_cfg: ToyDataConfig) -> Splits:
        spec = self.dataset
        return self.cache.get_or_build("toy", self.cache_key(data_cfg, dataset=spec.settings()), lambda: _generate(spec, data_cfg))

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
        return {"mae": mae(pred, target), "rmse": rmse(pred, target)}


def _generate(spec: ToyDataset, data_cfg: ToyDataConfig) -> Splits:
    import torch

    g = torch.Generator().manual_seed(spec.seed)
    n, da, db = spec.n_samples, 6, 4
    xa, xb = torch.randn(n, da, generator=g), torch.randn(n, db, generator=g)
    y = torch.sin(xa[:, 0]) + 0.5 * xa[:, 1] * xb[:, 0] + 0.3 * xb[:, 1] ** 2
    y = (y + spec.noise * torch.randn(n, generator=g)).unsqueeze(1)
    # 70 / 15 / 15 along a permutation drawn by the generator that made the data
    idx = cut(torch.randperm(n, generator=g), {"train": int(0.7 * n), "val": int(0.15 * n)})
    if data_cfg.standardize:  # training statistics only (unbiased std, as torch's default)
        tr = idx["train"]
        xa = Standardizer.fit(xa[tr], 0, ddof=1).transform(xa)
        xb = Standardizer.fit(xb[tr], 0, ddof=1).transform(xb)
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
