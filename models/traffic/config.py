"""Configs of the traffic task: the model (``TrafficConfig``) and the preprocessing (``TrafficDataConfig``).

Field names are the flat keys of a trial config and of the search-space YAML, one to one. The defaults
are the plan's Phase-1 baseline (seed 002): embed 96, 4 heads, depths 2-2-2-2, gated fusion, fixed
sin/cos positions, dropout 0.1, no augmentation. Training settings (lr, weight_decay, scheduler,
warmup, grad_accum_steps, patience, ...) are :class:`hpo.train.TrainConfig` fields, and layer-wise
learning rates are ``lr_encoder`` / ``lr_decoder`` / ``lr_head``.

Deliberately *not* expressible (the plan's known failures): parameter sharing between the two
stages, skip connections across stages, more than two stages / multi-stage cycles, multi-scale
pyramids. Label smoothing is not offered: it redistributes probability mass over classes and has no
meaning for a real-valued forecast (the nearest regression analogue, a loss less sensitive to
outliers, is ``loss: huber``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hpo.train.config import knob

FusionType = Literal["gated", "concat", "cross_attn", "gated_residual", "adaptive"]
PositionalEncoding = Literal["fixed", "learnable", "relative", "rotary"]
SpatialGraph = Literal["none", "mask", "bias"]
Loss = Literal["mae", "huber", "mse"]
GateActivation = Literal["sigmoid", "tanh"]
Recompute = Literal["none", "attention", "block"]
Scaler = Literal["global", "per_node"]
FUSION_TYPES: tuple[str, ...] = get_args(FusionType)
POSITIONAL_ENCODINGS: tuple[str, ...] = get_args(PositionalEncoding)
SPATIAL_GRAPH_MODES: tuple[str, ...] = get_args(SpatialGraph)
LOSSES: tuple[str, ...] = get_args(Loss)
RECOMPUTE_MODES: tuple[str, ...] = get_args(Recompute)

#: forecast horizons (steps ahead) with their own metrics, e.g. ``mae_h3``; 3/6/12 steps = 15/30/60 min at 5-min data
HORIZONS = (3, 6, 12)


@dataclass
class TrafficConfig:
    # -- capacity -------------------------------------------------------------------------------
    embed_dim: int = knob(96, "token width D everywhere (stream blocks, fusion, decoder)")
    num_heads: int = knob(4, "attention heads of the temporal / spatial blocks; embed_dim % num_heads == 0")
    temporal_depth_1: int = knob(2, "stage 1 (encoder, over the input window): temporal blocks, 1-3")
    spatial_depth_1: int = knob(2, "stage 1: spatial blocks, 1-3")
    temporal_depth_2: int = knob(2, "stage 2 (decoder, over the forecast horizon): temporal blocks, 1-3")
    spatial_depth_2: int = knob(2, "stage 2: spatial blocks, 1-3")
    mlp_ratio: float = knob(4.0, "hidden width of each block's feed-forward = mlp_ratio * embed_dim")
    # -- regularisation -------------------------------------------------------------------------
    dropout: float = knob(0.1, "dropout on embeddings, feed-forward layers and attention outputs")
    attn_dropout: float = knob(0.0, "dropout on the attention weights of the stream blocks (> 0 makes CPU attention "
                                    "unfused: slower, more memory)")
    stochastic_depth_rate: float = knob(0.0, "drop-path rate of the deepest block (linear in depth from 0)")
    # -- fusion of the temporal and spatial streams ----------------------------------------------
    fusion_type: FusionType = knob("gated", "how the temporal and spatial streams are fused: " + ", ".join(FUSION_TYPES))
    fusion_heads: int = knob(4, "cross_attn: heads; embed_dim % fusion_heads == 0")
    fusion_dropout: float = knob(0.1, "cross_attn: dropout on its attention weights and output")
    gate_activation: GateActivation = knob("sigmoid", "gated_residual: gate nonlinearity")
    # -- positions -------------------------------------------------------------------------------
    positional_encoding_type: PositionalEncoding = knob("fixed", "positional encoding over time steps: " + ", ".join(POSITIONAL_ENCODINGS))
    max_relative_position: int = knob(12, "relative: distances are clipped to +-this many steps")
    # -- sensor graph ----------------------------------------------------------------------------
    spatial_graph: SpatialGraph = knob("none", "none: full attention; mask: neighbours only; bias: + w_head * A")
    graph_hops: int = knob(1, "mask: a sensor attends to sensors within this many hops")
    node_embedding: bool = knob(True, "learned per-sensor embedding added to every token (sensor identity)")
    # -- memory ------------------------------------------------------------------------------------
    recompute: Recompute = knob("none", "what backward recomputes instead of keeping, for less memory at more time "
                                        "(the same outputs and gradients): none; attention (each stream block's "
                                        "attention); block (whole stream blocks: the least memory)")
    # -- loss --------------------------------------------------------------------------------------
    loss: Loss = knob("mae", "training loss (mae, huber or mse), masked, in the data's units (missing readings "
                             "ignored)")
    huber_delta: float = knob(1.0, "huber: quadratic below this error (data units)")
    # -- training-time augmentation (applied by step(train=True) only) ------------------------------
    noise_std: float = knob(0.0, "Gaussian noise on the scaled input signal (the plan's 0.01)")
    mask_ratio: float = knob(0.0, "fraction of input readings hidden as missing (the plan's 0.1)")
    temporal_shift: int = knob(0, "inputs delayed by a random 0..k steps (simulated data latency; the plan's 2)")
    mixup_alpha: float = knob(0.0, "mixup of two windows (inputs and targets), lambda ~ Beta(a, a); 0 = off")
    cutmix_prob: float = knob(0.0, "probability per batch of swapping a random sensor subset between windows")

    def __post_init__(self) -> None:
        p = []
        if self.embed_dim < 1 or self.num_heads < 1 or self.embed_dim % self.num_heads:
            p.append(f"embed_dim must be a positive multiple of num_heads, but got {self.embed_dim} and {self.num_heads}")
        elif self.positional_encoding_type == "rotary" and (self.embed_dim // self.num_heads) % 2:
            p.append(f"rotary positions need an even head width embed_dim / num_heads, but got {self.embed_dim // self.num_heads}")
        for name in ("temporal_depth_1", "spatial_depth_1", "temporal_depth_2", "spatial_depth_2"):
            if not 1 <= getattr(self, name) <= 6:
                p.append(f"{name} must be in 1..6, but got {getattr(self, name)}")
        if self.fusion_type not in FUSION_TYPES:
            p.append(f"fusion_type must be one of {', '.join(FUSION_TYPES)}, but got {self.fusion_type!r}")
        if self.fusion_type == "cross_attn" and (self.fusion_heads < 1 or self.embed_dim % self.fusion_heads):
            p.append(f"embed_dim must be a multiple of fusion_heads, but got {self.embed_dim} and {self.fusion_heads}")
        if self.gate_activation not in get_args(GateActivation):
            p.append(f"gate_activation must be sigmoid or tanh, but got {self.gate_activation!r}")
        if self.positional_encoding_type not in POSITIONAL_ENCODINGS:
            p.append(f"positional_encoding_type must be one of {', '.join(POSITIONAL_ENCODINGS)}, "
                     f"but got {self.positional_encoding_type!r}")
        if self.max_relative_position < 1:
            p.append(f"max_relative_position must be >= 1, but got {self.max_relative_position}")
        if self.spatial_graph not in SPATIAL_GRAPH_MODES:
            p.append(f"spatial_graph must be one of {', '.join(SPATIAL_GRAPH_MODES)}, but got {self.spatial_graph!r}")
        if self.graph_hops < 1:
            p.append(f"graph_hops must be >= 1, but got {self.graph_hops}")
        if self.recompute not in RECOMPUTE_MODES:
            p.append(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, but got {self.recompute!r}")
        if self.loss not in LOSSES:
            p.append(f"loss must be one of {', '.join(LOSSES)}, but got {self.loss!r}")
        if self.mlp_ratio <= 0:
            p.append(f"mlp_ratio must be > 0, but got {self.mlp_ratio}")
        for name in ("dropout", "attn_dropout", "fusion_dropout", "stochastic_depth_rate", "mask_ratio", "cutmix_prob"):
            if not 0 <= getattr(self, name) < 1:
                p.append(f"{name} must be in [0, 1), but got {getattr(self, name)}")
        for name in ("noise_std", "mixup_alpha"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, but got {getattr(self, name)}")
        if self.temporal_shift < 0:
            p.append(f"temporal_shift must be >= 0, but got {self.temporal_shift}")
        if self.huber_delta <= 0:
            p.append(f"huber_delta must be > 0, but got {self.huber_delta}")
        if p:
            raise ValueError("; ".join(p))


@dataclass
class TrafficDataConfig:
    """Preprocessing settings; each one is part of the data cache key."""

    input_len: int = knob(12, "input window in steps (12 = one hour of 5-min readings)")
    output_len: int = knob(12, "forecast horizon in steps")
    time_of_day: bool = knob(True, "add the time of day in [0, 1) as an input feature (DCRNN add_time_in_day)")
    day_of_week: bool = knob(False, "add the day of week / 7 as an input feature")
    scaler: Scaler = knob("global", "z-score from observed training readings: one mean/std or one per sensor")
    train_stride: int = knob(1, "train on every k-th window start only (a fidelity knob for fast studies); val/test "
                                "use every window")

    def __post_init__(self) -> None:
        p = []
        if self.input_len < 1:
            p.append(f"input_len must be >= 1, but got {self.input_len}")
        if self.output_len < 1:
            p.append(f"output_len must be >= 1, but got {self.output_len}")
        if self.train_stride < 1:
            p.append(f"train_stride must be >= 1, but got {self.train_stride}")
        if self.scaler not in get_args(Scaler):
            p.append(f"scaler must be global or per_node, but got {self.scaler!r}")
        if p:
            raise ValueError("; ".join(p))
