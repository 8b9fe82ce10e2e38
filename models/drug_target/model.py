"""DeepBindNet: drug (SMILES) and protein (sequence) encoders fused by stacked cross-modal attention.

::

    SMILES ids (B, Ld) ── embed ── drug encoder ─────┐      ┌─> masked mean+max (B, 2H) ─┐
                                                      ├ L × fusion layer                 ├─ head ─> (B,)
    residue ids (B, Lp) ─ embed ── protein encoder ──┘      └─> masked mean+max (B, 2H) ─┘

Each fusion layer lets drug tokens attend to protein tokens and protein tokens to drug tokens (both
from the layer's input), then applies a feed-forward block to each. In the *gated* variant (the
seed's ``GatedCrossAttention``) a sigmoid gate computed from the query and the attended values scales
the attended values before the residual sum; the *standard* variant adds them unscaled.

Encoders: ``cnn`` is DeepDTA's character CNN (three 1-D convolutions whose filters grow 1:2:3 up to
``hidden_dim``) with "same" padding so that token masks stay aligned; ``transformer`` is a
pre-norm Transformer encoder with sinusoidal positions. The model predicts the *standardised* target;
``target_mean`` / ``target_std`` buffers (the training-split scaler) map it back.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.drug_target.config import DeepBindConfig
from models.drug_target.data import PAD


class CNNEncoder(nn.Module):
    r"""Character CNN over token ids (DeepDTA, Öztürk et al. 2018, with "same" padding).

    As in DeepDTA there is no dropout inside the convolutions (regularisation sits in the fusion layers
    and the head); this also spares a dropout mask over every residue of a 1,200-long protein.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        embed_dim: token embedding width.
        hidden_dim: output channels of the last convolution.
        layers: number of convolutions; layer ``i`` has ``hidden_dim * (i + 1) // layers`` filters.
        kernel: convolution width.

    Shapes:
        - tokens ``(B, L)`` long, mask ``(B, L)`` bool (True = real token)
        - output ``(B, L, hidden_dim)``, zero at padded positions
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        widths = [embed_dim] + [max(1, hidden_dim * (i + 1) // layers) for i in range(layers)]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(1).to(self.embed.weight.dtype)  # (B, 1, L)
        x = self.embed(tokens).transpose(1, 2)  # (B, E, L)
        length = tokens.shape[1]
        for conv in self.convs:  # even kernels give L + 1 positions: cut back to L; zero past the end
            x = F.relu(conv(x)[..., :length]) * keep
        return x.transpose(1, 2)  # (B, L, H)


class TransformerSeqEncoder(nn.Module):
    r"""Token embedding + sinusoidal positions + a pre-norm Transformer encoder.

    Args:
        vocab_size, embed_dim: as :class:`CNNEncoder`; the embedding is projected to ``hidden_dim``.
        hidden_dim: model width; ``heads`` must divide it.
        layers, heads: encoder depth and attention heads; the feed-forward is ``ff_mult * hidden_dim``.
        max_len: longest input (sets the size of the position table).

    Shapes:
        - tokens ``(B, L)`` long with ``L <= max_len``, mask ``(B, L)`` bool
        - output ``(B, L, hidden_dim)``, zero at padded positions
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, layers: int, heads: int, ff_mult: int,
                 dropout: float, max_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.proj = nn.Linear(embed_dim, hidden_dim) if embed_dim != hidden_dim else nn.Identity()
        self.register_buffer("positions", _sinusoids(max_len, hidden_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(hidden_dim, heads, ff_mult * hidden_dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(hidden_dim), enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.embed(tokens)) + self.positions[: tokens.shape[1]]
        x = self.encoder(self.dropout(x), src_key_padding_mask=~mask)
        return x * mask.unsqueeze(-1)


class MultiHeadCrossAttention(nn.Module):
    r"""Multi-head attention of queries ``x`` over keys/values ``y`` with a key padding mask.

    Same maths as ``nn.MultiheadAttention``, but the mask is passed to ``scaled_dot_product_attention``
    as a broadcast ``(B, 1, 1, Ly)`` boolean, not expanded to ``(B, heads, Lx, Ly)`` floats: on CPU this
    halves the cost of attending from 1,200 residues to a SMILES string.

    Shapes:
        - x ``(B, Lx, H)``, y ``(B, Ly, H)``, y_mask ``(B, Ly)`` bool (True = real token; >= 1 per row)
        - output ``(B, Lx, H)``
    """

    def __init__(self, hidden_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden_dim, hidden_dim)
        self.kv = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        (b, lx, h), ly, nh = x.shape, y.shape[1], self.heads
        q = self.q(x).view(b, lx, nh, h // nh).transpose(1, 2)  # (B, nh, Lx, h / nh)
        k, v = self.kv(y).view(b, ly, 2, nh, h // nh).permute(2, 0, 3, 1, 4)  # 2 x (B, nh, Ly, h / nh)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=y_mask[:, None, None, :])
        return self.out(a.transpose(1, 2).reshape(b, lx, h))


class CrossAttentionBlock(nn.Module):
    r"""Queries ``x`` attend to ``y``; residual + LayerNorm; then a feed-forward block (post-norm).

    Gated (``gated=True``): ``x' = LN(x + g * a)`` with ``a = Attn(x, y, y)`` and
    ``g = sigmoid(W [x; a] + b)`` per feature; standard: ``x' = LN(x + a)``.

    Shapes:
        - x ``(B, Lx, H)``, y ``(B, Ly, H)``, y_mask ``(B, Ly)`` bool (True = real token)
        - output ``(B, Lx, H)``
    """

    def __init__(self, hidden_dim: int, heads: int, ff_mult: int, dropout: float, gated: bool) -> None:
        super().__init__()
        self.attn = MultiHeadCrossAttention(hidden_dim, heads)  # dropout on its output, not on the weights
        self.gate = nn.Linear(2 * hidden_dim, hidden_dim) if gated else None
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.ff = nn.Sequential(nn.Linear(hidden_dim, ff_mult * hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * hidden_dim, hidden_dim))
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        a = self.dropout(self.attn(x, y, y_mask))
        if self.gate is not None:
            a = torch.sigmoid(self.gate(torch.cat([x, a], dim=-1))) * a
        x = self.norm1(x + a)
        return self.norm2(x + self.dropout(self.ff(x)))


class FusionLayer(nn.Module):
    """Bidirectional cross-modal attention: drug <- protein and protein <- drug, both from the input.

    Shapes: d ``(B, Ld, H)``, p ``(B, Lp, H)``, masks ``(B, Ld)`` / ``(B, Lp)`` -> same shapes.
    """

    def __init__(self, hidden_dim: int, heads: int, ff_mult: int, dropout: float, gated: bool) -> None:
        super().__init__()
        self.drug_from_protein = CrossAttentionBlock(hidden_dim, heads, ff_mult, dropout, gated)
        self.protein_from_drug = CrossAttentionBlock(hidden_dim, heads, ff_mult, dropout, gated)

    def forward(self, d, p, d_mask, p_mask):
        return self.drug_from_protein(d, p, p_mask), self.protein_from_drug(p, d, d_mask)


class DeepBindNet(nn.Module):
    r"""Drug–target affinity regressor (see the module docstring).

    Args:
        cfg: the model config.
        smiles_vocab_size, protein_vocab_size: token id ranges (id 0 is padding).
        max_smiles_len, max_protein_len: longest inputs (position tables of transformer encoders).
        target_mean, target_std: the training-split target scaler, kept as buffers.

    Shapes:
        - drug ``(B, Ld)`` long, protein ``(B, Lp)`` long, PAD (0) after each sequence's end
        - output ``(B,)``: the standardised affinity (:meth:`unscale` gives target units)
    """

    def __init__(self, cfg: DeepBindConfig, *, smiles_vocab_size: int, protein_vocab_size: int,
                 max_smiles_len: int, max_protein_len: int, target_mean: float = 0.0, target_std: float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.drug_encoder = _encoder(cfg, cfg.drug_encoder, smiles_vocab_size, cfg.drug_kernel, max_smiles_len)
        self.protein_encoder = _encoder(cfg, cfg.protein_encoder, protein_vocab_size, cfg.protein_kernel, max_protein_len)
        self.fusion = nn.ModuleList(
            FusionLayer(cfg.hidden_dim, cfg.fusion_heads, cfg.fusion_ff_mult, cfg.dropout_rate, cfg.gated)
            for _ in range(cfg.fusion_layers)
        )
        h, f = cfg.hidden_dim, cfg.feature_dim
        self.head = nn.Sequential(
            nn.Linear(4 * h, f), nn.ReLU(), nn.Dropout(cfg.dropout_rate),
            nn.Linear(f, max(1, f // 2)), nn.ReLU(), nn.Dropout(cfg.dropout_rate),
            nn.Linear(max(1, f // 2), 1),
        )
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    def forward(self, drug: torch.Tensor, protein: torch.Tensor,
                drug_index: torch.Tensor | None = None, protein_index: torch.Tensor | None = None) -> torch.Tensor:
        """``drug`` (Ud, Ld) and ``protein`` (Up, Lp) token ids; the pairs are rows ``drug_index`` (B,)
        and ``protein_index`` (B,) of them (default: row i with row i). Each sequence is encoded once."""
        d_mask, p_mask = drug != PAD, protein != PAD  # (Ud, Ld), (Up, Lp)
        d = self.drug_encoder(drug, d_mask)  # (Ud, Ld, H)
        p = self.protein_encoder(protein, p_mask)  # (Up, Lp, H)
        if self.cfg.protein_pool > 1:
            p, p_mask = _masked_max_pool(p, p_mask, self.cfg.protein_pool)  # (Up, ceil(Lp / s), H)
        if drug_index is not None:
            d, d_mask = d[drug_index], d_mask[drug_index]  # (B, Ld, H)
        if protein_index is not None:
            p, p_mask = p[protein_index], p_mask[protein_index]  # (B, Lp', H)
        for layer in self.fusion:
            d, p = layer(d, p, d_mask, p_mask)
        z = torch.cat([*_mean_max(d, d_mask), *_mean_max(p, p_mask)], dim=-1)  # (B, 4H)
        return self.head(z).squeeze(-1)  # (B,)

    def scale(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.target_mean) / self.target_std

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.target_std + self.target_mean

    def param_groups(self) -> dict[str, list]:
        """``encoder`` (both sequence encoders), ``fusion`` and ``head``: keys ``lr_encoder`` ..."""
        return {
            "encoder": [*self.drug_encoder.parameters(), *self.protein_encoder.parameters()],
            "fusion": list(self.fusion.parameters()),
            "head": list(self.head.parameters()),
        }


def _encoder(cfg: DeepBindConfig, kind: str, vocab_size: int, kernel: int, max_len: int) -> nn.Module:
    if kind == "cnn":
        return CNNEncoder(vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.encoder_layers, kernel)
    return TransformerSeqEncoder(vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.encoder_layers, cfg.encoder_heads,
                                 cfg.fusion_ff_mult, cfg.dropout_rate, max_len)


def _mean_max(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean and max over tokens: ``(B, L, H)``, ``(B, L)`` -> two ``(B, H)``."""
    m = mask.unsqueeze(-1)
    mean = (x * m).sum(1) / m.sum(1).clamp_min(1)
    mx = x.masked_fill(~m, torch.finfo(x.dtype).min).amax(1)
    return mean, mx


def _masked_max_pool(x: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over windows of ``stride`` real tokens: ``(B, L, H)`` -> ``(B, ceil(L / stride), H)``."""
    fill = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).transpose(1, 2)
    pooled = F.max_pool1d(fill, stride, stride, ceil_mode=True).transpose(1, 2)
    pmask = F.max_pool1d(mask.unsqueeze(1).float(), stride, stride, ceil_mode=True).squeeze(1) > 0
    return pooled * pmask.unsqueeze(-1), pmask


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """Sinusoidal position table ``(length, dim)`` (Vaswani et al. 2017)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table
