"""A two-stage spatial/temporal transformer encoder-decoder for traffic forecasting.

Data flow (B batch, L input steps, H forecast steps, N sensors, F input features, D ``embed_dim``)::

    x (B, L, N, F) --input_proj + node emb + positions--> h0 (B, L, N, D)
    stage 1 (encoder, L steps):  temporal stream  = temporal_depth_1 x TemporalBlock(h0)
                                 spatial stream   = spatial_depth_1  x SpatialBlock(h0)
                                 h1 = Fusion_1(temporal, spatial)                      (B, L, N, D)
    transform:  queries for the H forecast steps (their time features + node emb + positions)
                attend over h1 along time, per sensor                                  (B, H, N, D)
    stage 2 (decoder, H steps):  temporal_depth_2 / spatial_depth_2 blocks, Fusion_2   (B, H, N, D)
    head:       LayerNorm + Linear(D, 1)                                              -> (B, H, N)

Temporal blocks attend over time separately for every sensor; spatial blocks attend over sensors
separately for every step, optionally restricted to the sensor graph (``spatial_graph: mask``) or
biased by it (``bias``). The model alternates between the two views and between the two stages; the
only path from stage 1 to stage 2 is the transform attention. The plan's known failures are not
expressible: the stages share no parameters, there are no skip connections across stages, no cycles
of stages and no multi-scale pyramid.

Positions (``positional_encoding_type``) are over time steps 0..L-1 (inputs) and L..L+H-1 (forecast):
``fixed`` sin/cos and ``learnable`` tables are added to the tokens; ``relative`` is a learned per-head
bias of the clipped distance ``clip(j - i, -k, k)`` (Shaw et al. 2018 clipping, T5-style scalar bias)
in every attention over time; ``rotary`` rotates queries and keys by their step (RoPE, Su et al. 2021).
Sensors have no order; the optional node embedding tells them apart.

Outputs are in scaled units; :class:`models.traffic.task.TrafficTask` maps them back with the scaler
stored in the model's buffers (``scaler_mean``, ``scaler_std``), so a checkpoint is self-contained.

Memory (issue #17): the same arithmetic as the first version (frozen in ``bench/legacy/traffic_v1.py``, the
reference of ``tests/models/test_traffic_light.py``) with far less kept for backward. The temporal stream
stays in sensor-major layout (B*N, T, D) through its blocks and the spatial one in step-major (B*T, N, D),
so a block copies nothing on the way in or out; self-attention computes q, k, v with one matmul and hands
strided views to ``scaled_dot_product_attention``; dropout keeps a bool mask, not a float noise tensor, and
draws it 16 bits an element (:mod:`models.layers.dropout`: a third of ``bernoulli_``'s cost, not the draws
``F.dropout`` makes for the same seed; with ``F.dropout``'s draws the outputs are the first version's); and
every feed-forward (LayerNorm -> Linear -> GELU -> dropout -> Linear -> dropout) runs in row chunks and keeps
only its input and its dropout masks, recomputing its hidden layer chunk by chunk in backward
(:class:`_ChunkedMlp`). ``recompute`` trades time for less: ``attention`` keeps only a stream block's input
for its attention and ``block`` only the input of each stream block, recomputing the rest in backward
(``torch.utils.checkpoint``, which replays the same dropout draws, so outputs and gradients are unchanged).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from models.layers import make_fusion
from models.layers.dropout import dropout, keep_mask, keep_prob, masked
from models.traffic.config import TrafficConfig


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (train only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class RelativeBias(nn.Module):
    """Learned bias per head for the clipped relative distance ``j - i`` of two steps.

    Shapes: ``q_pos`` (Lq,), ``k_pos`` (Lk,) -> (heads, Lq, Lk).
    """

    def __init__(self, heads: int, max_distance: int) -> None:
        super().__init__()
        self.k = max_distance
        self.table = nn.Parameter(torch.zeros(2 * max_distance + 1, heads))

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        rel = (k_pos[None, :] - q_pos[:, None]).clamp(-self.k, self.k) + self.k  # (Lq, Lk)
        return self.table[rel].permute(2, 0, 1)


def rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` (..., T, d) by positions ``pos`` (T,); d even (half-split form)."""
    d = x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))  # (d/2,)
    ang = pos.to(torch.float32)[:, None] * inv[None, :]  # (T, d/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Multi-head attention with optional relative-position bias, rotary positions and an extra
    additive bias / boolean mask.

    Args:
        dim: token width D. heads: number of heads (D % heads == 0). dropout: on the output.
            attn_dropout: on the attention weights (default: ``dropout``). positions: ``"relative"`` / ``"rotary"`` / ``None`` (time attentions only).
        max_relative_position: clipping distance of ``relative``. graph_bias: learn one weight per
            head that multiplies an additive graph bias passed to :meth:`forward`.

    Shapes:
        q_in (B', Lq, D), kv_in (B', Lk, D), q_pos (Lq,), k_pos (Lk,),
        bias: (Lq, Lk) float (added, times the per-head weight when ``graph_bias``) or bool mask
        (True = may attend) -> (B', Lq, D).
    """

    def __init__(self, dim: int, heads: int, dropout: float, positions: Optional[str] = None,
                 max_relative_position: int = 12, graph_bias: bool = False, attn_dropout: Optional[float] = None) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.out_drop = nn.Dropout(dropout)
        self.rotary = positions == "rotary"
        self.rel = RelativeBias(heads, max_relative_position) if positions == "relative" else None
        self.graph_weight = nn.Parameter(torch.ones(heads)) if graph_bias else None

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor, q_pos: Optional[torch.Tensor] = None,
                k_pos: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        Bp, Lq, D = q_in.shape
        Lk = kv_in.shape[1]
        if kv_in is q_in:  # self-attention: q, k and v from one matmul, as strided views (no copies)
            qkv = F.linear(q_in, torch.cat([self.q.weight, self.kv.weight]), torch.cat([self.q.bias, self.kv.bias]))
            q, k, v = qkv.view(Bp, Lq, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B', h, L, d)
        else:
            q = self.q(q_in).view(Bp, Lq, self.heads, self.head_dim).transpose(1, 2)  # (B', h, Lq, d)
            k, v = self.kv(kv_in).view(Bp, Lk, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B', h, Lk, d)
        if self.rotary:
            q, k = rotate(q, q_pos), rotate(k, k_pos)
        mask = None
        if self.rel is not None:
            mask = self.rel(q_pos, k_pos)  # (h, Lq, Lk)
        if bias is not None:
            if bias.dtype == torch.bool:
                neg = torch.zeros(bias.shape, dtype=q.dtype, device=q.device).masked_fill(~bias, float("-inf"))
                mask = neg if mask is None else mask + neg
            else:
                b = bias[None] * self.graph_weight[:, None, None] if self.graph_weight is not None else bias[None]
                mask = b if mask is None else mask + b
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0)
        return dropout(self.out(y.transpose(1, 2).reshape(Bp, Lq, D)), self.out_drop.p, self.training)


#: rows of one chunk of :class:`_ChunkedMlp` = this many hidden activations / hidden width (8 MiB in float32)
MLP_CHUNK_ELEMENTS = 1 << 21


class _ChunkedMlp(torch.autograd.Function):
    """``drop(fc2(drop(gelu(fc1(LN(x))))))`` over the rows of ``x`` (M, D), chunk by chunk, keeping for backward
    only ``x`` and the two bool dropout masks ``m1`` (M, hidden) and ``m2`` (M, D) (None: no dropout), drawn
    whole by the caller (:func:`models.layers.dropout.keep_mask`); backward recomputes each
    chunk's LayerNorm, ``fc1`` and GELU instead of keeping the hidden layer (4x the input's size). The
    dropout scale ``s = 1 / keep`` is folded into the small weights (``fc2`` weight * s^2, bias * s: the same
    products up to float rounding). The LayerNorm is optional (``ln_w`` None)."""

    @staticmethod
    def _chunks(x, w1):
        step = max(1, MLP_CHUNK_ELEMENTS // w1.shape[0])
        return [(i, min(i + step, x.shape[0])) for i in range(0, x.shape[0], step)]

    @staticmethod
    def _hidden(xc, ln, w1, b1, approximate, m1c):
        """(z, LN mean, LN rstd, fc1 output h, the masked activation a * m1)"""
        if ln is not None:
            z, mean, rstd = torch.ops.aten.native_layer_norm(xc, [xc.shape[-1]], ln[0], ln[1], ln[2])
        else:
            z, mean, rstd = xc, None, None
        h = torch.addmm(b1, z, w1.t())
        a = F.gelu(h, approximate=approximate)
        if m1c is not None:
            masked(a, m1c)
        return z, mean, rstd, h, a

    @staticmethod
    def run(x, ln, w1, b1, w2, b2, approximate, keep, m1, m2):
        """The forward values (no graph), chunk by chunk; ``x`` (M, D) contiguous."""
        if m1 is not None:
            w2, b2 = w2 * (1.0 / keep) ** 2, b2 * (1.0 / keep)
        out = x.new_empty(x.shape[0], w2.shape[0])
        for i, j in _ChunkedMlp._chunks(x, w1):
            a = _ChunkedMlp._hidden(x[i:j], ln, w1, b1, approximate, None if m1 is None else m1[i:j])[-1]
            o = torch.addmm(b2, a, w2.t(), out=out[i:j])
            if m2 is not None:
                masked(o, m2[i:j])
        return out

    @staticmethod
    def forward(ctx, x, ln_w, ln_b, eps, w1, b1, w2, b2, approximate, keep, m1, m2):
        ln = (ln_w, ln_b, eps) if ln_w is not None else None
        ctx.meta = (eps, approximate, keep, ln_w is not None)
        ctx.save_for_backward(x, ln_w, ln_b, w1, b1, w2, b2, m1, m2)
        return _ChunkedMlp.run(x, ln, w1, b1, w2, b2, approximate, keep, m1, m2)

    @staticmethod
    def backward(ctx, g):
        x, ln_w, ln_b, w1, b1, w2, b2, m1, m2 = ctx.saved_tensors
        eps, approximate, keep, has_ln = ctx.meta
        ln = (ln_w, ln_b, eps) if has_ln else None
        s = 1.0 / keep if m1 is not None else 1.0
        w2s = w2 * (s * s) if m1 is not None else w2
        g = g.contiguous()
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        gw1, gb1, gw2, gb2 = (torch.zeros_like(t) for t in (w1, b1, w2, b2))
        gln_w = torch.zeros_like(ln_w) if has_ln else None
        gln_b = torch.zeros_like(ln_b) if has_ln else None
        for i, j in _ChunkedMlp._chunks(x, w1):
            m1c = None if m1 is None else m1[i:j]
            z, mean, rstd, h, a = _ChunkedMlp._hidden(x[i:j], ln, w1, b1, approximate, m1c)
            g2 = g[i:j] if m2 is None else g[i:j] * m2[i:j].view(torch.uint8)
            gw2.addmm_(g2.t(), a)
            gb2.add_(g2.sum(0))
            ga = g2 @ w2s
            if m1c is not None:
                masked(ga, m1c)
            gh = torch.ops.aten.gelu_backward(ga, h, approximate=approximate)
            del a, ga, h
            gw1.addmm_(gh.t(), z)
            gb1.add_(gh.sum(0))
            if gx is None and not has_ln:
                continue
            gz = gh @ w1
            if not has_ln:
                gx[i:j] = gz
                continue
            gxc, gwc, gbc = torch.ops.aten.native_layer_norm_backward(
                gz, x[i:j], [x.shape[-1]], mean, rstd, ln_w, ln_b, [gx is not None, True, True])
            if gx is not None:
                gx[i:j] = gxc
            gln_w.add_(gwc)
            gln_b.add_(gbc)
        if m1 is not None:
            gw2.mul_(s * s)
            gb2.mul_(s)
        return gx, gln_w, gln_b, None, gw1, gb1, gw2, gb2, None, None, None, None


class Mlp(nn.Sequential):
    """``Linear(D, r*D) -> GELU -> Dropout -> Linear(r*D, D) -> Dropout`` (these five children, so state dicts
    keep their ``0.`` / ``3.`` keys), run by :class:`_ChunkedMlp`; ``forward(x, norm)`` applies the LayerNorm
    ``norm`` first, inside the chunks. Shapes: (*, D) -> (*, D)."""

    def __init__(self, dim: int, ratio: float, dropout: float) -> None:
        hidden = max(1, int(round(dim * ratio)))
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, norm: Optional[nn.LayerNorm] = None) -> torch.Tensor:
        fc1, act, drop, fc2 = self[0], self[1], self[2], self[3]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        keep = keep_prob(drop.p) if self.training else 1.0
        m1 = m2 = None
        if keep < 1.0:  # the masks of the two dropouts: all of the first, then the second
            m1 = keep_mask((x2.shape[0], fc1.out_features), keep, x.device)
            m2 = keep_mask((x2.shape[0], fc2.out_features), keep, x.device)
        ln = (norm.weight, norm.bias, norm.eps) if norm is not None else (None, None, 0.0)
        x2 = x2.contiguous()
        args = (fc1.weight, fc1.bias, fc2.weight, fc2.bias, act.approximate, keep, m1, m2)
        if torch.is_grad_enabled() and (x.requires_grad or any(t is not None and t.requires_grad for t in (ln[0], *args[:4]))):
            out = _ChunkedMlp.apply(x2, *ln, *args)
        else:
            out = _ChunkedMlp.run(x2, ln if norm is not None else None, *args)
        return out.view(*shape[:-1], out.shape[-1])


class Block(nn.Module):
    """Pre-norm transformer block over time (``axis="time"``) or over sensors (``axis="space"``).

    Shapes: h (B, T, N, D) -> (B, T, N, D). Time blocks take positions ``pos`` (T,); space blocks the
    graph ``graph`` ((N, N) bool mask or float bias, or None). :meth:`forward_seq` is the block on the
    sequences themselves, ``seq`` (B*N, T, D) over time or (B*T, N, D) over sensors -> the same shape: a
    stream of blocks stays in that layout and copies nothing between them. With ``cfg.recompute``
    ``attention`` / ``block`` (and autograd recording), backward recomputes the attention / the whole block.
    """

    def __init__(self, axis: str, cfg: TrafficConfig, drop_path: float, graph_mode: str = "none") -> None:
        super().__init__()
        self.axis = axis
        D = cfg.embed_dim
        positions = cfg.positional_encoding_type if axis == "time" and cfg.positional_encoding_type in ("relative", "rotary") else None
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = Attention(D, cfg.num_heads, cfg.dropout, positions, cfg.max_relative_position,
                              graph_bias=axis == "space" and graph_mode == "bias", attn_dropout=cfg.attn_dropout)
        self.mlp = Mlp(D, cfg.mlp_ratio, cfg.dropout)
        self.drop_path = DropPath(drop_path)
        self.recompute = cfg.recompute

    def _attend(self, seq: torch.Tensor, pos: Optional[torch.Tensor], graph: Optional[torch.Tensor]) -> torch.Tensor:
        z = self.norm1(seq)
        return self.drop_path(self.attn(z, z, pos, pos, None if self.axis == "time" else graph))

    def _block(self, seq: torch.Tensor, pos: Optional[torch.Tensor], graph: Optional[torch.Tensor]) -> torch.Tensor:
        if self.recompute == "attention" and torch.is_grad_enabled():
            seq = seq + checkpoint(self._attend, seq, pos, graph, use_reentrant=False)
        else:
            seq = seq + self._attend(seq, pos, graph)
        return seq + self.drop_path(self.mlp(seq, self.norm2))

    def forward_seq(self, seq: torch.Tensor, pos: Optional[torch.Tensor] = None, graph: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.recompute == "block" and torch.is_grad_enabled():
            return checkpoint(self._block, seq, pos, graph, use_reentrant=False)
        return self._block(seq, pos, graph)

    def forward(self, h: torch.Tensor, pos: Optional[torch.Tensor] = None, graph: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, N, D = h.shape
        if self.axis == "time":
            seq = self.forward_seq(h.transpose(1, 2).reshape(B * N, T, D), pos=pos)  # (B*N, T, D)
            return seq.view(B, N, T, D).transpose(1, 2)
        return self.forward_seq(h.reshape(B * T, N, D), graph=graph).view(B, T, N, D)


class CrossAttnFusion(nn.Module):
    """``cross_attn`` fusion of the temporal stream ``t`` and the spatial stream ``s``:
    ``t + CrossAttn(q = LN(t), kv = LN(s))`` over time per sensor (``fusion_heads``, ``fusion_dropout``,
    the model's time positions), then ``+ MLP``, then a LayerNorm.

    Shapes: t, s (B, T, N, D), pos (T,) -> (B, T, N, D)
    """

    def __init__(self, cfg: TrafficConfig) -> None:
        super().__init__()
        D = cfg.embed_dim
        positions = cfg.positional_encoding_type if cfg.positional_encoding_type in ("relative", "rotary") else None
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = Attention(D, cfg.fusion_heads, cfg.fusion_dropout, positions, cfg.max_relative_position)
        self.mlp = Mlp(D, cfg.mlp_ratio, cfg.fusion_dropout)
        self.norm = nn.LayerNorm(D)

    def forward(self, t: torch.Tensor, s: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, N, D = t.shape
        tq = t.transpose(1, 2).reshape(B * N, T, D)  # a view when t is sensor-major in memory
        sk = s.transpose(1, 2).reshape(B * N, T, D)
        h = tq + self.attn(self.norm_q(tq), self.norm_kv(sk), pos, pos)
        h = h + self.mlp(h, self.norm_mlp)
        return self.norm(h).view(B, N, T, D).transpose(1, 2)  # (B, T, N, D), sensor-major in memory


def make_stream_fusion(cfg: TrafficConfig) -> nn.Module:
    """The fusion of the temporal stream (first input) and the spatial stream (second), each ending in a
    LayerNorm: ``cross_attn`` is :class:`CrossAttnFusion`; ``gated`` (GMAN's), ``concat``,
    ``gated_residual`` (``gate_activation``) and ``adaptive`` are the shared :mod:`models.layers.fusion`
    blocks. Shapes: (B, T, N, D), (B, T, N, D) -> (B, T, N, D)."""
    if cfg.fusion_type == "cross_attn":
        return CrossAttnFusion(cfg)
    return make_fusion(cfg.fusion_type, cfg.embed_dim, norm=True, gate_activation=cfg.gate_activation)


class Stage(nn.Module):
    """A temporal stream and a spatial stream side by side, then their fusion. (B, T, N, D) -> same."""

    def __init__(self, cfg: TrafficConfig, t_depth: int, s_depth: int, drop_paths: list[float], graph_mode: str) -> None:
        super().__init__()
        self.temporal = nn.ModuleList(Block("time", cfg, drop_paths[i]) for i in range(t_depth))
        self.spatial = nn.ModuleList(Block("space", cfg, drop_paths[i], graph_mode) for i in range(s_depth))
        self.fusion = make_stream_fusion(cfg)

    def forward(self, h: torch.Tensor, pos: torch.Tensor, graph: Optional[torch.Tensor]) -> torch.Tensor:
        """h (B, T, N, D), any memory layout -> (B, T, N, D), sensor-major in memory (a transposed view of a
        contiguous (B, N, T, D)): each stream copies its input into its own layout once (nothing when it is
        already in it) and keeps it through its blocks."""
        B, T, N, D = h.shape
        t = h.transpose(1, 2).reshape(B * N, T, D)  # (B*N, T, D)
        for blk in self.temporal:
            t = blk.forward_seq(t, pos=pos)
        s = h.reshape(B * T, N, D)  # (B*T, N, D)
        for blk in self.spatial:
            s = blk.forward_seq(s, graph=graph)
        t4 = t.view(B, N, T, D)  # the fusion works sensor-major: its output is what the next attention over time reads
        s4 = s.view(B, T, N, D).transpose(1, 2)
        if isinstance(self.fusion, CrossAttnFusion):
            return self.fusion(t4.transpose(1, 2), s4.transpose(1, 2), pos)
        return self.fusion(t4, s4).transpose(1, 2)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the fusion blocks were shared name the gated fusion's weights
        ``fusion.w_t`` / ``fusion.w_s`` (now ``fusion.w_a`` / ``fusion.w_b``): rename them."""
        for old, new in (("fusion.w_t.", "fusion.w_a."), ("fusion.w_s.", "fusion.w_b.")):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def sincos_table(n: int, dim: int) -> torch.Tensor:
    """(n, dim) fixed sin/cos positions (Vaswani et al. 2017)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    ang = pos / (10000 ** (i / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : dim // 2])
    return pe


def graph_tensor(adj, mode: str, hops: int) -> Optional[torch.Tensor]:
    """The spatial attention's graph from an (N, N) adjacency: symmetrised ``max(A, A^T)`` with self loops;
    ``mask``: bool reachability within ``hops``; ``bias``: the weights themselves (in [0, 1] for DCRNN's kernel)."""
    if mode == "none":
        return None
    a = torch.as_tensor(adj, dtype=torch.float32)
    a = torch.maximum(a, a.T)
    a.fill_diagonal_(max(1.0, float(a.max())))
    if mode == "bias":
        return a / a.max()
    step = a > 0
    reach = step.clone()
    for _ in range(hops - 1):
        reach = reach | ((reach.float() @ step.float()) > 0)
    return reach


class TrafficTransformer(nn.Module):
    """The full model; see the module docstring.

    Args:
        cfg: the model config. n_nodes: N. in_features: F (scaled signal + time features).
        time_features: F_t, time features of the forecast steps given to the decoder (0 allowed).
        input_len, output_len: L and H. adj: (N, N) adjacency or None (then ``spatial_graph`` must be
        ``none``). scaler_mean, scaler_std: (1,) or (N,) scaler of the signal, kept as buffers.

    Shapes: ``forward(x (B, L, N, F), tf (B, H, F_t)) -> (B, H, N)`` in scaled units;
    :meth:`unscale` maps to data units.
    """

    def __init__(self, cfg: TrafficConfig, *, n_nodes: int, in_features: int, time_features: int,
                 input_len: int, output_len: int, adj=None, scaler_mean=None, scaler_std=None) -> None:
        super().__init__()
        if cfg.spatial_graph != "none" and adj is None:
            raise ValueError(f"spatial_graph: {cfg.spatial_graph} needs a sensor graph, but the dataset has no "
                             "adjacency (give task.dataset.adj, or set spatial_graph: none)")
        self.cfg = cfg
        D, L, H = cfg.embed_dim, input_len, output_len
        self.n_nodes, self.input_len, self.output_len = n_nodes, L, H
        pe = cfg.positional_encoding_type

        # -- encoder group: input embedding, sensor identity, additive positions, stage 1
        self.input_proj = nn.Linear(in_features, D)
        self.node_emb = nn.Parameter(torch.randn(n_nodes, D) * 0.02) if cfg.node_embedding else None
        self.pos_table = nn.Parameter(torch.randn(L + H, D) * 0.02) if pe == "learnable" else None
        self.register_buffer("pos_fixed", sincos_table(L + H, D) if pe == "fixed" else torch.zeros(0), persistent=False)
        self.embed_drop = nn.Dropout(cfg.dropout)
        depth1 = max(cfg.temporal_depth_1, cfg.spatial_depth_1)
        depth = depth1 + max(cfg.temporal_depth_2, cfg.spatial_depth_2)
        rates = [cfg.stochastic_depth_rate * (i + 1) / depth for i in range(depth)]
        self.stage1 = Stage(cfg, cfg.temporal_depth_1, cfg.spatial_depth_1, rates[:depth1], cfg.spatial_graph)

        # -- decoder group: forecast-step queries, transform attention, stage 2
        self.query_proj = nn.Linear(time_features, D) if time_features > 0 else None
        self.query_token = nn.Parameter(torch.zeros(D))
        positions = pe if pe in ("relative", "rotary") else None
        self.transform_norm_q, self.transform_norm_kv = nn.LayerNorm(D), nn.LayerNorm(D)
        self.transform = Attention(D, cfg.num_heads, cfg.dropout, positions, cfg.max_relative_position,
                                   attn_dropout=cfg.attn_dropout)
        self.transform_norm_mlp = nn.LayerNorm(D)
        self.transform_mlp = Mlp(D, cfg.mlp_ratio, cfg.dropout)
        self.stage2 = Stage(cfg, cfg.temporal_depth_2, cfg.spatial_depth_2, rates[depth1:], cfg.spatial_graph)

        # -- head
        self.head_norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 1)

        g = graph_tensor(adj, cfg.spatial_graph, cfg.graph_hops) if adj is not None else None
        self.register_buffer("graph", g if g is not None else torch.zeros(0), persistent=False)
        self.register_buffer("scaler_mean", torch.as_tensor(scaler_mean if scaler_mean is not None else [0.0], dtype=torch.float32).reshape(-1))
        self.register_buffer("scaler_std", torch.as_tensor(scaler_std if scaler_std is not None else [1.0], dtype=torch.float32).reshape(-1))
        self.register_buffer("positions", torch.arange(L + H), persistent=False)

    def _add_positions(self, h: torch.Tensor, offset: int, n: int, sensor_major: bool = False) -> torch.Tensor:
        """h (B, T, N, D), or (B, N, T, D) with ``sensor_major``, plus the step positions and the node embedding."""
        table = self.pos_table if self.pos_table is not None else self.pos_fixed if self.pos_fixed.numel() else None
        if table is not None:
            pos = table[offset : offset + n]
            h = h + (pos[None, None] if sensor_major else pos[None, :, None, :])
        if self.node_emb is not None:
            h = h + (self.node_emb[None, :, None, :] if sensor_major else self.node_emb[None, None])
        return h

    def forward(self, x: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        B, L, N, _ = x.shape
        H = self.output_len
        graph = self.graph if self.graph.numel() else None
        pos_in, pos_out = self.positions[:L], self.positions[L : L + H]

        h = dropout(self._add_positions(self.input_proj(x), 0, L), self.embed_drop.p, self.training)  # (B, L, N, D)
        h = self.stage1(h, pos_in, graph)  # (B, L, N, D)

        q = self.query_token.expand(B, H, 1, -1)
        if self.query_proj is not None:
            q = q + self.query_proj(tf)[:, :, None, :]  # (B, H, 1, D)
        # the queries built sensor-major, (B, N, H, D): the same sums as (B, H, N, D), laid out as they are read
        q = self._add_positions(q.transpose(1, 2), L, H, sensor_major=True)  # (B, N or 1, H, D)
        D = q.shape[-1]
        q = q.expand(B, N, H, D)
        qs = q.reshape(B * N, H, D)
        ks = h.transpose(1, 2).reshape(B * N, L, D)  # a view: stage 1 ends sensor-major
        d = qs + self.transform(self.transform_norm_q(qs), self.transform_norm_kv(ks), pos_out, pos_in)
        d = d + self.transform_mlp(d, self.transform_norm_mlp)
        d = d.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
        d = self.stage2(d, pos_out, graph)  # (B, H, N, D), sensor-major in memory
        return self.head(self.head_norm(d.transpose(1, 2))).squeeze(-1).transpose(1, 2).contiguous()  # (B, H, N)

    def unscale(self, y: torch.Tensor) -> torch.Tensor:
        """Scaled (..., N) -> data units."""
        return y * self.scaler_std + self.scaler_mean

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``encoder`` (embeddings, positions, stage 1), ``decoder`` (queries, transform, stage 2),
        ``head`` (final norm and projection); every parameter in exactly one group."""
        enc = [*self.input_proj.parameters(), *self.stage1.parameters()]
        enc += [p for p in (self.node_emb, self.pos_table) if p is not None]
        dec = [self.query_token, *self.transform_norm_q.parameters(), *self.transform_norm_kv.parameters(),
               *self.transform.parameters(), *self.transform_norm_mlp.parameters(), *self.transform_mlp.parameters(),
               *self.stage2.parameters()]
        if self.query_proj is not None:
            dec += list(self.query_proj.parameters())
        head = [*self.head_norm.parameters(), *self.head.parameters()]
        return {"encoder": enc, "decoder": dec, "head": head}
