"""DeepBindNet: drug (SMILES) and protein (sequence) encoders fused by stacked cross-modal attention.

::

    SMILES ids (B, Ld) ── embed ── drug encoder ─────┐      ┌─> masked mean+max (B, 2H) ─┐
                                                      ├ L × fusion layer                 ├─ head ─> (B,)
    residue ids (B, Lp) ─ embed ── protein encoder ──┘      └─> masked mean+max (B, 2H) ─┘

Each fusion layer lets drug tokens attend to protein tokens and protein tokens to drug tokens (both
from the layer's input), then applies a feed-forward block to each. In the *gated* variant (the
seed's ``GatedCrossAttention``, now the shared :class:`models.layers.CrossAttention`) a sigmoid gate
computed from the query and the attended values scales the attended values before the residual sum;
the *standard* variant adds them unscaled.

Encoders: ``cnn`` is DeepDTA's character CNN (three 1-D convolutions whose filters grow 1:2:3 up to
``hidden_dim``) with "same" padding so that token masks stay aligned; ``transformer`` is a
pre-norm Transformer encoder with sinusoidal positions. The model predicts the *standardised* target;
``target_mean`` / ``target_std`` buffers (the training-split scaler) map it back.

Cost: a batch holds each distinct drug and protein once (``drug_index`` / ``protein_index`` map pairs to
them), so each sequence is encoded, and projected by the first fusion layer, once per batch; the fusion
then runs on each pair's real tokens only (*packed*; padding is left only inside the attention). With
batches drawn from a few proteins (``batch_proteins``) this cuts the seed-size model's forward and
backward on Davis to ~0.4 of the padded per-pair computation (``bench/dta_cost.py``), which
``forward(..., packed=False)`` still runs and which gives the same outputs and gradients (in training mode
with the same dropout masks: the packed forward draws its own cheaper ones, :func:`_dropout`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.drug_target.config import DeepBindConfig
from models.drug_target.data import PAD
from models.layers import CrossAttention
from models.layers.dropout import drop, keep_mask, keep_prob


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


class CrossAttentionBlock(nn.Module):
    r"""Queries ``x`` attend to ``y`` through the shared :class:`~models.layers.CrossAttention` (residual +
    LayerNorm, dropout on its output but not on the attention weights); then a feed-forward block (post-norm).

    Gated (``gated=True``): ``x' = LN(x + g * a)`` with ``a = Attn(x, y, y)`` and
    ``g = sigmoid(W [x; a] + b)`` per feature; standard: ``x' = LN(x + a)``.

    Shapes:
        - x ``(B, Lx, H)``, y ``(B, Ly, H)``, y_mask ``(B, Ly)`` bool (True = real token; >= 1 per row)
        - output ``(B, Lx, H)``

    Checkpoints written before the attention was shared name the gate ``gate`` and the first norm
    ``norm1`` (now ``attn.gate`` and ``attn.norm``); :meth:`_load_from_state_dict` renames them.
    """

    #: old parameter prefix -> new, inside one block
    _RENAMED = (("gate.", "attn.gate."), ("norm1.", "attn.norm."))

    def __init__(self, hidden_dim: int, heads: int, ff_mult: int, dropout: float, gated: bool) -> None:
        super().__init__()
        self.attn = CrossAttention(hidden_dim, hidden_dim, hidden_dim, heads, dropout, attn_dropout=0.0, gated=gated)
        self.ff = nn.Sequential(nn.Linear(hidden_dim, ff_mult * hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * hidden_dim, hidden_dim))
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def gate(self) -> nn.Linear | None:
        """The attention's gate (``W``, ``b`` above); None in the standard variant."""
        return self.attn.gate

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        x = self.attn(x, y, y_mask)
        return self.norm2(x + self.dropout(self.ff(x)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self._RENAMED:
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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

    def forward(self, drug: torch.Tensor, protein: torch.Tensor, drug_index: torch.Tensor | None = None,
                protein_index: torch.Tensor | None = None, *, packed: bool = True) -> torch.Tensor:
        """``drug`` (Ud, Ld) and ``protein`` (Up, Lp) token ids; the pairs are rows ``drug_index`` (B,)
        and ``protein_index`` (B,) of them (default: row i with row i). Each sequence is encoded once.

        ``packed`` (default) runs the fusion layers on each pair's real tokens only (see
        :func:`_fuse_packed`); ``packed=False`` pads every pair to the batch's longest sequences, the
        reference computation. The two agree to float rounding, in training mode too (on CPU both draw
        the same dropout masks from the same generator state).
        """
        d_mask, p_mask = drug != PAD, protein != PAD  # (Ud, Ld), (Up, Lp)
        d = self.drug_encoder(drug, d_mask)  # (Ud, Ld, H)
        p = self.protein_encoder(protein, p_mask)  # (Up, Lp, H)
        if self.cfg.protein_pool > 1:
            p, p_mask = _masked_max_pool(p, p_mask, self.cfg.protein_pool)  # (Up, ceil(Lp / s), H)
        if drug_index is None:
            drug_index = torch.arange(len(drug), device=drug.device)
        if protein_index is None:
            protein_index = torch.arange(len(protein), device=protein.device)
        if packed:
            z = _fuse_packed(self.fusion, d, d_mask, drug_index, p, p_mask, protein_index)  # (B, 4H)
        else:
            d, d_mask = d[drug_index], d_mask[drug_index]  # (B, Ld, H)
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


class _Packing(NamedTuple):
    """Where the real tokens of a batch's pairs lie, one row each in *packed* order (pair by pair):
    packed row ``n`` is token ``t`` of pair ``b``, row ``pad[n] = b * L + t`` of the padded ``(B * L)`` layout."""

    pad: torch.Tensor  # (N,) long
    pair: torch.Tensor  # (N,) long: b
    mask: torch.Tensor  # (B, L) bool: the padded layout's real tokens
    dense: bool  # no padding (N == B * L): packed and padded rows coincide, nothing to gather


def _packing(mask: torch.Tensor, index: torch.Tensor) -> _Packing:
    """Mask ``(U, L)`` of the distinct sequences and each pair's row ``index`` ``(B,)`` -> the packing."""
    pair_mask = mask[index]  # (B, L)
    length = pair_mask.shape[1]
    pad = pair_mask.reshape(-1).nonzero().squeeze(1)
    return _Packing(pad, torch.div(pad, length, rounding_mode="floor"), pair_mask, len(pad) == pair_mask.numel())


class _Rows(torch.autograd.Function):
    """``x.index_select(0, index)`` for *distinct* row indices: the gradient is copied back into place
    (``index_copy``) instead of accumulated (``index_add``, which on CPU is several times slower)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, *grad.shape[1:]).index_copy_(0, index, grad), None


class _Select(torch.autograd.Function):
    """``x.index_select(0, index)`` whose backward sums the gradients of repeated rows by a one-hot
    matrix product ``(U, B) @ (B, ...)`` instead of ``index_add`` (a scatter, slow on CPU for big rows)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        onehot = F.one_hot(index, ctx.rows).to(grad.dtype).t()  # (U, B)
        return (onehot @ grad.reshape(len(index), -1)).view(ctx.rows, *grad.shape[1:]), None


def _pad(x: torch.Tensor, pk: _Packing) -> torch.Tensor:
    """Packed rows ``(N, C)`` -> the padded layout ``(B, L, C)``, zero at padding."""
    batch, length = pk.mask.shape
    if pk.dense:
        return x.view(batch, length, -1)
    return x.new_zeros(batch * length, x.shape[-1]).index_copy_(0, pk.pad, x).view(batch, length, -1)


def _rows(x: torch.Tensor, pk: _Packing) -> torch.Tensor:
    """The padded layout's rows ``(B * L, C)`` -> the real tokens' rows, packed ``(N, C)``."""
    return x if pk.dense else _Rows.apply(x, pk.pad)


def _per_pair(x: torch.Tensor, index: torch.Tensor, pk: _Packing) -> torch.Tensor:
    """Per-sequence rows ``(U, L, C)`` -> each pair's real tokens, packed ``(N, C)``. Pairs index whole
    sequences first, so the backward sums the pairs of one sequence in ``B`` row blocks."""
    return _rows(_Select.apply(x, index).reshape(-1, x.shape[-1]), pk)


def _dropout(module: nn.Module, x: torch.Tensor, pk: _Packing) -> torch.Tensor:
    """``nn.Dropout`` ``module`` on packed rows ``(N, C)``: a keep-mask drawn for the padded ``(B * L, C)``
    layout (:func:`models.layers.dropout.keep_mask`, a quarter of ``bernoulli_``'s cost, 1 byte an element
    kept for backward), its real rows applied. With ``F.dropout``'s draws instead (``bernoulli_`` over
    ``empty_like`` of the padded input, what ``forward(..., packed=False)`` draws) the packed and the padded
    computations drop the same features (``tests/models/test_drug_target_dedup.py``)."""
    keep = keep_prob(module.p)
    if not module.training or keep == 1.0:
        return x
    batch, length = pk.mask.shape
    mask = keep_mask((batch * length, x.shape[-1]), keep, x.device)
    return drop(x, mask if pk.dense else mask.index_select(0, pk.pad), keep)


def _gate_query(attn: CrossAttention, x: torch.Tensor) -> torch.Tensor | None:
    """The query's term of the gate, ``W_g[:, :H] x + b_g`` (None when not gated): with it, the gate
    needs no ``[x; a]`` concatenation, and for the first fusion layer it is computed per sequence."""
    if attn.gate is None:
        return None
    return F.linear(x, attn.gate.weight[:, : x.shape[-1]], attn.gate.bias)


def _block_packed(block: CrossAttentionBlock, x: torch.Tensor, pk: _Packing, q: torch.Tensor, kv: torch.Tensor,
                  kv_mask: torch.Tensor, gate_q: torch.Tensor | None) -> torch.Tensor:
    """:meth:`CrossAttentionBlock.forward` on packed queries, from their projections.

    Shapes: x ``(N, H)`` (the queries' real tokens, packed by ``pk``), q ``(B, Lx, H)`` their projection
    in the padded layout, kv ``(B, Ly, 2H)`` the keys' and values' projection, kv_mask ``(B, Ly)``,
    gate_q ``(N, H)`` or None -> ``(N, H)``. Only the attention sees padding (masked keys; padded queries
    are computed and dropped); every position-wise layer runs on the ``N`` real tokens.
    """
    attn = block.attn
    batch, lx, width = q.shape
    q = q.view(batch, lx, attn.heads, -1).transpose(1, 2)  # (B, h, Lx, d)
    k, v = kv.view(batch, kv.shape[1], 2, attn.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x (B, h, Ly, d)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_mask[:, None, None, :],
                                       dropout_p=attn.attn_dropout if attn.training else 0.0)
    a = _rows(a.transpose(1, 2).reshape(batch * lx, width), pk)  # (N, H); a view before the rows
    a = _dropout(attn.dropout, attn.out(a), pk)
    if gate_q is not None:
        a = torch.sigmoid(gate_q + F.linear(a, attn.gate.weight[:, width:])) * a
    x = attn.norm(x + a)
    f = x
    for module in block.ff:
        f = _dropout(module, f, pk) if isinstance(module, nn.Dropout) else module(f)
    return block.norm2(x + _dropout(block.dropout, f, pk))


def _fuse_packed(layers: nn.ModuleList, d: torch.Tensor, d_mask: torch.Tensor, drug_index: torch.Tensor,
                 p: torch.Tensor, p_mask: torch.Tensor, protein_index: torch.Tensor) -> torch.Tensor:
    """The fusion layers and the pooling on each pair's real tokens; what the padded forward computes.

    The first layer's inputs are the per-sequence encodings, so what it computes from one side alone
    (query, key/value and gate-query projections) is computed once per distinct drug and protein and
    indexed per pair; from then on every token row belongs to one pair. Tokens are packed (no padding)
    except inside the attention.

    Shapes: d ``(Ud, Ld, H)``, d_mask ``(Ud, Ld)``, drug_index ``(B,)``; p, p_mask, protein_index the
    same for proteins -> the pooled ``(B, 4H)`` (masked mean and max of drug, then protein tokens).
    Without fusion layers (late fusion) a pair's pooled codes are its two sequences': pooled once per
    distinct sequence, then indexed.
    """
    if not layers:
        (dm, dx), (pm, px) = _mean_max(d, d_mask), _mean_max(p, p_mask)  # each (U, H)
        return torch.cat([dm[drug_index], dx[drug_index], pm[protein_index], px[protein_index]], dim=-1)
    pd, pp = _packing(d_mask, drug_index), _packing(p_mask, protein_index)
    width = d.shape[-1]
    xd, xp = _per_pair(d, drug_index, pd), _per_pair(p, protein_index, pp)  # (Nd, H), (Np, H)
    for i, layer in enumerate(layers):
        to_d, to_p = layer.drug_from_protein, layer.protein_from_drug
        if i == 0:  # per distinct sequence, then per pair
            q_d, kv_p = _Select.apply(to_d.attn.q(d), drug_index), _Select.apply(to_d.attn.kv(p), protein_index)
            q_p, kv_d = _Select.apply(to_p.attn.q(p), protein_index), _Select.apply(to_p.attn.kv(d), drug_index)
            g_d, g_p = (g if g is None else _per_pair(g, index, pk)
                        for g, index, pk in ((_gate_query(to_d.attn, d), drug_index, pd),
                                             (_gate_query(to_p.attn, p), protein_index, pp)))
        else:
            q_d, kv_p = _pad(to_d.attn.q(xd), pd), _pad(to_d.attn.kv(xp), pp)
            q_p, kv_d = _pad(to_p.attn.q(xp), pp), _pad(to_p.attn.kv(xd), pd)
            g_d, g_p = _gate_query(to_d.attn, xd), _gate_query(to_p.attn, xp)
        xd, xp = (_block_packed(to_d, xd, pd, q_d, kv_p, pp.mask, g_d),
                  _block_packed(to_p, xp, pp, q_p, kv_d, pd.mask, g_p))
    return torch.cat([*_pool_packed(xd, pd), *_pool_packed(xp, pp)], dim=-1)


def _pool_packed(x: torch.Tensor, pk: _Packing) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_mean_max` of packed rows: ``(N, H)`` -> masked mean and max, two ``(B, H)``."""
    batch, length = pk.mask.shape
    count = pk.mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
    mean = x.new_zeros(batch, x.shape[-1]).index_add(0, pk.pair, x) / count
    mx = x.new_full((batch * length, x.shape[-1]), torch.finfo(x.dtype).min).index_copy_(0, pk.pad, x)
    return mean, mx.view(batch, length, -1).amax(1)


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
