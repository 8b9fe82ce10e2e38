"""Masked regression metrics for traffic forecasts (missing readings are stored as 0 and ignored).

Conventions follow DCRNN / Graph WaveNet: an entry counts only where the *target* is non-zero and
finite; MAE and RMSE are in the data's units (mph for METR-LA / PEMS-BAY speeds); MAPE is in percent.
Per-horizon metrics (``mae_h3`` ...) are taken at the h-th forecast step (h = 3, 6, 12: 15, 30 and 60
minutes ahead at 5-minute data) and exist only for ``h <= output_len``.
"""

from __future__ import annotations

import math

import torch

from hpo.data.metrics import mae, rmse
from models.traffic.config import HORIZONS

METRIC_NAMES = ("mae", "rmse", "mape")


def observed(target: torch.Tensor) -> torch.Tensor:
    """Bool mask of entries that hold a reading (non-zero and finite)."""
    return (target != 0) & torch.isfinite(target)


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mae", huber_delta: float = 1.0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the elementwise loss over observed entries (0 when none is observed); differentiable in ``pred``."""
    mask = observed(target) if mask is None else mask
    err = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    if kind == "mae":
        e = err.abs()
    elif kind == "mse":
        e = err.square()
    elif kind == "huber":
        e = _huber(err, huber_delta)
    else:
        raise ValueError(f"unknown loss {kind!r}")
    return e.sum() / mask.sum().clamp(min=1)


def _huber(err: torch.Tensor, delta: float) -> torch.Tensor:
    a = err.abs()
    return torch.where(a < delta, 0.5 * err.square(), delta * (a - 0.5 * delta))


def _metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    mask = observed(target)
    n = int(mask.sum())
    if n == 0:
        return {m: math.nan for m in METRIC_NAMES}
    p, t = pred[mask].double(), target[mask].double()
    return {
        "mae": mae(p, t),
        "rmse": rmse(p, t),
        "mape": float(((p - t).abs() / t.abs()).mean() * 100.0),
    }


def masked_metrics(pred: torch.Tensor, target: torch.Tensor, horizons=HORIZONS) -> dict[str, float]:
    """``mae``, ``rmse``, ``mape`` over everything, and ``<metric>_h<h>`` for each ``h <= output_len``.

    Shapes: pred, target (S, H, N) in data units (or (S, H) / (S, H, N, ...) - dim 1 is the horizon).
    """
    pred, target = pred.float(), target.float()
    out = _metrics(pred, target)
    H = target.shape[1] if target.ndim >= 2 else 0
    for h in horizons:
        if h <= H:
            out.update({f"{k}_h{h}": v for k, v in _metrics(pred[:, h - 1], target[:, h - 1]).items()})
    return out
