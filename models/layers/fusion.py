"""Fusion blocks that merge two same-width representations ``a`` and ``b`` (two modalities, or two
streams of one model) into one: ``concat``, ``gated``, ``sum``, ``gated_residual`` and ``adaptive``, each
optionally followed by a LayerNorm, and :func:`make_fusion` that builds one by name. ``traffic`` fuses its
temporal (``a``) and spatial (``b``) streams with them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class _Fusion(nn.Module):
    """Base of the fusion blocks: ``forward(a, b)`` is ``norm(combine(a, b))``, ``norm`` a LayerNorm or
    the identity. Subclasses create their parameters, then call :meth:`_add_norm`, and define :meth:`combine`.

    Shapes: a (*, features), b (*, features) -> (*, features)
    """

    def _add_norm(self, features: int, norm: bool) -> None:
        self.norm = nn.LayerNorm(features) if norm else nn.Identity()

    def combine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.norm(self.combine(a, b))


class ConcatFusion(_Fusion):
    """``Linear(2F -> F)([a; b])``. Args: features (int), norm (bool): end in a LayerNorm."""

    def __init__(self, features: int, norm: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * features, features)
        self._add_norm(features, norm)

    def combine(self, a, b):
        return self.proj(torch.cat([a, b], dim=-1))


class GatedFusion(_Fusion):
    """``z * a + (1 - z) * b`` with ``z = sigmoid(W_a a + W_b b + c)`` per feature (GMAN's gated fusion).
    Args: features (int), norm (bool): end in a LayerNorm."""

    def __init__(self, features: int, norm: bool = False) -> None:
        super().__init__()
        self.w_a, self.w_b = nn.Linear(features, features, bias=False), nn.Linear(features, features)
        self._add_norm(features, norm)

    def combine(self, a, b):
        z = torch.sigmoid(self.w_a(a) + self.w_b(b))
        return z * a + (1 - z) * b


class SumFusion(_Fusion):
    """``a + b`` (no parameters but the optional LayerNorm). Args: features (int), norm (bool)."""

    def __init__(self, features: int, norm: bool = False) -> None:
        super().__init__()
        self._add_norm(features, norm)

    def combine(self, a, b):
        return a + b


class GatedResidualFusion(_Fusion):
    """``a + g * V b`` with ``g = act(W_g [a; b])``; ``act`` sigmoid (add a share of ``b``) or tanh (add
    or subtract it). Args: features (int), norm (bool), gate_activation (str): "sigmoid" or "tanh"."""

    def __init__(self, features: int, norm: bool = False, gate_activation: str = "sigmoid") -> None:
        super().__init__()
        if gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation must be one of {', '.join(GATE_ACTIVATIONS)}, but got {gate_activation!r}")
        self.gate = nn.Linear(2 * features, features)
        self.value = nn.Linear(features, features)
        self.act: Callable[[torch.Tensor], torch.Tensor] = GATE_ACTIVATIONS[gate_activation]
        self._add_norm(features, norm)

    def combine(self, a, b):
        return a + self.act(self.gate(torch.cat([a, b], dim=-1))) * self.value(b)


class AdaptiveFusion(_Fusion):
    """``w_0 * a + w_1 * b`` with ``w = softmax(logits)`` over the two inputs, learnable ``logits`` (2, F)
    starting at zero (an even mix). Args: features (int), norm (bool)."""

    def __init__(self, features: int, norm: bool = False) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2, features))
        self._add_norm(features, norm)

    def combine(self, a, b):
        w = torch.softmax(self.logits, dim=0)  # (2, F)
        return w[0] * a + w[1] * b


GATE_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}

#: fusion name -> block
FUSIONS: dict[str, type[_Fusion]] = {
    "concat": ConcatFusion,
    "gated": GatedFusion,
    "sum": SumFusion,
    "gated_residual": GatedResidualFusion,
    "adaptive": AdaptiveFusion,
}


def make_fusion(kind: str, features: int, *, norm: bool = False, gate_activation: str = "sigmoid") -> nn.Module:
    """The fusion block called ``kind`` (a key of :data:`FUSIONS`); ``gate_activation`` is read by
    ``gated_residual`` only."""
    if kind not in FUSIONS:
        raise ValueError(f"unknown fusion {kind!r}: choose one of {', '.join(FUSIONS)}")
    if kind == "gated_residual":
        return GatedResidualFusion(features, norm, gate_activation)
    return FUSIONS[kind](features, norm)


__all__ = ["FUSIONS", "AdaptiveFusion", "ConcatFusion", "GatedFusion", "GatedResidualFusion", "SumFusion", "make_fusion"]
