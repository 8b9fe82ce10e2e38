"""The PyG ``Data`` of one crystal (atom graph, line graph, description tokens, target)."""

from __future__ import annotations

from torch_geometric.data import Data


class CrystalGraphData(Data):
    """One crystal. Attributes and shapes:

    - ``x`` (N,) long: atomic numbers
    - ``edge_index`` (2, E) long: bonds ``src -> dst`` (both directions present)
    - ``edge_vec`` (E, 3) float: bond vectors in Å (``pos[dst] - pos[src]``, periodic image included)
    - ``lg_edge_index`` (2, L) long: line-graph links between bonds (offset by the bond count in a batch)
    - ``lg_cos`` (L,) float: cosine of the bond angle of each link
    - ``token_ids`` (T,) long: description tokens, [CLS] first (batched with ``follow_batch``)
    - ``y`` (1, 1) float: target in its original units;  ``sample`` (1,) long: index in the dataset
    """

    def __inc__(self, key, value, *args, **kwargs):
        if key == "lg_edge_index":
            return self.edge_index.size(1)
        return super().__inc__(key, value, *args, **kwargs)
