"""Configs of the drug–target family: the model (:class:`DeepBindConfig`) and the preprocessing
(:class:`DTADataConfig`). Field names are the YAML keys of search spaces and exported configs, and
the constructor arguments; training settings (lr, batch_size, patience, ...) live in
:class:`hpo.train.TrainConfig`. Defaults are the seed's (plan 004) where it states one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hpo.train.config import knob

Encoder = Literal["cnn", "transformer"]
Tokenizer = Literal["char", "regex"]


@dataclass
class DeepBindConfig:
    """DeepBindNet: two sequence encoders fused by stacked (gated) cross-modal attention."""

    hidden_dim: int = knob(256, "width of every token feature: encoder outputs and fusion layers")
    feature_dim: int = knob(512, "width of the prediction head's first layer (lower it against overfitting)")
    fusion_heads: int = knob(8, "attention heads per cross-attention block; must divide hidden_dim")
    fusion_layers: int = knob(4, "stacked cross-modal fusion layers (0: late fusion of the pooled encodings)")
    dropout_rate: float = knob(0.1, "dropout in transformer encoders, fusion layers and head (none in the CNNs, as "
                                    "DeepDTA)")
    gated: bool = knob(True, "gated cross-attention (sigmoid gate on the attended values) vs standard residual")
    fusion_ff_mult: int = knob(2, "feed-forward width of each fusion block, as a multiple of hidden_dim")
    drug_encoder: Encoder = knob("cnn", 'SMILES encoder: "cnn" (DeepDTA-style) or "transformer"')
    protein_encoder: Encoder = knob("cnn", 'amino-acid sequence encoder: "cnn" or "transformer"')
    embed_dim: int = knob(128, "token embedding width (DeepDTA: 128); projected to hidden_dim")
    encoder_layers: int = knob(3, "conv layers (filters grow to hidden_dim, 1:2:3 as DeepDTA) or transformer layers")
    encoder_heads: int = knob(8, "transformer encoders only: attention heads; must divide hidden_dim")
    drug_kernel: int = knob(4, "cnn only: SMILES convolution width (DeepDTA searched 4, 6, 8)")
    protein_kernel: int = knob(8, "cnn only: protein convolution width (DeepDTA searched 4, 8, 12)")
    protein_pool: int = knob(1, "max-pool protein tokens by this stride before fusion (1: off; 4 cuts fusion cost ~4x)")

    def __post_init__(self) -> None:
        problems = []
        for name in ("hidden_dim", "feature_dim", "fusion_heads", "fusion_ff_mult", "embed_dim", "encoder_layers",
                     "encoder_heads", "drug_kernel", "protein_kernel", "protein_pool"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, but got {getattr(self, name)}")
        if self.fusion_layers < 0:
            problems.append(f"fusion_layers must be >= 0, but got {self.fusion_layers}")
        if not 0.0 <= self.dropout_rate < 1.0:
            problems.append(f"dropout_rate must be in [0, 1), but got {self.dropout_rate}")
        if self.fusion_heads >= 1 and self.hidden_dim % self.fusion_heads:
            problems.append(f"hidden_dim must be divisible by fusion_heads ({self.fusion_heads}), but got {self.hidden_dim}")
        uses_transformer = "transformer" in (self.drug_encoder, self.protein_encoder)
        if uses_transformer and self.encoder_heads >= 1 and self.hidden_dim % self.encoder_heads:
            problems.append(f"hidden_dim must be divisible by encoder_heads ({self.encoder_heads}), but got {self.hidden_dim}")
        for name in ("drug_encoder", "protein_encoder"):
            if getattr(self, name) not in get_args(Encoder):
                problems.append(f"{name} must be one of cnn, transformer, but got {getattr(self, name)!r}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class DTADataConfig:
    """Preprocessing settings; each value gets its own cache entry."""

    max_smiles_len: int = knob(100, "SMILES are cut to this many tokens (DeepDTA: 85 Davis, 100 KIBA)")
    max_protein_len: int = knob(1000, "sequences are cut to this many residues (DeepDTA: 1200 Davis, 1000 KIBA)")
    smiles_tokenizer: Tokenizer = knob(
        "char", 'char: DeepDTA\'s fixed alphabet; regex: atom-level tokens (Schwaller et al. 2019, e.g. "Cl", "[nH]") '
        "with a vocabulary from the training drugs")
    scale_target: bool = knob(True, "standardise the target with training-split mean/std (predictions are reported in "
                              "the original units either way)")
    train_subsample: float = knob(1.0, "train on this fraction of the training pairs (seeded by the split seed; a fidelity "
                                  "knob for fast studies); validation and test keep every pair")
    batch_proteins: int = knob(0, "> 0: each training batch draws its pairs from about this many proteins, so the protein "
                               "encoder runs on few sequences per batch (each distinct sequence is encoded once per "
                               "batch); 0: uniformly shuffled pairs")

    def __post_init__(self) -> None:
        problems = []
        if self.max_smiles_len < 1:
            problems.append(f"max_smiles_len must be >= 1, but got {self.max_smiles_len}")
        if self.max_protein_len < 1:
            problems.append(f"max_protein_len must be >= 1, but got {self.max_protein_len}")
        if not 0.0 < self.train_subsample <= 1.0:
            problems.append(f"train_subsample must be in (0, 1], but got {self.train_subsample}")
        if self.batch_proteins < 0:
            problems.append(f"batch_proteins must be >= 0, but got {self.batch_proteins}")
        if self.smiles_tokenizer not in get_args(Tokenizer):
            problems.append(f"smiles_tokenizer must be one of char, regex, but got {self.smiles_tokenizer!r}")
        if problems:
            raise ValueError("; ".join(problems))
