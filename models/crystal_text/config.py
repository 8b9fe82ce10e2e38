"""Configs of the crystal graph + text family.

:class:`CrystalTextConfig` is the model (field = YAML key = constructor argument); defaults are the
"current" config of seed 001 (the OptB88vdW band-gap run) where the seeds name a value.
:class:`CrystalDataConfig` holds the preprocessing settings; each distinct value gets its own cache
entry. Training settings (lr, weight_decay, scheduler, warmup_steps, patience, batch_size, grad_clip,
...) are :class:`hpo.train.TrainConfig` fields, not model fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hpo.train.config import knob

Loss = Literal["mse", "l1", "huber"]
AtomFeatures = Literal["physical", "learned", "both"]
Norm = Literal["batch", "layer"]
Pooling = Literal["cls", "mean"]


def parse_fusion_layers(spec: str, n_layers: int) -> tuple[int, ...]:
    """Parse ``middle_fusion_layers`` ("2", "1,2", "2,3", "1,2,3") into sorted 1-based layer numbers.

    Layer ``k`` is the k-th message-passing layer of the graph encoder, counting the ALIGNN layers
    first and then the GCN layers (so ``k`` lies in ``1..alignn_layers + gcn_layers``).
    Raises ``ValueError`` naming the rule when the string is malformed or a layer does not exist.
    """
    text = str(spec).strip()
    parts = [p.strip() for p in text.split(",")] if text else []
    if not parts or any(not p.isdigit() for p in parts):
        raise ValueError(
            f"middle_fusion_layers must be a comma-separated list of layer numbers such as \"2\" or \"1,2,3\", but got {spec!r}"
        )
    layers = sorted({int(p) for p in parts})
    bad = [k for k in layers if not 1 <= k <= n_layers]
    if bad:
        raise ValueError(
            f"middle_fusion_layers must name layers between 1 and {n_layers} (alignn_layers + gcn_layers), "
            f"but got {spec!r} (no layer {', '.join(map(str, bad))})"
        )
    return tuple(layers)


@dataclass
class CrystalTextConfig:
    """ALIGNN-style crystal graph encoder + a text encoder, fused by attention (see ``model.py``)."""

    # -- graph encoder (ALIGNN, Choudhary & DeCost 2021) --------------------------------------------------
    alignn_layers: int = knob(4, "ALIGNN layers: edge-gated convs on the line graph (angles) then the atom graph")
    gcn_layers: int = knob(4, "edge-gated convs on the atom graph only, after the ALIGNN layers")
    hidden_features: int = knob(256, "width of atom, bond and angle features in the graph encoder")
    embedding_features: int = knob(64, "width of the atom / bond / angle input embeddings before the hidden width")
    graph_dropout: float = knob(0.15, "dropout on atom and bond features after every graph layer")
    atom_features: AtomFeatures = knob(
        "physical", "atom inputs: fixed element descriptors (as ALIGNN's CGCNN features), a learned embedding, or both")
    edge_rbf_bins: int = knob(80, "radial basis functions for bond lengths (ALIGNN: 80)")
    edge_rbf_max: float = knob(8.0, "Å, centre of the last bond-length RBF (ALIGNN: 8.0; longer bonds saturate)")
    angle_rbf_bins: int = knob(40, "radial basis functions for bond-angle cosines over [-1, 1] (ALIGNN: 40)")
    graph_norm: Norm = knob("layer", 'normalisation in the edge-gated convs: "layer", or "batch" as ALIGNN '
                                     "(needs > 1 atom per batch)")
    # -- text encoder (trained from scratch over word tokens) ------------------------------------------------
    text_hidden_features: int = knob(128, "width of token features in the text encoder")
    text_layers: int = knob(2, "transformer encoder layers over the description tokens")
    text_num_heads: int = knob(4, "attention heads in the text encoder; must divide text_hidden_features")
    text_dropout: float = knob(0.1, "dropout inside the text encoder")
    text_pooling: Pooling = knob("mean", "sentence vector: mean of token features or the leading [CLS] token")
    # -- global cross-modal attention (graph vector <-> text tokens, text vector <-> atoms) -------------------
    use_cross_modal_attention: bool = knob(True, "global cross-modal attention (graph vector <-> text tokens, text "
                                                 "vector <-> atoms); off: pooled vectors go to the head as they are")
    cross_modal_hidden_dim: int = knob(256, "cross-modal attention width; must be divisible by cross_modal_num_heads")
    cross_modal_num_heads: int = knob(4, "cross-modal attention heads")
    cross_modal_dropout: float = knob(0.1, "cross-modal attention: dropout on attention weights and outputs")
    cross_modal_gated: bool = knob(False, "cross-modal attention, gated variant: a sigmoid gate mixes the attended vector into the query")
    # -- fine-grained attention (every atom <-> every text token) --------------------------------------------
    use_fine_grained_attention: bool = knob(True, "fine-grained attention: every atom attends to every text token and back")
    fine_grained_hidden_dim: int = knob(256, "fine-grained attention width; must be divisible by fine_grained_num_heads")
    fine_grained_num_heads: int = knob(8, "fine-grained attention heads")
    fine_grained_dropout: float = knob(0.2, "fine-grained attention: dropout on attention weights and outputs")
    # -- middle fusion (text injected into the atoms between graph layers) -----------------------------------
    use_middle_fusion: bool = knob(True, "inject text into the atom features after the layers in middle_fusion_layers")
    middle_fusion_layers: str = knob("2", '1-based graph layers after which text is injected: "2", "1,2", "2,3", '
                                          '"1,2,3"')
    middle_fusion_hidden_dim: int = knob(128, "middle-fusion attention width; must be divisible by middle_fusion_num_heads")
    middle_fusion_num_heads: int = knob(2, "middle-fusion attention heads")
    middle_fusion_dropout: float = knob(0.1, "middle-fusion attention: dropout on attention weights and outputs")
    # -- contrastive graph-text alignment (InfoNCE over the batch, train mode only) ---------------------------
    use_contrastive_loss: bool = knob(False, "add contrastive_weight * InfoNCE(graph, text) to the training loss")
    contrastive_weight: float = knob(0.1, "weight of the contrastive term")
    contrastive_temperature: float = knob(0.1, "softmax temperature of the InfoNCE logits")
    # -- loss and augmentation (train mode only) -------------------------------------------------------------
    loss: Loss = knob("mse", "regression loss on standardised targets (ALIGNN: mse)")
    text_deletion_prob: float = knob(0.0, "each description token is deleted with this probability")
    text_mask_prob: float = knob(0.0, "the whole description is deleted (masked) for a sample with this probability")
    lattice_perturbation_std: float = knob(0.0, "std of a random strain: bond vectors r -> r (I + E), E ~ N(0, std)")
    mixup_alpha: float = knob(0.0, "mixup of fused vectors and targets, lambda ~ Beta(alpha, alpha); 0 turns it off")

    def __post_init__(self) -> None:
        problems = []
        for name in ("hidden_features", "embedding_features", "edge_rbf_bins", "angle_rbf_bins",
                     "text_hidden_features", "text_num_heads", "cross_modal_hidden_dim", "cross_modal_num_heads",
                     "fine_grained_hidden_dim", "fine_grained_num_heads", "middle_fusion_hidden_dim",
                     "middle_fusion_num_heads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, but got {getattr(self, name)}")
        for name in ("alignn_layers", "gcn_layers", "text_layers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, but got {getattr(self, name)}")
        for name in ("graph_dropout", "text_dropout", "cross_modal_dropout", "fine_grained_dropout",
                     "middle_fusion_dropout", "text_deletion_prob", "text_mask_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), but got {getattr(self, name)}")
        for name in ("lattice_perturbation_std", "mixup_alpha", "contrastive_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, but got {getattr(self, name)}")
        if not self.contrastive_temperature > 0:
            problems.append(f"contrastive_temperature must be > 0, but got {self.contrastive_temperature}")
        if not self.edge_rbf_max > 0:
            problems.append(f"edge_rbf_max must be > 0, but got {self.edge_rbf_max}")
        divisible = [("text_hidden_features", "text_num_heads", True),
                     ("cross_modal_hidden_dim", "cross_modal_num_heads", self.use_cross_modal_attention),
                     ("fine_grained_hidden_dim", "fine_grained_num_heads", self.use_fine_grained_attention),
                     ("middle_fusion_hidden_dim", "middle_fusion_num_heads", self.use_middle_fusion)]
        for dim, heads, active in divisible:
            d, h = getattr(self, dim), getattr(self, heads)
            if active and h >= 1 and d % h:
                problems.append(f"{dim} must be divisible by {heads} ({h}), but got {d}")
        if self.use_middle_fusion:
            try:
                parse_fusion_layers(self.middle_fusion_layers, self.n_graph_layers)
            except ValueError as e:
                problems.append(str(e))
        choices = {"atom_features": AtomFeatures, "graph_norm": Norm, "text_pooling": Pooling, "loss": Loss}
        for name, lit in choices.items():
            allowed = get_args(lit)
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, but got {getattr(self, name)!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def n_graph_layers(self) -> int:
        return self.alignn_layers + self.gcn_layers

    @property
    def fusion_layers(self) -> tuple[int, ...]:
        """The parsed ``middle_fusion_layers`` (empty when middle fusion is off)."""
        if not self.use_middle_fusion:
            return ()
        return parse_fusion_layers(self.middle_fusion_layers, self.n_graph_layers)


DescriptionSource = Literal["auto", "data", "generated"]


@dataclass
class CrystalDataConfig:
    """Preprocessing: graphs, descriptions and tokens. Every field is part of the cache key."""

    cutoff: float = knob(8.0, "Å, neighbour search radius (ALIGNN: 8.0); grown for atoms with too few neighbours")
    max_neighbors: int = knob(12, "keep each atom's k nearest neighbours (ties at the k-th distance kept; ALIGNN: 12)")
    description_source: DescriptionSource = knob("auto", "auto: the data's description when present, else generated")
    symprec: float = knob(0.1, "Å, spglib tolerance for the space group in generated descriptions")
    coordination_tolerance: float = knob(0.2, "a neighbour is bonded if within (1 + tol) x the atom's nearest distance")
    max_text_tokens: int = knob(128, "description tokens kept per crystal (after the [CLS] token), the rest cut")
    min_token_freq: int = knob(1, "occurrences in the training descriptions a token needs to enter the vocabulary")
    max_vocab_size: int = knob(10000, "vocabulary size cap (most frequent training tokens), special tokens included")
    lowercase: bool = knob(True, "lowercase descriptions before tokenising")

    def __post_init__(self) -> None:
        problems = []
        if not self.cutoff > 0:
            problems.append(f"cutoff must be > 0, but got {self.cutoff}")
        for name in ("max_neighbors", "max_text_tokens", "min_token_freq"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, but got {getattr(self, name)}")
        if self.max_vocab_size < 5:
            problems.append(f"max_vocab_size must be >= 5 (4 special tokens + 1), but got {self.max_vocab_size}")
        if not self.symprec > 0:
            problems.append(f"symprec must be > 0, but got {self.symprec}")
        if self.coordination_tolerance < 0:
            problems.append(f"coordination_tolerance must be >= 0, but got {self.coordination_tolerance}")
        if self.description_source not in get_args(DescriptionSource):
            problems.append(f"description_source must be one of auto, data, generated, but got {self.description_source!r}")
        if problems:
            raise ValueError("; ".join(problems))
