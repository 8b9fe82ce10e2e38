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

Cost (issue #17 item 4): about 4x less than the builder before, on the 50 JARVIS sample crystals
(``bench/crystal_graphs.py``), with exactly its graphs (tests/models/test_crystal_graph_speed.py
compares them with a frozen copy of it). The pair search is dense numpy over (atom, atom, cell
shift) for the small cells of crystals — squared distances one component at a time, cell shifts that
reach no pair skipped, one search serving both the coincident-site check and the neighbours, nothing
recomputed when the radius grows — and ASE's binned neighbour list for large ones. The k nearest
come from one partition per atom, the symmetric edges from one sort of integer keys (src, dst,
shift), and the line graph reuses the bond lengths and each edge's reverse instead of comparing
shifts per link.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

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
    edges = _neighbor_edges(numbers, positions, cell, pbc, cutoff=cutoff, max_neighbors=max_neighbors)
    return edges.edge_index, edges.edge_shift, edges.edge_vec, edges.cutoff


@dataclass
class _Edges:
    """What :func:`neighbor_edges` returns, plus what the line graph reuses (one pass, no repeated work)."""

    edge_index: np.ndarray  # (2, E) int32, sorted by (src, dst, shift)
    edge_shift: np.ndarray  # (E, 3) int32
    edge_vec: np.ndarray  # (E, 3) float64
    cutoff: float
    reverse: Optional[np.ndarray] = None  # (E,) int64: the id of each edge's reverse (dst -> src, -shift)


def _neighbor_edges(numbers, positions, cell, pbc, *, cutoff: float, max_neighbors: int) -> _Edges:
    numbers = np.asarray(numbers)
    n = len(numbers)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    _check_values(numbers, positions, cell, pbc)
    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    # atoms of a finite (non-periodic) structure can have at most n - 1 neighbours
    need = max_neighbors if pbc.any() else min(max_neighbors, n - 1)
    frame = _PairFrame(positions, cell, pbc)
    r = float(cutoff)
    if need <= 0 or r < MIN_BOND_LENGTH:  # the main search does not cover the coincident-site check
        _refuse_coincident(*frame.search(MIN_BOND_LENGTH).arrays())
    if need <= 0:
        logger.warning("a non-periodic structure with %d atom(s) has no neighbours; it gets no edges", n)
        return _Edges(np.zeros((2, 0), np.int32), np.zeros((0, 3), np.int32), np.zeros((0, 3)), float(cutoff),
                      np.zeros(0, np.int64))
    checked = r < MIN_BOND_LENGTH
    while True:
        pairs = frame.search(r)
        i, d = pairs.i, pairs.d
        if not checked:  # every pair closer than MIN_BOND_LENGTH is among those within r
            close = np.flatnonzero(d < MIN_BOND_LENGTH)
            if len(close):
                _refuse_coincident(i[close], pairs.j[close], d[close], *pairs.vectors(close))
            checked = True
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

    # k nearest per centre atom i (ties with the k-th distance kept): the k-th smallest distance of each
    # atom by one partition of a padded (atoms x neighbours) table, no sort of all pairs
    order = None if pairs.grouped else np.argsort(i, kind="stable")  # ASE's search need not group pairs by atom
    if order is not None:
        i, d = i[order], d[order]
    starts = np.cumsum(counts) - counts
    table = np.full((n, int(counts.max())), np.inf)
    table[i, np.arange(len(i)) - starts[i]] = d
    kth = np.partition(table, need - 1, axis=1)[:, need - 1]
    keep = np.flatnonzero(d <= kth[i] + TIE_TOLERANCE)
    if order is not None:
        keep = order[keep]
    i, j = pairs.i[keep], pairs.j[keep]
    D, S = pairs.vectors(keep)  # bond vectors and images of the kept pairs only

    # symmetrise: (centre i -> neighbour j at image S) and its reverse (j -> i at image -S); one integer
    # key per (src, dst, shift), in that lexicographic order; a stable sort keeps the first of duplicates
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    shift = np.concatenate([S, -S]).astype(np.int64)
    vec = np.concatenate([D, -D])
    codec = _ShiftCodec.fit(shift, n)
    if codec is None:  # shifts or atoms too many for one int64 key (not a crystal): the generic path
        key = np.column_stack([src, dst, shift])
        _, first = np.unique(key, axis=0, return_index=True)
        reverse = None
    else:
        key = codec.key(src, dst, shift)
        perm = np.argsort(key, kind="stable")
        sorted_key = key[perm]
        unique = np.empty(len(key), bool)
        unique[:1] = True
        np.not_equal(sorted_key[1:], sorted_key[:-1], out=unique[1:])
        first = perm[unique]
        ukey = sorted_key[unique]
        # every edge's reverse is an edge too (symmetrised): its id by binary search of the sorted keys
        reverse = np.searchsorted(ukey, codec.key(dst[first], src[first], -shift[first]))
    edge_index = np.stack([src[first], dst[first]]).astype(np.int32)
    return _Edges(edge_index, shift[first].astype(np.int32), vec[first], r, reverse)


class _ShiftCodec:
    """One int64 per edge ``(src, dst, shift)``, ordered like the tuples (lexicographically)."""

    def __init__(self, n_atoms: int, bound: int):
        self.n, self.bound, self.width = n_atoms, bound, 2 * bound + 1

    @classmethod
    def fit(cls, shift: np.ndarray, n_atoms: int) -> Optional["_ShiftCodec"]:
        bound = int(np.abs(shift).max()) if len(shift) else 0
        width = 2 * bound + 1
        if n_atoms * n_atoms * width ** 3 >= 2 ** 62:
            return None
        return cls(n_atoms, bound)

    def shift_key(self, shift: np.ndarray) -> np.ndarray:
        s = shift + self.bound
        return (s[:, 0] * self.width + s[:, 1]) * self.width + s[:, 2]

    def key(self, src: np.ndarray, dst: np.ndarray, shift: np.ndarray) -> np.ndarray:
        pair = src.astype(np.int64) * self.n + dst
        return pair * self.width ** 3 + self.shift_key(shift)


def check_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise ``ValueError`` (``what must hold, but got X``) for a structure whose graph cannot be built
    with finite features: no atoms, atomic numbers outside 1..118, non-finite positions or cell, a
    periodic cell of (near) zero volume, or two atoms (or an atom and its own image) on one site."""
    _check_values(numbers, positions, cell, pbc)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    _refuse_coincident(*periodic_pairs(np.asarray(positions, dtype=float), np.asarray(cell, dtype=float), pbc, MIN_BOND_LENGTH))


def _check_values(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """The checks of :func:`check_structure` that need no pair search (all but the coincident sites)."""
    numbers = np.asarray(numbers)
    n = len(numbers)
    if n == 0:
        raise ValueError("a structure must hold at least one atom, but got none")
    if not (numbers.min() >= 1 and numbers.max() <= MAX_Z):
        bad = np.flatnonzero((numbers < 1) | (numbers > MAX_Z))
        raise ValueError(f"atomic numbers must be 1..{MAX_Z} (H .. Og), but got {_items(bad, numbers)}")
    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    if positions.shape != (n, 3):
        raise ValueError(f"positions must be one [x, y, z] per atom ({n}), but got shape {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"the cell must be 3 lattice vectors [x, y, z], but got shape {cell.shape}")
    if not np.isfinite(positions).all():
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        raise ValueError(f"atom positions must be finite numbers, but got {_items(bad, positions)}")
    if not np.isfinite(cell).all():
        raise ValueError(f"the cell must be finite numbers, but got {cell.tolist()}")
    if (np.abs(cell) > MAX_COORDINATE).any():
        raise ValueError(f"lattice vectors must be shorter than {MAX_COORDINATE:g} Å, but got {cell.tolist()}")
    if (np.abs(positions) > MAX_COORDINATE).any():
        bad = np.flatnonzero((np.abs(positions) > MAX_COORDINATE).any(axis=1))
        raise ValueError(f"atom positions must be within {MAX_COORDINATE:g} Å of the origin, but got {_items(bad, positions)}")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if pbc.any():
        volume = abs(float(np.linalg.det(cell)))
        lengths = np.linalg.norm(cell, axis=1)
        # spacing of the lattice planes spanned by the two other vectors: the cell's height along each vector
        u, v = cell[[1, 2, 0]], cell[[2, 0, 1]]  # np.cross(u, v), written out (np.cross's overhead is most of this check)
        normal = np.stack([u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1], u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
                           u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], axis=1)
        areas = _norm(normal)
        spacing = np.divide(volume, areas, out=np.zeros(3), where=areas > 0)
        flat = not (float(np.prod(lengths)) > 0 and volume > MIN_CELL_SINE * float(np.prod(lengths)))
        if flat or (spacing[pbc] < MIN_PLANE_SPACING).any():
            raise ValueError(f"a periodic cell must span a volume (lattice planes at least {MIN_PLANE_SPACING:g} Å apart), but got "
                             f"a volume of {volume:.3g} Å^3, plane spacings {', '.join(f'{x:.3g}' for x in spacing)} Å "
                             f"(lattice vector lengths {', '.join(f'{x:.3g}' for x in lengths)} Å)")


def _refuse_coincident(i: np.ndarray, j: np.ndarray, d: np.ndarray, D: np.ndarray, S: np.ndarray) -> None:
    """Raise for pairs closer than ``MIN_BOND_LENGTH`` (any given pairs beyond it are ignored); the
    closest one is named, the first in (i, j, shift) order among equally close ones."""
    close = d < MIN_BOND_LENGTH
    if not close.any():
        return
    i, j, d, S = i[close], j[close], d[close], S[close]
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))  # the dense search's order, whichever search found them
    i, j, d, S = i[order], j[order], d[order], S[order]
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
    shifts that can reach ``cutoff`` (pairs in (i, j, shift) order); large ones use ASE's binned
    ``neighbor_list``.
    """
    return _PairFrame(np.asarray(positions, dtype=float), np.asarray(cell, dtype=float), np.asarray(pbc, dtype=bool)).search(cutoff).arrays()


class _PairFrame:
    """The cutoff-independent part of the pair search of one structure (atoms wrapped into the cell,
    their difference vectors), so that a search whose radius grows repeats none of it.

    The dense search computes exactly what one numpy pass over every (atom, atom, cell shift) would
    (``D = (pos[j] - pos[i]) + shift @ cell``, ``d = sqrt((Dx^2 + Dy^2) + Dz^2)``, pairs ordered by
    (i, j, shift)), with less work: squared distances component by component (contiguous loops), the
    cell shifts that cannot reach the cutoff from any atom pair skipped, square roots and bond vectors
    only for the pairs kept."""

    def __init__(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
        self.positions, self.cell, self.pbc = positions, cell, pbc
        self.periodic = bool(pbc.any())
        n = len(positions)
        self.wrap = np.zeros((n, 3), np.int64)
        pos = positions
        self.inv_norm = None
        if self.periodic:  # wrap atoms into the cell so that shifts up to `reach` cover the cutoff sphere
            inv = np.linalg.inv(cell)  # columns: reciprocal vectors b_k (a_i . b_k = delta_ik)
            self.inv_norm = np.linalg.norm(inv, axis=0)
            frac = pos @ inv
            self.wrap = np.where(pbc, np.floor(frac), 0).astype(np.int64)
            pos = pos - self.wrap @ cell
        self._wrapped = pos
        self._delta = None  # (N, N, 3): pos[j] - pos[i] of the wrapped atoms, made on first use

    def search(self, cutoff: float) -> "_Pairs":
        """Every pair within ``cutoff``."""
        n = len(self.positions)
        if self.periodic:
            reach = np.where(self.pbc, np.ceil(cutoff * self.inv_norm), 0).astype(np.int64)
        else:
            reach = np.zeros(3, np.int64)
        n_shifts = int(np.prod(2 * reach + 1))
        if n * n * n_shifts > DENSE_PAIR_LIMIT:
            from ase import Atoms
            from ase.neighborlist import neighbor_list

            atoms = Atoms(positions=self.positions, cell=self.cell, pbc=self.pbc)
            i, j, d, D, S = neighbor_list("ijdDS", atoms, cutoff, self_interaction=False)
            return _Pairs(i, j, d, grouped=len(i) < 2 or not (np.diff(i) < 0).any(), vec=D, shift=S)
        if self._delta is None:
            pos = self._wrapped
            self._delta = pos[None, :, :] - pos[:, None, :]
            self._components = self._delta.transpose(2, 0, 1).copy()  # (3, N, N), contiguous
            self._span = float(np.sqrt(np.max(np.add.reduce(self._delta * self._delta, axis=-1))))  # longest pos[j] - pos[i]
        grid = _shift_grid(reach)
        zero = n_shifts // 2  # the zero shift is the middle one
        if self.periodic:
            shift_vec = grid @ self.cell
            # |D| >= |shift @ cell| - span: shifts beyond cutoff + span reach no pair (with a margin for round-off)
            reachable = np.sqrt(np.add.reduce(shift_vec * shift_vec, axis=1)) < (cutoff + self._span) * (1 + 1e-9) + 1e-9
            if not reachable.all():
                zero = int(np.count_nonzero(reachable[:zero]))
                grid, shift_vec = grid[reachable], shift_vec[reachable]
        else:
            shift_vec = np.zeros((1, 3))
        along = np.ascontiguousarray(shift_vec.T)  # (3, M)
        d2 = self._components[0][:, :, None] + along[0]  # (N, N, M)
        np.multiply(d2, d2, out=d2)
        for k in (1, 2):
            part = self._components[k][:, :, None] + along[k]
            np.multiply(part, part, out=part)
            d2 += part
        near = d2 < cutoff * cutoff * (1 + 1e-9)  # every pair within the cutoff, and a few just beyond
        near[np.arange(n), np.arange(n), zero] = False  # no self-interaction
        i, j, m = np.nonzero(near)
        d = np.sqrt(d2[i, j, m])
        inside = d < cutoff
        if not inside.all():
            i, j, m, d = i[inside], j[inside], m[inside], d[inside]
        return _Pairs(i, j, d, grouped=True, frame=self, m=m, grid=grid, shift_vec=shift_vec)


@dataclass
class _Pairs:
    """Pairs ``i -> j`` within a cutoff and their distances ``d``; bond vectors ``D`` and cell shifts
    ``S`` on demand, for the pairs asked for (the dense search makes them only for those)."""

    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    grouped: bool  # pairs ordered by i
    vec: Optional[np.ndarray] = None  # (D, S) when the search made them (ASE's)
    shift: Optional[np.ndarray] = None
    frame: Optional[_PairFrame] = None  # else: the dense search's frame, shift index m and shifts
    m: Optional[np.ndarray] = None
    grid: Optional[np.ndarray] = None
    shift_vec: Optional[np.ndarray] = None

    def vectors(self, index) -> tuple[np.ndarray, np.ndarray]:
        """``(D, S)`` of the pairs ``index`` (integer indices)."""
        if self.frame is None:
            return self.vec[index], self.shift[index]
        i, j, m = self.i[index], self.j[index], self.m[index]
        wrap = self.frame.wrap
        return self.frame._delta[i, j] + self.shift_vec[m], self.grid[m] - wrap[j] + wrap[i]  # S: relative to the input positions

    def arrays(self):
        """``(i, j, d, D, S)`` as ``ase.neighborlist.neighbor_list("ijdDS", ...)`` returns them."""
        return (self.i, self.j, self.d, *self.vectors(np.arange(len(self.i))))


def _shift_grid(reach: np.ndarray) -> np.ndarray:
    """Every integer cell shift with ``|s_k| <= reach_k``, (M, 3) int64, in lexicographic order."""
    sizes = [int(2 * k + 1) for k in reach]
    grid = np.empty((sizes[0] * sizes[1] * sizes[2], 3), np.int64)
    grid[:, 0] = np.repeat(np.arange(-reach[0], reach[0] + 1), sizes[1] * sizes[2])
    grid[:, 1] = np.tile(np.repeat(np.arange(-reach[1], reach[1] + 1), sizes[2]), sizes[0])
    grid[:, 2] = np.tile(np.arange(-reach[2], reach[2] + 1), sizes[0] * sizes[1])
    return grid


def line_graph(edge_index: np.ndarray, edge_shift: np.ndarray, edge_vec: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Links ``e1 -> e2`` between edges that meet at an atom (``dst[e1] == src[e2]``), backtracking
    excluded, and the bond-angle cosines. Returns ``(lg_index (2, L) int32, cos (L,) float32)``.
    Links are ordered by ``e1``, then by ``e2``."""
    src, dst = edge_index[0].astype(np.int64), edge_index[1].astype(np.int64)
    shift = np.asarray(edge_shift).astype(np.int64)
    codec = _ShiftCodec.fit(shift, max(int(n_atoms), 1))
    if codec is None:  # shift components beyond any crystal's: compare them one by one
        def backtrack(e1, e2):
            return (dst[e2] == src[e1]) & np.all(shift[e2] == -shift[e1], axis=1)
    else:
        skey, nkey = codec.shift_key(shift), codec.shift_key(-shift)

        def backtrack(e1, e2):
            return (dst[e2] == src[e1]) & (skey[e2] == nkey[e1])
    edge_vec = np.asarray(edge_vec, dtype=float)
    return _line_graph(src, dst, edge_vec, _norm(edge_vec), n_atoms, backtrack)


def _norm(vec: np.ndarray) -> np.ndarray:
    """Row lengths, as ``np.linalg.norm(vec, axis=1)`` computes them."""
    return np.sqrt(np.add.reduce(vec * vec, axis=1))


def _line_graph(src, dst, edge_vec, length, n_atoms, backtrack) -> tuple[np.ndarray, np.ndarray]:
    """:func:`line_graph` given the bond lengths and a ``backtrack(e1, e2)`` test (vectorised)."""
    n_edges = len(src)
    if n_edges == 0:
        return np.zeros((2, 0), np.int32), np.zeros(0, np.float32)
    out_count = np.bincount(src, minlength=n_atoms)
    out_start = np.cumsum(out_count) - out_count
    # every edge e1 = (a -> b) pairs with each of the out_count[b] edges leaving b
    reps = out_count[dst]
    e1 = np.repeat(np.arange(n_edges), reps)
    offset = np.arange(len(e1)) - np.repeat(np.cumsum(reps) - reps, reps)
    e2 = out_start[dst[e1]] + offset
    if (np.diff(src) < 0).any():  # edges not grouped by the atom they leave: group them
        e2 = np.argsort(src, kind="stable")[e2]
    keep = ~backtrack(e1, e2)
    e1, e2 = e1[keep], e2[keep]
    cos = np.einsum("ij,ij->i", -edge_vec[e1], edge_vec[e2]) / (length[e1] * length[e2])
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
    edges = _neighbor_edges(numbers, np.asarray(positions, float), np.asarray(cell, float), pbc, cutoff=cutoff,
                            max_neighbors=max_neighbors)
    edge_index, edge_vec = edges.edge_index, edges.edge_vec
    length = _norm(edge_vec)
    if edges.reverse is not None:  # edges unique and symmetric: e2 backtracks e1 when it is e1's reverse
        reverse = edges.reverse
        lg_index, lg_cos = _line_graph(edge_index[0].astype(np.int64), edge_index[1].astype(np.int64), edge_vec, length,
                                       len(numbers), lambda e1, e2: e2 == reverse[e1])
    else:
        lg_index, lg_cos = line_graph(edge_index, edges.edge_shift, edge_vec, len(numbers))
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
        edge_shift=edges.edge_shift,
        edge_vec=edge_vec.astype(np.float32),
        lg_index=lg_index,
        lg_cos=lg_cos,
        cutoff=edges.cutoff,
    )


def coordination(edge_index: np.ndarray, distances: np.ndarray, n_atoms: int, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Bonded neighbours: an edge ``src -> dst`` is a bond of ``src`` when its length is within
    ``(1 + tolerance)`` times ``src``'s shortest edge. Returns ``(is_bond (E,) bool, cn (N,) int)``."""
    src = edge_index[0].astype(np.int64)
    nearest = np.full(n_atoms, np.inf)
    np.minimum.at(nearest, src, distances)
    is_bond = distances <= nearest[src] * (1.0 + tolerance) + TIE_TOLERANCE
    return is_bond, np.bincount(src[is_bond], minlength=n_atoms)
