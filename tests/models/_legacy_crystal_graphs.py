# Frozen copy of models/crystal_text/graphs.py as of commit c5275de, before the issue #17 speed-up: the reference
# that tests/models/test_crystal_graph_speed.py and bench/crystal_graphs.py compare the builder against. Do not edit.
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

Every feature must be finite: the builder refuses (``ValueError``, worded ``what must hold, but got
X``) a structure that would give NaN or inf ones or never terminate — non-finite coordinates or cell,
a periodic cell of zero volume, atomic numbers outside 1..118, two atoms on one site (a zero-length
bond, whose direction and bond angles are undefined), or atoms with no neighbours even far beyond
the cutoff. The data loader names the record.
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
#: the search radius grows at most to this many times the cutoff (a sparser structure is refused)
MAX_CUTOFF_FACTOR = 100.0
#: Å; two atoms closer than this sit on one site (the shortest real bond, H2, is 0.74 Å)
MIN_BOND_LENGTH = 0.1
#: a periodic cell is degenerate when volume / (product of its periodic lattice vector lengths) is below this
MIN_CELL_SINE = 1e-6
#: Å; lattice planes of a periodic cell closer than this make it degenerate (and the pair search explode)
MIN_PLANE_SPACING = 0.5
#: Å; coordinates and lattice vectors larger than this are not a crystal (and overflow the integer cell shifts)
MAX_COORDINATE = 1e6
#: the largest atomic number with element descriptors (Og)
MAX_Z = 118


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
    check_structure(numbers, positions, cell, pbc)
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
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
        if r * CUTOFF_GROWTH > MAX_CUTOFF_FACTOR * cutoff:
            lonely = int(np.argmin(counts))
            raise ValueError(f"every atom must have {need} neighbours within {MAX_CUTOFF_FACTOR:g} x the cutoff "
                             f"({MAX_CUTOFF_FACTOR * cutoff:g} Å), but got atom {lonely} with {int(counts[lonely])}")
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


def check_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise ``ValueError`` (``what must hold, but got X``) for a structure whose graph cannot be built
    with finite features: no atoms, atomic numbers outside 1..118, non-finite positions or cell, a
    periodic cell of (near) zero volume, or two atoms (or an atom and its own image) on one site."""
    numbers = np.asarray(numbers)
    n = len(numbers)
    if n == 0:
        raise ValueError("a structure must hold at least one atom, but got none")
    bad = np.flatnonzero((numbers < 1) | (numbers > MAX_Z))
    if bad.size:
        raise ValueError(f"atomic numbers must be 1..{MAX_Z} (H .. Og), but got {_items(bad, numbers)}")
    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    if positions.shape != (n, 3):
        raise ValueError(f"positions must be one [x, y, z] per atom ({n}), but got shape {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"the cell must be 3 lattice vectors [x, y, z], but got shape {cell.shape}")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(f"atom positions must be finite numbers, but got {_items(bad, positions)}")
    if not np.isfinite(cell).all():
        raise ValueError(f"the cell must be finite numbers, but got {cell.tolist()}")
    if (np.abs(cell) > MAX_COORDINATE).any():
        raise ValueError(f"lattice vectors must be shorter than {MAX_COORDINATE:g} Å, but got {cell.tolist()}")
    bad = np.flatnonzero((np.abs(positions) > MAX_COORDINATE).any(axis=1))
    if bad.size:
        raise ValueError(f"atom positions must be within {MAX_COORDINATE:g} Å of the origin, but got {_items(bad, positions)}")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if pbc.any():
        volume = abs(float(np.linalg.det(cell)))
        lengths = np.linalg.norm(cell, axis=1)
        # spacing of the lattice planes spanned by the two other vectors: the cell's height along each vector
        areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        spacing = np.divide(volume, areas, out=np.zeros(3), where=areas > 0)
        flat = not (float(np.prod(lengths)) > 0 and volume > MIN_CELL_SINE * float(np.prod(lengths)))
        if flat or (spacing[pbc] < MIN_PLANE_SPACING).any():
            raise ValueError(f"a periodic cell must span a volume (lattice planes at least {MIN_PLANE_SPACING:g} Å apart), but got "
                             f"a volume of {volume:.3g} Å^3, plane spacings {', '.join(f'{x:.3g}' for x in spacing)} Å "
                             f"(lattice vector lengths {', '.join(f'{x:.3g}' for x in lengths)} Å)")
    i, j, d, _, S = periodic_pairs(positions, cell, pbc, MIN_BOND_LENGTH)
    if len(i):
        k = int(np.argmin(d))
        if i[k] == j[k]:
            raise ValueError(f"atoms must sit at distinct sites (at least {MIN_BOND_LENGTH:g} Å apart), but got atom {i[k]} "
                             f"{d[k]:.3g} Å from its own periodic image (shift {S[k].tolist()})")
        raise ValueError(f"atoms must sit at distinct sites (at least {MIN_BOND_LENGTH:g} Å apart), but got atoms "
                         f"{min(i[k], j[k])} and {max(i[k], j[k])} {d[k]:.3g} Å apart" + (f" ({len(i) // 2} such pairs)" if len(i) > 2 else ""))


def _items(index: np.ndarray, values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"atom {int(a)} = {np.asarray(values[a]).tolist()}" for a in index[:limit])
    return shown + (f" (and {len(index) - limit} more)" if len(index) > limit else "")


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
    length = np.linalg.norm(edge_vec, axis=1)
    bad = np.flatnonzero(~np.isfinite(length) | (length < MIN_BOND_LENGTH))
    if bad.size:  # check_structure refuses what leads here; a second guard, never a NaN feature
        e = int(bad[0])
        raise ValueError(f"every bond must be a finite length of at least {MIN_BOND_LENGTH:g} Å, but got bond {e} "
                         f"(atoms {edge_index[0, e]} -> {edge_index[1, e]}) of {length[e]:.3g} Å")
    if not np.isfinite(lg_cos).all():
        e = int(np.flatnonzero(~np.isfinite(lg_cos))[0])
        raise ValueError(f"every bond angle must be finite, but got {lg_cos[e]} between bonds {lg_index[0, e]} and {lg_index[1, e]}")
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
