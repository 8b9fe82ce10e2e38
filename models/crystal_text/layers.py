"""Layers of the crystal graph + text model.

Graph side after ALIGNN (Choudhary & DeCost, "Atomistic Line Graph Neural Network for improved
materials property predictions", npj Comput. Mater. 7, 185 (2021), https://arxiv.org/abs/2106.01829;
reference code ``alignn/models/alignn.py``): Gaussian RBF expansions of bond lengths and angle
cosines, edge-gated graph convolutions (Bresson & Laurent 2017, https://arxiv.org/abs/1711.07553)
and the ALIGNN layer that updates the line graph (bond angles) and then the atom graph.

Text side and fusion: a small transformer encoder over description tokens, and the three fusion
modules (middle fusion, fine-grained attention, global cross-modal attention) built from the shared
:class:`models.layers.CrossAttention` between atoms and tokens.

Shapes follow PyG: ``N`` atoms, ``E`` bonds (directed edges), ``L`` line-graph links (bond pairs),
``B`` crystals, ``T`` tokens per description (padded), ``Na`` atoms per crystal (padded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.utils import scatter

from models.layers import CrossAttention

#: added to the sum of gates before dividing, as ALIGNN does
GATE_EPS = 1e-6


def make_norm(kind: str, features: int) -> nn.Module:
    return nn.BatchNorm1d(features) if kind == "batch" else nn.LayerNorm(features)


class RBFExpansion(nn.Module):
    r"""Gaussian radial basis expansion :math:`\exp(-\gamma (d - \mu_k)^2)` with ``bins`` centres
    evenly spaced in ``[vmin, vmax]`` and :math:`\gamma` = 1 / centre spacing (ALIGNN's).

    Args:
        vmin (float): first centre.  vmax (float): last centre.  bins (int): number of centres.

    Shapes:
        input (*,) -> output (*, bins)
    """

    def __init__(self, vmin: float, vmax: float, bins: int) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(vmin, vmax, bins))
        spacing = (vmax - vmin) / (bins - 1) if bins > 1 else max(abs(vmax - vmin), 1.0)
        self.gamma = 1.0 / spacing

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (value.unsqueeze(-1) - self.centers) ** 2)


class MLPLayer(nn.Sequential):
    """Linear -> norm -> SiLU (ALIGNN's ``MLPLayer``). Shapes: (*, in_features) -> (*, out_features)."""

    def __init__(self, in_features: int, out_features: int, norm: str = "layer") -> None:
        super().__init__(nn.Linear(in_features, out_features), make_norm(norm, out_features), nn.SiLU())


class EdgeGatedGraphConv(nn.Module):
    r"""Edge-gated graph convolution with residual connections (ALIGNN's ``EdgeGatedGraphConv``).

    .. math::
        m_{ij} = W_s x_i + W_d x_j + W_e e_{ij}, \quad \sigma_{ij} = \mathrm{sigmoid}(m_{ij})

        x_j' = x_j + \mathrm{SiLU}(\mathrm{Norm}(U x_j + \textstyle\sum_i \sigma_{ij} \odot V x_i
               / (\sum_i \sigma_{ij} + \epsilon)))

        e_{ij}' = e_{ij} + \mathrm{SiLU}(\mathrm{Norm}(m_{ij}))

    for every edge ``i -> j`` (``edge_index[0] = i`` sends, ``edge_index[1] = j`` receives).

    Args:
        features (int): width of node and edge features (in = out, for the residuals).
        norm (str): "layer" or "batch" (ALIGNN's BatchNorm1d).
        update_edges (bool): compute ``e'``; off for a last layer whose edge output nobody reads
            (``edge_attr`` is then returned unchanged).

    Shapes:
        x (N, F), edge_index (2, E), edge_attr (E, F) -> x' (N, F), edge_attr' (E, F)
    """

    def __init__(self, features: int, norm: str = "layer", update_edges: bool = True) -> None:
        super().__init__()
        self.src_gate = nn.Linear(features, features)
        self.dst_gate = nn.Linear(features, features)
        self.edge_gate = nn.Linear(features, features)
        self.src_update = nn.Linear(features, features)  # message values V x_i
        self.dst_update = nn.Linear(features, features)  # self term U x_j
        self.norm_nodes = make_norm(norm, features)
        self.norm_edges = make_norm(norm, features) if update_edges else None

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        src, dst = edge_index[0], edge_index[1]
        m = self.src_gate(x)[src] + self.dst_gate(x)[dst] + self.edge_gate(edge_attr)  # (E, F)
        sigma = torch.sigmoid(m)
        num = scatter(self.src_update(x)[src] * sigma, dst, dim=0, dim_size=x.size(0), reduce="sum")  # (N, F)
        den = scatter(sigma, dst, dim=0, dim_size=x.size(0), reduce="sum")
        h = self.dst_update(x) + num / (den + GATE_EPS)
        x_out = x + F.silu(self.norm_nodes(h))
        e_out = edge_attr + F.silu(self.norm_edges(m)) if self.norm_edges is not None else edge_attr
        return x_out, e_out


class ALIGNNConv(nn.Module):
    """One ALIGNN layer: an edge-gated conv on the line graph (bond features as nodes, angle features
    as edges), then one on the atom graph with the updated bond features.

    Args:
        features (int), norm (str): as :class:`EdgeGatedGraphConv`.
        update_angles (bool), update_bonds (bool): whether the angle / bond outputs are computed (off
            where no later layer reads them).

    Shapes:
        x (N, F), edge_index (2, E), y (E, F), lg_index (2, L), z (L, F) -> x (N, F), y (E, F), z (L, F)
    """

    def __init__(self, features: int, norm: str = "layer", update_angles: bool = True, update_bonds: bool = True) -> None:
        super().__init__()
        self.edge_update = EdgeGatedGraphConv(features, norm, update_edges=update_angles)
        self.node_update = EdgeGatedGraphConv(features, norm, update_edges=update_bonds)

    def forward(self, x, edge_index, y, lg_index, z):
        y, z = self.edge_update(y, lg_index, z)
        x, y = self.node_update(x, edge_index, y)
        return x, y, z


class TextEncoder(nn.Module):
    """Token + learned position embeddings and a pre-norm transformer encoder, trained from scratch.

    Args:
        vocab_size (int), features (int), layers (int), heads (int), dropout (float),
        max_len (int): longest sequence ([CLS] included).

    Shapes:
        ids (B, T) long, mask (B, T) bool (True = real token) -> (B, T, features)
    """

    def __init__(self, vocab_size: int, features: int, layers: int, heads: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, features, padding_idx=0)
        self.position = nn.Embedding(max_len, features)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(features, heads, 2 * features, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False) if layers > 0 else None
        self.norm = nn.LayerNorm(features)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.size(1), device=ids.device)
        h = self.dropout(self.token(ids) + self.position(pos)[None])
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=~mask)
        return self.norm(h) * mask.unsqueeze(-1)


class MiddleFusion(nn.Module):
    """Text injected into the atoms between graph layers: every atom attends to its crystal's tokens
    and adds the gated result to its features.

    Shapes:
        atoms (B, Na, F), tokens (B, T, D), token_mask (B, T) -> atoms (B, Na, F)
    """

    def __init__(self, atom_features: int, text_features: int, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = CrossAttention(atom_features, text_features, hidden, heads, dropout, gated=True)

    def forward(self, atoms: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.attn(atoms, tokens, token_mask)


class FineGrainedAttention(nn.Module):
    """Atom <-> token attention: atoms attend to tokens and tokens attend to atoms (both from the
    features before this block).

    Shapes:
        atoms (B, Na, F), atom_mask (B, Na), tokens (B, T, D), token_mask (B, T)
        -> atoms (B, Na, F), tokens (B, T, D)
    """

    def __init__(self, atom_features: int, text_features: int, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.atoms_to_text = CrossAttention(atom_features, text_features, hidden, heads, dropout)
        self.text_to_atoms = CrossAttention(text_features, atom_features, hidden, heads, dropout)

    def forward(self, atoms, atom_mask, tokens, token_mask):
        return self.atoms_to_text(atoms, tokens, token_mask), self.text_to_atoms(tokens, atoms, atom_mask)


class CrossModalAttention(nn.Module):
    """Global cross-modal attention: the crystal's graph vector attends to its tokens, and its text
    vector attends to its atoms (plain or gated residual).

    Shapes:
        graph (B, F), text (B, D), atoms (B, Na, F), atom_mask (B, Na), tokens (B, T, D), token_mask (B, T)
        -> graph (B, F), text (B, D)
    """

    def __init__(self, atom_features: int, text_features: int, hidden: int, heads: int, dropout: float, gated: bool) -> None:
        super().__init__()
        self.graph_to_text = CrossAttention(atom_features, text_features, hidden, heads, dropout, gated=gated)
        self.text_to_graph = CrossAttention(text_features, atom_features, hidden, heads, dropout, gated=gated)

    def forward(self, graph, text, atoms, atom_mask, tokens, token_mask):
        g = self.graph_to_text(graph.unsqueeze(1), tokens, token_mask).squeeze(1)
        t = self.text_to_graph(text.unsqueeze(1), atoms, atom_mask).squeeze(1)
        return g, t


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of the rows where ``mask`` is True. Shapes: (B, S, F), (B, S) -> (B, F)."""
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) between paired rows of ``a`` and ``b``: row i of each is the positive
    of the other's row i, every other row of the batch a negative. Shapes: (B, P), (B, P) -> ()."""
    if a.size(0) < 2:
        return a.sum() * 0.0
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.size(0), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


__all__ = [
    "ALIGNNConv",
    "CrossModalAttention",
    "EdgeGatedGraphConv",
    "FineGrainedAttention",
    "MLPLayer",
    "MiddleFusion",
    "RBFExpansion",
    "TextEncoder",
    "info_nce",
    "masked_mean",
]
