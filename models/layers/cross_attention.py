"""The cross-modal attention block shared by the model families: queries from one modality attend over
keys/values from another (with a key padding mask), and the result is added back to the queries, either
plainly or through a learned sigmoid gate (gated cross-attention). ``crystal_text`` uses it for middle
fusion, fine-grained and global cross-modal attention; ``drug_target`` for its fusion layers.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttention(nn.Module):
    r"""Multi-head attention of ``query`` over ``kv`` added back to the queries:

    .. math::
        a = \mathrm{Drop}(W_o\,\mathrm{MHA}(W_q q, W_{kv} kv)), \qquad
        q' = \mathrm{LN}(q + g \odot a), \qquad
        g = \mathrm{sigmoid}(W_g [q; a] + b_g) \text{ when gated, else } 1.

    The key padding mask is passed to ``scaled_dot_product_attention`` as a broadcast ``(B, 1, 1, K)``
    boolean, not expanded to ``(B, heads, Q, K)`` floats (on CPU this halves the cost of attending from
    a long sequence to a short one).

    Args:
        query_features (int): width of the queries (and of the output).
        kv_features (int, optional): width of the keys/values (default: ``query_features``).
        hidden (int, optional): attention width, divisible by ``heads`` (default: ``query_features``).
        heads (int): attention heads (default 1).
        dropout (float): dropout on the attention output (default 0).
        attn_dropout (float, optional): dropout on the attention weights (default: ``dropout``).
        gated (bool): gate the attended values before the residual sum (default False).

    Shapes:
        query (B, Q, query_features), kv (B, K, kv_features), kv_mask (B, K) bool (True = attend; at
        least one True per row) or None (attend to every key) -> (B, Q, query_features)

    Parameters are ``q``, ``kv``, ``out``, ``gate`` (gated only) and ``norm``.
    """

    def __init__(self, query_features: int, kv_features: Optional[int] = None, hidden: Optional[int] = None,
                 heads: int = 1, dropout: float = 0.0, *, attn_dropout: Optional[float] = None, gated: bool = False) -> None:
        super().__init__()
        kv_features = query_features if kv_features is None else kv_features
        hidden = query_features if hidden is None else hidden
        if heads < 1 or hidden % heads:
            raise ValueError(f"attention width {hidden} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.q = nn.Linear(query_features, hidden)
        self.kv = nn.Linear(kv_features, 2 * hidden)
        self.out = nn.Linear(hidden, query_features)
        self.gate = nn.Linear(2 * query_features, query_features) if gated else None
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(query_features)

    def attend(self, query: torch.Tensor, kv: torch.Tensor, kv_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The attended values ``a`` before gate and residual: (B, Q, query_features)."""
        B, Q, _ = query.shape
        K = kv.size(1)
        q = self.q(query).view(B, Q, self.heads, -1).transpose(1, 2)  # (B, h, Q, d)
        k, v = self.kv(kv).view(B, K, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x (B, h, K, d)
        mask = kv_mask[:, None, None, :] if kv_mask is not None else None  # (B, 1, 1, K)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.dropout(self.out(a.transpose(1, 2).reshape(B, Q, -1)))  # (B, Q, query_features)

    def gate_values(self, query: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The gate ``g`` in [0, 1], (B, Q, query_features); only for a gated block."""
        if self.gate is None:
            raise RuntimeError("this CrossAttention was built with gated=False")
        return torch.sigmoid(self.gate(torch.cat([query, attended], dim=-1)))

    def forward(self, query: torch.Tensor, kv: torch.Tensor, kv_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = self.attend(query, kv, kv_mask)
        if self.gate is not None:
            a = self.gate_values(query, a) * a
        return self.norm(query + a)


__all__ = ["CrossAttention"]
