"""Common regression metrics: ``mae``, ``mse``, ``rmse``, ``r2``, ``pearson``, ``spearman``.

Every function takes predictions and targets of one split (numpy arrays or torch tensors of equal
shape; pass float64 for exact sums) and returns a Python float, computed by the input's own library in
its dtype. An undefined value (no items, a constant target for ``r2``, a constant series for a
correlation) is ``nan``. Family-specific metrics (concordance index, r_m², masked or per-horizon errors)
stay with their family.
"""

from __future__ import annotations

import math
from typing import Any


def mae(pred: Any, target: Any) -> float:
    """Mean absolute error."""
    return float(abs(pred - target).mean()) if _size(target) else math.nan


def mse(pred: Any, target: Any) -> float:
    """Mean squared error."""
    if not _size(target):
        return math.nan
    err = pred - target
    return float((err * err).mean())


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error (the square root taken in the input's dtype)."""
    if not _size(target):
        return math.nan
    err = pred - target
    return float((err * err).mean().sqrt()) if hasattr(err, "detach") else math.sqrt(float((err * err).mean()))


def r2(pred: Any, target: Any) -> float:
    """Coefficient of determination ``1 - Σ(t - p)² / Σ(t - t̄)²`` (scikit-learn's ``r2_score``)."""
    if not _size(target):
        return math.nan
    err, dev = pred - target, target - target.mean()
    ss_tot = float((dev * dev).sum())
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float((err * err).sum()) / ss_tot


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation of two 1-D series (float64)."""
    import numpy as np

    a, b = _float64(x), _float64(y)
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b)) / denom if denom > 0 else math.nan


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (ties get their average rank, as scipy's ``spearmanr``)."""
    return pearson(_ranks(_float64(x)), _ranks(_float64(y)))


def _ranks(a: Any) -> Any:
    import numpy as np

    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(1, len(a) + 1)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def _float64(x: Any) -> Any:
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _size(x: Any) -> int:
    return int(x.numel()) if hasattr(x, "numel") else int(getattr(x, "size", len(x)))
