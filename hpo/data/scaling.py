"""Train-only scalers: statistics are fitted on the training split and applied to every split.

A model must never see statistics of the data it is validated or tested on, so a family fits its
scaler with :meth:`Standardizer.fit` on the training part only and transforms every part with it; the
fitted ``mean`` / ``std`` go into ``Splits.info`` and the checkpoint (new data need them). Arrays may be
numpy arrays or torch tensors: the statistics are computed by the array's own library, in its dtype.
A spread at or below ``min_std`` (a constant feature) scales by 1 instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Standardizer:
    """z-score scaling ``(x - mean) / scale`` with ``scale = std`` where ``std > min_std``, else 1.

    ``mean`` and ``std`` are what :meth:`fit` computed on the training split (numpy arrays, torch
    tensors or floats, as the input was).
    """

    mean: Any
    std: Any
    min_std: float = 0.0

    @classmethod
    def fit(cls, train: Any, axis: Any = None, *, ddof: int = 0, min_std: float = 0.0) -> "Standardizer":
        """Mean and standard deviation of the *training* values over ``axis`` (None: all; scalars come
        back as Python floats); ``ddof=1`` for the unbiased estimate (torch's default)."""
        if hasattr(train, "detach"):  # torch
            if axis is None:
                return cls(float(train.mean()), float(train.std(correction=ddof)), min_std)
            return cls(train.mean(axis), train.std(axis, correction=ddof), min_std)
        if axis is None:
            return cls(float(train.mean()), float(train.std(ddof=ddof)), min_std)
        return cls(train.mean(axis=axis), train.std(axis=axis, ddof=ddof), min_std)

    @property
    def scale(self) -> Any:
        """The divisor: ``std``, with 1 where it is at or below ``min_std``."""
        if isinstance(self.std, float):
            return self.std if self.std > self.min_std else 1.0
        if hasattr(self.std, "detach"):
            import torch

            return torch.where(self.std > self.min_std, self.std, torch.ones_like(self.std))
        import numpy as np

        return np.where(self.std > self.min_std, self.std, 1.0)

    def transform(self, x: Any) -> Any:
        return (x - self.mean) / self.scale

    def inverse(self, z: Any) -> Any:
        return z * self.scale + self.mean
