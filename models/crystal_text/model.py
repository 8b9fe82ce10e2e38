"""The crystal graph + text fusion model.

::

    atoms, bonds (RBF of lengths), angles (RBF of cosines)        description tokens
        |  alignn_layers x ALIGNNConv, then gcn_layers x EdgeGatedGraphConv     |  TextEncoder
        |  <- middle fusion after the layers in middle_fusion_layers ---------- |
        v                                                                     v
    atoms (B, Na, F) --------- fine-grained attention (atoms <-> tokens) --- tokens (B, T, D)
        | mean                                                                | pool
    graph vector ----------- global cross-modal attention ----------------- text vector
        '----------------- concat -> MLP (fused) -> linear head -----------------'

Representations at the named stages (``return_stages=True``), each (B, width):

- ``graph``: the mean of the atom features after the graph encoder (middle fusion included);
- ``text``: the pooled output of the text encoder;
- ``text_fine``: the pooled tokens after fine-grained attention (= ``text`` when it is off);
- ``text_final``: the text vector after global cross-modal attention (= ``text_fine`` when it is off);
- ``fused``: the input of the linear head.

The model predicts *standardised* targets; :meth:`CrystalTextNet.destandardize` maps them back with
the training statistics stored as buffers (so a checkpoint carries its scaler).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch_geometric.utils import to_dense_batch

from models.crystal_text.config import CrystalTextConfig
from models.crystal_text.elements import MAX_Z, element_feature_table
from models.crystal_text.layers import (
    ALIGNNConv,
    CrossModalAttention,
    EdgeGatedGraphConv,
    FineGrainedAttention,
    MiddleFusion,
    MLPLayer,
    RBFExpansion,
    TextEncoder,
    info_nce,
    masked_mean,
)
from models.crystal_text.text import PAD_ID

STAGES = ("graph", "text", "text_fine", "text_final", "fused")


class CrystalTextNet(nn.Module):
    """ALIGNN graph encoder + transformer text encoder + attention fusion; see the module docstring.

    Args:
        cfg (CrystalTextConfig): the model config.
        vocab_size (int): size of the token vocabulary (special tokens included).
        max_text_len (int): longest token sequence, [CLS] included.
        target_mean, target_std (float): training statistics of the target.

    Shapes:
        a PyG batch of :class:`~models.crystal_text.task.CrystalGraphData` with ``B`` graphs
        -> (B, 1) standardised predictions (and a dict of (B, width) stages with ``return_stages``)

    Set :attr:`text_deleted` (or pass ``text_deleted=True``) to run every crystal with its
    description deleted: only the [CLS] token remains, as for the text-deleted robustness analysis.
    """

    def __init__(self, cfg: CrystalTextConfig, vocab_size: int, max_text_len: int, target_mean: float = 0.0, target_std: float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_deleted = False
        H, D, E, norm = cfg.hidden_features, cfg.text_hidden_features, cfg.embedding_features, cfg.graph_norm
        self.fusion_after = cfg.fusion_layers  # parses and validates middle_fusion_layers

        # -- graph encoder
        self.register_buffer("element_features", torch.from_numpy(element_feature_table()), persistent=False)
        self.element_embedding = nn.Embedding(MAX_Z + 1, E) if cfg.atom_features != "physical" else None
        atom_in = (self.element_features.size(1) if cfg.atom_features != "learned" else 0) + (E if self.element_embedding is not None else 0)
        self.atom_embedding = MLPLayer(atom_in, H, norm)
        self.edge_embedding = nn.Sequential(RBFExpansion(0.0, cfg.edge_rbf_max, cfg.edge_rbf_bins),
                                            MLPLayer(cfg.edge_rbf_bins, E, norm), MLPLayer(E, H, norm))
        self.angle_embedding = nn.Sequential(RBFExpansion(-1.0, 1.0, cfg.angle_rbf_bins),
                                             MLPLayer(cfg.angle_rbf_bins, E, norm), MLPLayer(E, H, norm))
        # the last layer of each kind computes no edge features that nobody reads (no unused parameters)
        n_a, n_g = cfg.alignn_layers, cfg.gcn_layers
        self.alignn = nn.ModuleList(ALIGNNConv(H, norm, update_angles=i < n_a - 1, update_bonds=i < n_a - 1 or n_g > 0)
                                    for i in range(n_a))
        self.gcn = nn.ModuleList(EdgeGatedGraphConv(H, norm, update_edges=i < n_g - 1) for i in range(n_g))
        self.graph_dropout = nn.Dropout(cfg.graph_dropout)

        # -- text encoder
        self.text_encoder = TextEncoder(vocab_size, D, cfg.text_layers, cfg.text_num_heads, cfg.text_dropout, max_text_len)

        # -- fusion
        self.middle_fusion = nn.ModuleDict({
            str(k): MiddleFusion(H, D, cfg.middle_fusion_hidden_dim, cfg.middle_fusion_num_heads, cfg.middle_fusion_dropout)
            for k in self.fusion_after
        })
        self.fine_grained = (FineGrainedAttention(H, D, cfg.fine_grained_hidden_dim, cfg.fine_grained_num_heads, cfg.fine_grained_dropout)
                             if cfg.use_fine_grained_attention else None)
        self.cross_modal = (CrossModalAttention(H, D, cfg.cross_modal_hidden_dim, cfg.cross_modal_num_heads, cfg.cross_modal_dropout,
                                                cfg.cross_modal_gated) if cfg.use_cross_modal_attention else None)
        self.fusion = nn.Sequential(nn.Linear(H + D, H), nn.SiLU())
        proj = min(H, D)
        self.graph_projection = nn.Linear(H, proj) if cfg.use_contrastive_loss else None
        self.text_projection = nn.Linear(D, proj) if cfg.use_contrastive_loss else None
        self.head = nn.Linear(H, 1)

        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    # ------------------------------------------------------------------------------------------------
    def forward(
        self,
        batch,
        *,
        text_deleted: Optional[bool] = None,
        augment: bool = False,
        mixup: Optional[tuple[torch.Tensor, float]] = None,
        return_stages: bool = False,
    ):
        """``augment`` (train mode) applies the config's lattice perturbation and text deletion;
        ``mixup = (perm, lam)`` mixes each fused vector with that of crystal ``perm[i]``."""
        cfg = self.cfg
        n_graphs = int(batch.num_graphs)
        node_batch = batch.batch
        edge_index, edge_vec = batch.edge_index, batch.edge_vec
        lg_index, lg_cos = batch.lg_edge_index, batch.lg_cos
        if augment and cfg.lattice_perturbation_std > 0:
            edge_vec, lg_cos = self._strain(edge_vec, edge_index, lg_index, node_batch, n_graphs)

        # -- text
        ids, token_mask = to_dense_batch(batch.token_ids, batch.token_ids_batch, fill_value=PAD_ID, batch_size=n_graphs)  # (B, T)
        token_mask = self._text_mask(token_mask, augment, self.text_deleted if text_deleted is None else text_deleted)
        tokens = self.text_encoder(ids, token_mask)  # (B, T, D)

        # -- graph
        x = self._atom_inputs(batch.x)  # (N, H)
        y = self.edge_embedding(edge_vec.norm(dim=-1))  # (E, H)
        z = self.angle_embedding(lg_cos)  # (L, H)
        layer = 0
        for conv in self.alignn:
            x, y, z = conv(x, edge_index, y, lg_index, z)
            x, y = self.graph_dropout(x), self.graph_dropout(y)
            layer += 1
            x = self._middle_fusion(layer, x, node_batch, n_graphs, tokens, token_mask)
        for conv in self.gcn:
            x, y = conv(x, edge_index, y)
            x, y = self.graph_dropout(x), self.graph_dropout(y)
            layer += 1
            x = self._middle_fusion(layer, x, node_batch, n_graphs, tokens, token_mask)
        atoms, atom_mask = to_dense_batch(x, node_batch, batch_size=n_graphs)  # (B, Na, H)

        # -- fusion
        stages = {"graph": masked_mean(atoms, atom_mask), "text": self._pool(tokens, token_mask)}
        graph = stages["graph"]
        if self.fine_grained is not None:
            atoms, tokens = self.fine_grained(atoms, atom_mask, tokens, token_mask)
            graph = masked_mean(atoms, atom_mask)
            stages["text_fine"] = self._pool(tokens, token_mask)
        else:
            stages["text_fine"] = stages["text"]
        if self.cross_modal is not None:
            graph, stages["text_final"] = self.cross_modal(graph, stages["text_fine"], atoms, atom_mask, tokens, token_mask)
        else:
            stages["text_final"] = stages["text_fine"]
        fused = self.fusion(torch.cat([graph, stages["text_final"]], dim=-1))  # (B, H)
        if mixup is not None:
            perm, lam = mixup
            fused = lam * fused + (1.0 - lam) * fused[perm]
        stages["fused"] = fused
        out = self.head(fused)  # (B, 1)
        return (out, stages) if return_stages else out

    def destandardize(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.target_std + self.target_mean

    def standardize(self, target: torch.Tensor) -> torch.Tensor:
        return (target - self.target_mean) / self.target_std

    def contrastive_loss(self, stages: dict) -> torch.Tensor:
        """InfoNCE between the projected ``graph`` and ``text`` stages of a batch."""
        if self.graph_projection is None:
            raise RuntimeError("the model was built with use_contrastive_loss: false")
        return info_nce(self.graph_projection(stages["graph"]), self.text_projection(stages["text"]), self.cfg.contrastive_temperature)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group for layer-wise learning rates: graph, text, fusion, head."""
        groups = {
            "graph": [self.element_embedding, self.atom_embedding, self.edge_embedding, self.angle_embedding, self.alignn, self.gcn],
            "text": [self.text_encoder],
            "fusion": [self.middle_fusion, self.fine_grained, self.cross_modal, self.fusion, self.graph_projection, self.text_projection],
            "head": [self.head],
        }
        return {name: [p for m in mods if m is not None for p in m.parameters()] for name, mods in groups.items()}

    # ------------------------------------------------------------------------------------------------
    def _atom_inputs(self, numbers: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.cfg.atom_features != "learned":
            parts.append(self.element_features[numbers])
        if self.element_embedding is not None:
            parts.append(self.element_embedding(numbers))
        return self.atom_embedding(torch.cat(parts, dim=-1))

    def _middle_fusion(self, layer, x, node_batch, n_graphs, tokens, token_mask):
        block = self.middle_fusion[str(layer)] if str(layer) in self.middle_fusion else None
        if block is None:
            return x
        atoms, atom_mask = to_dense_batch(x, node_batch, batch_size=n_graphs)
        return block(atoms, tokens, token_mask)[atom_mask]

    def _pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.cfg.text_pooling == "cls" else masked_mean(tokens, mask)

    def _text_mask(self, mask: torch.Tensor, augment: bool, deleted: bool) -> torch.Tensor:
        """Which tokens take part; position 0 ([CLS]) always does, so no sequence is empty."""
        keep = mask.clone()
        if deleted:
            keep[:, 1:] = False
            return keep
        if augment and self.cfg.text_deletion_prob > 0:
            keep[:, 1:] &= torch.rand(keep[:, 1:].shape, device=mask.device) >= self.cfg.text_deletion_prob
        if augment and self.cfg.text_mask_prob > 0:
            whole = torch.rand(keep.size(0), device=mask.device) < self.cfg.text_mask_prob
            keep[whole, 1:] = False
        return keep

    def _strain(self, edge_vec, edge_index, lg_index, node_batch, n_graphs):
        """Bond vectors under a random homogeneous strain per crystal, r -> r (I + E), E ~ N(0, std);
        angle cosines recomputed (the neighbour lists are kept)."""
        eye = torch.eye(3, device=edge_vec.device, dtype=edge_vec.dtype)
        strain = eye + self.cfg.lattice_perturbation_std * torch.randn(n_graphs, 3, 3, device=edge_vec.device, dtype=edge_vec.dtype)
        vec = torch.einsum("ei,eij->ej", edge_vec, strain[node_batch[edge_index[0]]])
        r1, r2 = -vec[lg_index[0]], vec[lg_index[1]]
        cos = (r1 * r2).sum(-1) / (r1.norm(dim=-1) * r2.norm(dim=-1)).clamp_min(1e-12)
        return vec, cos.clamp(-1.0, 1.0)
