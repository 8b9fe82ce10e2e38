"""Configs of the face3d family: the model and loss (:class:`Face3DConfig`) and preprocessing
(:class:`Face3DDataConfig`). Field names are YAML keys and constructor arguments; the schedule
(``warmup_epochs``, ``warmup_lr``, ``scheduler: cosine``, ``eta_min``), lr, weight decay, batch size and
early stopping are :class:`hpo.train.TrainConfig` fields. Defaults are the seed's current run (plan 003).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hpo.train.config import knob

Pooling = Literal["cls", "mean"]


@dataclass
class Face3DConfig:
    """Transformer encoder over face feature tokens regressing a target embedding."""

    d_model: int = knob(512, "token width; nhead must divide it")
    nhead: int = knob(8, "attention heads of every encoder layer; must divide d_model")
    num_layers: int = knob(4, "transformer encoder layers")
    dim_feedforward: int = knob(2048, "feed-forward width (the seed keeps it at 4 * d_model: a derived value)")
    dropout: float = knob(0.15, "dropout in attention, feed-forward and on the input tokens")
    pooling: Pooling = knob("cls", "read the output from a learned [CLS] token or the token mean")
    norm_first: bool = knob(True, "pre-norm encoder layers (stable for deep stacks)")
    mse_weight: float = knob(0.2, "weight of the MSE term: loss = mse_weight * MSE + cosine_weight * (1 - cos)")
    cosine_weight: float = knob(0.8, "weight of the cosine term (1 - cos) in the loss")

    def __post_init__(self) -> None:
        problems = []
        for name in ("d_model", "nhead", "num_layers", "dim_feedforward"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, but got {getattr(self, name)}")
        if self.nhead >= 1 and self.d_model % self.nhead:
            problems.append(f"d_model must be divisible by nhead ({self.nhead}), but got {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), but got {self.dropout}")
        if self.pooling not in get_args(Pooling):
            problems.append(f"pooling must be one of cls, mean, but got {self.pooling!r}")
        if self.mse_weight < 0 or self.cosine_weight < 0 or self.mse_weight + self.cosine_weight <= 0:
            problems.append(f"mse_weight and cosine_weight must be >= 0 and not both 0, but got "
                            f"{self.mse_weight} and {self.cosine_weight}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Face3DDataConfig:
    standardize_inputs: bool = knob(True, "standardise each input feature with training-split mean / std")
