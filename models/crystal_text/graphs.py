"""Periodic crystal graphs and their line graphs, in vectorised numpy (the preprocessing hot path).

Atom graph (after ALIGNN, Choudhary & DeCost, npj Comput. Mater. 7, 185 (2021)): every atom is linked
to its ``max_neighbors`` nearest neighbours, periodic images included, found within ``cutoff``
(neighbours tied with the k-th distance are kept). An atom with fewer than ``max_neighbors``
neighbours within the cutoff makes the search radius grow until every atom has them, so no atom is
isolated however sparse the structure. The neighbour relation is then made symmetric: each edge
has its reverse, so messages flow both ways.

An edge ``e = (src, dst, s)`` joins atom ``src`` to the periodic image of atom ``dst`` shifted by
the integer cell vector ``s``; its bond vector is ``r_e = pos[dst] - pos[src] + s @ cell``.

Line graph: its nodes are the atom graph's edges; edge ``e1 = (a -> b)`` is linked to every edge
``e2 = (b -> c)`` leaving the atom it enters, except its own reverse (c = a, same image). The
feature of that link is the cosine of the bond angle at ``b``, between ``b -> a`` (``-r_e1``) and
``b -> c`` (``r_e2``), as in ALIGNN's ``compute_bond_cosines``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Å; neighbours within this distance of the k-th nearest one count as tied with it and are kept
TIE_TOLERANCE = 1e-4
#: largest (atoms^2 x cell shifts) handled by the dense pair search; beyond it ASE's binned search is used
DENSE_PAIR_LIMIT = 2_000_000
#: factor by which the search radius grows while some atom has too few neighbours
CUTOFF_GROWTH = 1.5


@dataclass
class CrystalGraph:
    numbers: np.ndarray  # (N,) int   atomic numbers
    edge_index: np.ndarray  # (2, E) int32   rows: src, dst
    edge_shift: np.ndarray  # (E, 3) int32   cell shift s of the dst image
    edge_vec: np.ndarray  # (E, 3) float32   bond vectors r_e (Å)
    lg_index: np.ndarray  # (2, L) int32   line-graph links e1 -> e2 (edge ids)
    lg_cos: np.ndarray  # (L,) float32   bond-angle cosines at the shared atom
    cutoff: float  # the search radius finally used (Å)

    @property
    def distances(self) -> np.ndarray:
        return np.linalg.norm(self.edge_vec, axis=1)


def neighbor_edges(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc,
    *,
    cutoff: float = 8.0,
    max_neighbors: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Symmetric k-nearest-neighbour edges with periodic images.

    Returns ``(edge_index (2, E) int32, edge_shift (E, 3) int32, edge_vec (E, 3) float64, cutoff_used)``,
    edges sorted by (src, dst, shift).
    """
    from ase import Atoms

    numbers = np.asarray(numbers)
    n = len(numbers)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
    if pbc.all() and abs(np.linalg.det(np.asarray(cell, dtype=float))) < 1e-8:
        raise ValueError("a periodic structure needs a cell of non-zero volume")
    # atoms of a finite (non-periodic) structure can have at most n - 1 neighbours
    need = max_neighbors if pbc.any() else min(max_neighbors, n - 1)
    empty = (np.zeros((2, 0), np.int32), np.zeros((0, 3), np.int32), np.zeros((0, 3)), float(cutoff))
    if need <= 0:
        logger.warning("a non-periodic structure with %d atom(s) has no neighbours; it gets no edges", n)
        return empty
    r = float(cutoff)
    while True:
        i, j, d, D, S = periodic_pairs(atoms.positions, np.asarray(atoms.cell), pbc, r)
        counts = np.bincount(i, minlength=n)
        if counts.min() >= need:
            break
        r *= CUTOFF_GROWTH
    if r != cutoff:
        logger.debug("cutoff grown from %.2f to %.2f Å so that every atom has %d neighbours", cutoff, r, need)

    # k nearest per centre atom i (ties with the k-th distance kept), vectorised over all atoms
    order = np.lexsort((d, i))
    i, j, d, D, S = i[order], j[order], d[order], D[order], S[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    kth = d[starts + need - 1]
    keep = d <= kth[i] + TIE_TOLERANCE
    i, j, D, S = i[keep], j[keep], D[keep], S[keep]

    # symmetrise: (centre i -> neighbour j at image S) and its reverse (j -> i at image -S)
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    shift = np.concatenate([S, -S]).astype(np.int64)
    vec = np.concatenate([D, -D])
    key = np.column_stack([src, dst, shift])
    _, first = np.unique(key, axis=0, return_index=True)  # sorted by (src, dst, shift), duplicates dropped
    edge_index = np.stack([src[first], dst[first]]).astype(np.int32)
    return edge_index, shift[first].astype(np.int32), vec[first], r


def periodic_pairs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Every pair within ``cutoff`` (Å), periodic images included: ``(i, j, d, D, S)`` as
    ``ase.neighborlist.neighbor_list("ijdDS", ...)`` returns them (``D = pos[j] - pos[i] + S @ cell``).

    Small structures (the common case) use one dense numpy pass over the atom pairs and the cell
    shifts that can reach ``cutoff``; large ones use ASE's binned ``neighbor_list``.
    """
    n = len(positions)
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.any():
        inv = np.linalg.inv(cell)  # columns: reciprocal vectors b_k (a_i . b_k = delta_ik)
        reach = np.where(pbc, np.ceil(cutoff * np.linalg.norm(inv, axis=0)), 0).astype(np.int64)
    else:
        inv, reach = None, np.zeros(3, np.int64)
    n_shifts = int(np.prod(2 * reach + 1))
    if n * n * n_shifts > DENSE_PAIR_LIMIT:
        from ase import Atoms
        from ase.neighborlist import neighbor_list

        atoms = Atoms(positions=positions, cell=cell, pbc=pbc)
        return neighbor_list("ijdDS", atoms, cutoff, self_interaction=False)
    wrap = np.zeros((n, 3), np.int64)
    pos = np.asarray(positions, dtype=float)
    if pbc.any():  # wrap atoms into the cell so that shifts up to `reach` cover the cutoff sphere
        frac = pos @ inv
        wrap = np.where(pbc, np.floor(frac), 0).astype(np.int64)
        pos = pos - wrap @ cell
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1).reshape(-1, 3)
    vec = pos[None, :, None, :] - pos[:, None, None, :] + (grid @ cell if pbc.any() else np.zeros((1, 3)))[None, None]
    dist = np.linalg.norm(vec, axis=-1)  # (N, N, M)
    zero = int(np.flatnonzero((grid == 0).all(axis=1))[0])
    mask = dist < cutoff
    mask[np.arange(n), np.arange(n), zero] = False  # no self-interaction
    i, j, m = np.nonzero(mask)
    S = grid[m] - wrap[j] + wrap[i]  # shifts relative to the unwrapped input positions
    return i, j, dist[i, j, m], vec[i, j, m], S


def line_graph(edge_index: np.ndarray, edge_shift: np.ndarray, edge_vec: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Links ``e1 -> e2`` between edges that meet at an atom (``dst[e1] == src[e2]``), backtracking
    excluded, and the bond-angle cosines. Returns ``(lg_index (2, L) int32, cos (L,) float32)``."""
    src, dst = edge_index[0].astype(np.int64), edge_index[1].astype(np.int64)
    n_edges = len(src)
    if n_edges == 0:
        return np.zeros((2, 0), np.int32), np.zeros(0, np.float32)
    out_order = np.argsort(src, kind="stable")  # edges grouped by the atom they leave
    out_count = np.bincount(src, minlength=n_atoms)
    out_start = np.concatenate(([0], np.cumsum(out_count)[:-1]))
    # every edge e1 = (a -> b) pairs with each of the out_count[b] edges leaving b
    reps = out_count[dst]
    e1 = np.repeat(np.arange(n_edges), reps)
    group_start = np.repeat(np.cumsum(reps) - reps, reps)
    offset = np.arange(len(e1)) - group_start
    e2 = out_order[out_start[dst[e1]] + offset]
    backtrack = (dst[e2] == src[e1]) & np.all(edge_shift[e2] == -edge_shift[e1], axis=1)
    e1, e2 = e1[~backtrack], e2[~backtrack]
    r1, r2 = -edge_vec[e1], edge_vec[e2]
    cos = np.einsum("ij,ij->i", r1, r2) / (np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1))
    return np.stack([e1, e2]).astype(np.int32), np.clip(cos, -1.0, 1.0).astype(np.float32)


def build_crystal_graph(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc=True,
    *,
    cutoff: float = 8.0,
    max_neighbors: int = 12,
) -> CrystalGraph:
    """The atom graph and line graph of one structure (positions in Å, cell rows = lattice vectors)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    edge_index, edge_shift, edge_vec, used = neighbor_edges(
        numbers, np.asarray(positions, float), np.asarray(cell, float), pbc, cutoff=cutoff, max_neighbors=max_neighbors
    )
    lg_index, lg_cos = line_graph(edge_index, edge_shift, edge_vec, len(numbers))
    return CrystalGraph(
        numbers=numbers.astype(np.int16),
        edge_index=edge_index,
        edge_shift=edge_shift,
        edge_vec=edge_vec.astype(np.float32),
        lg_index=lg_index,
        lg_cos=lg_cos,
        cutoff=used,
    )


def coordination(edge_index: np.ndarray, distances: np.ndarray, n_atoms: int, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Bonded neighbours: an edge ``src -> dst`` is a bond of ``src`` when its length is within
    ``(1 + tolerance)`` times ``src``'s shortest edge. Returns ``(is_bond (E,) bool, cn (N,) int)``."""
    src = edge_index[0].astype(np.int64)
    nearest = np.full(n_atoms, np.inf)
    np.minimum.at(nearest, src, distances)
    is_bond = distances <= nearest[src] * (1.0 + tolerance) + TIE_TOLERANCE
    return is_bond, np.bincount(src[is_bond], minlength=n_atoms)
