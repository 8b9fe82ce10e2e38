"""Face3DTransformer: a Transformer encoder over face feature tokens that regresses a target embedding.

::

    tokens (B, T, F) ─ Linear ─┐
    identity (B, E) ─ Linear ──┼─ [CLS] + positions ─ TransformerEncoder × num_layers ─ pool ─ LN ─ Linear ─> (B, D)

The loss (in the task) is ``mse_weight * MSE + cosine_weight * (1 - cos)``; :func:`face_loss`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.face3d.config import Face3DConfig


class Face3DTransformer(nn.Module):
    r"""Args:
        cfg: the model config.
        n_tokens, token_dim: T and F of the input tokens (T sets the learned position table).
        identity_dim: E, width of the optional identity embedding (0: none).
        target_dim: D, width of the predicted embedding.

    Shapes:
        - tokens ``(B, T, F)``, identity ``(B, E)`` or None
        - output ``(B, D)``
    """

    def __init__(self, cfg: Face3DConfig, *, n_tokens: int, token_dim: int, identity_dim: int, target_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.token_proj = nn.Linear(token_dim, d)
        self.identity_proj = nn.Linear(identity_dim, d) if identity_dim > 0 else None
        n_special = 1 + (identity_dim > 0)  # [CLS] and the identity token
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.positions = nn.Parameter(torch.zeros(1, n_tokens + n_special, d))
        nn.init.trunc_normal_(self.positions, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.nhead, cfg.dim_feedforward, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=cfg.norm_first)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, target_dim)

    def forward(self, tokens: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        b = tokens.shape[0]
        parts = [self.cls.expand(b, -1, -1)]  # (B, 1, d)
        if self.identity_proj is not None:
            if identity is None:
                raise ValueError("this model was built with an identity embedding; pass identity (B, E)")
            parts.append(self.identity_proj(identity).unsqueeze(1))  # (B, 1, d)
        parts.append(self.token_proj(tokens))  # (B, T, d)
        x = torch.cat(parts, dim=1)
        x = self.encoder(self.dropout(x + self.positions[:, : x.shape[1]]))  # (B, T + specials, d)
        pooled = x[:, 0] if self.cfg.pooling == "cls" else x[:, 1:].mean(1)  # (B, d)
        return self.head(self.norm(pooled))  # (B, D)

    def param_groups(self) -> dict[str, list]:
        """``encoder`` (embeddings and transformer) and ``head``: keys ``lr_encoder``, ``lr_head``."""
        head = [*self.norm.parameters(), *self.head.parameters()]
        ids = {id(p) for p in head}
        return {"encoder": [p for p in self.parameters() if id(p) not in ids], "head": head}


def face_loss(pred: torch.Tensor, target: torch.Tensor, mse_weight: float, cosine_weight: float) -> torch.Tensor:
    """``mse_weight * mean((pred - target)²) + cosine_weight * mean(1 - cos(pred, target))``; (B, D) -> ()."""
    pred, target = pred.float(), target.float()
    mse = F.mse_loss(pred, target)
    cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-8).mean()
    return mse_weight * mse + cosine_weight * (1.0 - cos)
