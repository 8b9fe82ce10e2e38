"""Layers shared by the model families: the cross-modal attention block (plain or gated, with key
padding masks) in :mod:`models.layers.cross_attention`, and the blocks that fuse two representations
(concat, gated, sum, gated residual, adaptive) in :mod:`models.layers.fusion`, and dropout with cheaper
draws and a bool mask in :mod:`models.layers.dropout`. A family composes these
into its own fusion modules; what only one family uses stays in that family.
"""

from models.layers.cross_attention import CrossAttention
from models.layers.fusion import (
    FUSIONS,
    AdaptiveFusion,
    ConcatFusion,
    GatedFusion,
    GatedResidualFusion,
    SumFusion,
    make_fusion,
)

__all__ = [
    "FUSIONS",
    "AdaptiveFusion",
    "ConcatFusion",
    "CrossAttention",
    "GatedFusion",
    "GatedResidualFusion",
    "SumFusion",
    "make_fusion",
]
