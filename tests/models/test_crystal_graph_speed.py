"""The fast crystal graph builder (issue #17 item 4) gives the SAME graphs as the frozen copy of the
builder before it (tests/models/_legacy_crystal_graphs.py): the same edges (src, dst, shift) in the
same order, the same bond vectors, the same line-graph links in the same order and the same bond-angle
cosines (within 1e-6), the same cutoff finally used, and the same error for every structure either
refuses. Structures are seeded random ones: skewed triclinic cells, 1-40 atoms, periodic / partly
periodic / finite, tiny cells whose periodic images are the neighbours, atoms outside the cell,
neighbours exactly at the cutoff or at the k-th distance (ties), and sparse ones whose cutoff grows."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from models.crystal_text import graphs as new
from tests.models import _legacy_crystal_graphs as old

ATOL = 1e-6


# ------------------------------------------------------------------------------------------ helpers
def _outcome(module, *args, **kw):
    try:
        return module.build_crystal_graph(*args, **kw)
    except ValueError as e:
        return e


def assert_same_graph(numbers, positions, cell, pbc, **kw):
    """Both builders give the same graph, or both refuse the structure with the same message.
    Returns the graph (None when refused)."""
    a = _outcome(old, numbers, positions, cell, pbc, **kw)
    b = _outcome(new, numbers, positions, cell, pbc, **kw)
    if isinstance(a, ValueError) or isinstance(b, ValueError):
        assert isinstance(a, ValueError) and isinstance(b, ValueError), (a, b)
        assert str(a) == str(b)
        return None
    np.testing.assert_array_equal(b.numbers, a.numbers)
    np.testing.assert_array_equal(b.edge_index, a.edge_index)  # same (src, dst) in the same order
    np.testing.assert_array_equal(b.edge_shift, a.edge_shift)  # ... with the same images
    assert b.edge_index.dtype == a.edge_index.dtype and b.edge_shift.dtype == a.edge_shift.dtype
    assert b.edge_vec.dtype == a.edge_vec.dtype and b.lg_cos.dtype == a.lg_cos.dtype
    np.testing.assert_allclose(b.edge_vec, a.edge_vec, rtol=0, atol=ATOL)
    np.testing.assert_allclose(b.distances, a.distances, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(b.lg_index, a.lg_index)  # same angle triples in the same order
    np.testing.assert_allclose(b.lg_cos, a.lg_cos, rtol=0, atol=ATOL)
    assert b.cutoff == a.cutoff
    return b


def _cell(rng, kind: str, n: int) -> np.ndarray:
    if kind == "tiny":  # 0.6-2 Å: the neighbours are mostly periodic images, shifts reach far
        return np.diag(rng.uniform(0.6, 2.0, 3)) + rng.normal(0, 0.15, (3, 3))
    size = rng.uniform(2.0, 3.5) * n ** (1 / 3)
    if kind == "triclinic":  # strongly skewed: lattice vectors far from orthogonal
        shear = np.triu(rng.uniform(-2.0, 2.0, (3, 3)), 1).T
        return size * (np.eye(3) + shear) @ _rotation(rng)
    return size * (np.eye(3) + rng.normal(0, 0.1, (3, 3)))


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _random_structure(rng, k: int):
    kind = ("cubic", "triclinic", "tiny", "triclinic", "cubic")[k % 5]
    n = int(rng.integers(1, 4)) if kind == "tiny" else int(rng.integers(1, 41))
    cell = _cell(rng, kind, n)
    frac = rng.uniform(-0.5, 1.5, (n, 3)) if k % 3 == 0 else rng.random((n, 3))  # also atoms outside the cell
    positions = frac @ cell
    numbers = rng.integers(1, 95, n)
    pbc = [np.ones(3, bool), rng.random(3) < 0.6, np.ones(3, bool), np.zeros(3, bool)][k % 4]
    if not pbc.any() and k % 8 == 3:
        cell = np.zeros((3, 3))  # a molecule without a cell
    cutoff = 8.0 if k % 2 else float(rng.uniform(1.0, 8.0))
    max_neighbors = 12 if k % 3 else int(rng.integers(1, 25))
    return numbers, positions, cell, pbc, cutoff, max_neighbors


# ------------------------------------------------------------------------------------------ graphs
@pytest.mark.parametrize("block", range(8))
def test_same_graphs_as_the_frozen_builder_on_random_structures(block):
    rng = np.random.default_rng(1700 + block)
    built = 0
    for k in range(40):
        numbers, positions, cell, pbc, cutoff, max_neighbors = _random_structure(rng, k)
        g = assert_same_graph(numbers, positions, cell, pbc, cutoff=cutoff, max_neighbors=max_neighbors)
        built += g is not None
    assert built >= 30  # most are valid structures, so the graphs (not only the errors) are compared


@pytest.mark.parametrize("name,kind,a,max_neighbors", [
    ("Cu", "fcc", 3.61, 10), ("Cu", "fcc", 3.61, 12), ("Cu", "fcc", 3.61, 13), ("Cu", "fcc", 3.61, 18),
    ("Fe", "bcc", 2.87, 5), ("Fe", "bcc", 2.87, 8), ("Fe", "bcc", 2.87, 9), ("Fe", "bcc", 2.87, 14),
    ("Po", "sc", 3.35, 6), ("Po", "sc", 3.35, 7), ("Si", "diamond", 5.43, 3), ("Si", "diamond", 5.43, 16),
    ("NaCl", "rocksalt", 5.64, 5), ("NaCl", "rocksalt", 5.64, 12), ("Mg", "hcp", 3.21, 12),
])
def test_same_graphs_with_ties_at_the_kth_distance(name, kind, a, max_neighbors):
    """Symmetric crystals: whole shells tie with the k-th neighbour (they are kept), exactly or, with the
    atoms displaced by ~1e-6 Å, within TIE_TOLERANCE."""
    from ase.build import bulk

    rng = np.random.default_rng(max_neighbors)
    for cubic, noise in itertools.product((False, True), (0.0, 1e-6)):
        if cubic and kind == "hcp":
            continue
        atoms = bulk(name, kind, a=a, cubic=cubic)
        positions = atoms.positions + rng.normal(0, noise, atoms.positions.shape)
        g = assert_same_graph(atoms.numbers, positions, np.asarray(atoms.cell), atoms.pbc, cutoff=8.0,
                              max_neighbors=max_neighbors)
        assert g is not None and np.bincount(g.edge_index[0]).min() >= max_neighbors


def test_same_graphs_with_a_neighbour_exactly_at_the_cutoff():
    """A pair exactly at the cutoff is left out (``d < cutoff``), one ulp further in is kept, by both: with
    the cutoff at the k-th neighbour distance of the loneliest atom, the search radius grows, and one ulp
    above it does not."""
    # simple cubic, a = 2 Å: the 4th image sits at exactly 8.0 Å
    g = assert_same_graph(np.array([14]), np.zeros((1, 3)), np.eye(3) * 2.0, True, cutoff=8.0, max_neighbors=12)
    assert g.distances.max() < 8.0
    rng = np.random.default_rng(5)
    boundaries = 0
    for k in range(12):
        numbers, positions, cell, pbc, _, _ = _random_structure(rng, 5 * k + 1)  # cubic-like, periodic or not
        n = len(numbers)
        i, j, d, _, _ = old.periodic_pairs(positions, cell, np.broadcast_to(pbc, (3,)), 8.0)
        if n < 3 or not len(d) or d.min() < old.MIN_BOND_LENGTH:
            continue
        for max_neighbors in (1, 2, 4):
            kth = [np.sort(d[i == a])[max_neighbors - 1] for a in range(n) if (i == a).sum() >= max_neighbors]
            if len(kth) < n:
                continue
            edge = max(kth)  # the k-th neighbour of the loneliest atom sits exactly at this cutoff
            at = assert_same_graph(numbers, positions, cell, pbc, cutoff=float(edge), max_neighbors=max_neighbors)
            above = assert_same_graph(numbers, positions, cell, pbc, cutoff=float(np.nextafter(edge, np.inf)),
                                      max_neighbors=max_neighbors)
            assert_same_graph(numbers, positions, cell, pbc, cutoff=float(np.nextafter(edge, -np.inf)), max_neighbors=max_neighbors)
            boundaries += at.cutoff > edge and above.cutoff == np.nextafter(edge, np.inf)
    assert boundaries >= 5


def test_same_graphs_when_the_kth_neighbour_sits_at_the_tie_tolerance():
    """A second neighbour TIE_TOLERANCE (+- 1e-9) Å beyond the first: kept or not, the same by both."""
    for extra in (-1e-9, 0.0, 1e-9, 2e-4):
        gap = old.TIE_TOLERANCE + extra
        positions = np.array([[0, 0, 0], [1.5, 0, 0], [-1.5 - gap, 0, 0]])
        assert_same_graph(np.array([6, 8, 8]), positions, np.zeros((3, 3)), False, cutoff=8.0, max_neighbors=1)


def test_same_graphs_when_the_cutoff_grows():
    """Sparse structures: the search radius grows (x1.5) until every atom has its neighbours."""
    rng = np.random.default_rng(11)
    grown = 0
    for k in range(16):
        n = int(rng.integers(1, 12))
        cell = np.diag(rng.uniform(6.0, 20.0, 3)) + rng.normal(0, 0.5, (3, 3))
        pbc = np.ones(3, bool) if k % 2 else np.array([True, False, True])
        g = assert_same_graph(rng.integers(1, 30, n), rng.random((n, 3)) @ cell, cell, pbc, cutoff=float(rng.uniform(1.0, 4.0)),
                              max_neighbors=int(rng.integers(4, 16)))
        grown += g is not None and g.cutoff > 4.0
    cluster = rng.normal(0, 6.0, (9, 3))
    g = assert_same_graph(np.full(9, 6), cluster, np.zeros((3, 3)), False, cutoff=0.5, max_neighbors=12)
    assert grown >= 8 and g.cutoff > 0.5


def test_same_graphs_with_the_binned_search_of_large_structures(monkeypatch):
    """Beyond DENSE_PAIR_LIMIT both use ASE's binned neighbour list (pairs in its order)."""
    monkeypatch.setattr(new, "DENSE_PAIR_LIMIT", 500)
    monkeypatch.setattr(old, "DENSE_PAIR_LIMIT", 500)
    rng = np.random.default_rng(23)
    for k in range(10):
        numbers, positions, cell, pbc, cutoff, max_neighbors = _random_structure(rng, k)
        assert_same_graph(numbers, positions, cell, pbc, cutoff=cutoff, max_neighbors=max_neighbors)


def test_same_graphs_with_atoms_a_million_cells_away(monkeypatch):
    """Atoms ~1e6 Å apart (images of each other's neighbours) in a 1.2 Å cell: cell shifts of ~1.6e6
    overflow one int64 key per (src, dst, shift), so the edges take the generic (row-wise unique) path;
    still the same graph."""
    rng = np.random.default_rng(43)
    cell = np.eye(3) * 1.2 + rng.normal(0, 0.05, (3, 3))
    positions = np.array([[-9.9e5] * 3, [0.0] * 3, [9.9e5] * 3]) + rng.random((3, 3))
    structure = (np.array([6, 8, 14]), positions, cell, True)
    assert_same_graph(*structure, cutoff=4.0, max_neighbors=12)
    calls = []
    unique = np.unique
    monkeypatch.setattr(np, "unique", lambda *a, **k: calls.append(k.get("axis")) or unique(*a, **k))
    new.build_crystal_graph(*structure, cutoff=4.0, max_neighbors=12)
    assert calls == [0]  # np.unique(axis=0): the generic path was taken


@pytest.mark.parametrize("numbers,positions,cell,pbc,cutoff", [
    ([14, 14], [[0, 0, 0], [0, 0, 0]], np.eye(3) * 5, True, 8.0),
    ([14, 14], [[0, 0, 0], [0, 0, 0.05]], np.eye(3) * 5, True, 0.04),  # cutoff below MIN_BOND_LENGTH
    ([14, 14, 14, 14], [[0, 0, 0], [0, 0, 0.05], [2, 2, 2], [2, 2, 2.03]], np.eye(3) * 5, True, 8.0),
    ([8, 1, 1], [[0, 0, 0], [0.9, 0, 0], [0.9, 0, 0]], np.zeros((3, 3)), False, 8.0),
    ([14], [[0, 0, 0]], np.diag([0.05, 5, 5]), [True, False, False], 8.0),
    ([14], [[0, 0, 0]], [[5, 0, 0], [0, 5, 0], [0, 0, 0]], True, 8.0),
    ([0, 14], [[0, 0, 0], [1.3, 1.3, 1.3]], np.eye(3) * 5, True, 8.0),
    ([14, 14], [[0, 0, 0], [np.nan, 1, 1]], np.eye(3) * 5, True, 8.0),
    ([14], [[0, 0, 0]], np.eye(3) * 5, True, 8.0),
    ([14], [[0, 0, 0]], np.zeros((3, 3)), False, 8.0),  # one atom, no cell: no edges
])
def test_same_errors_and_edge_cases(numbers, positions, cell, pbc, cutoff):
    assert_same_graph(np.asarray(numbers, dtype=np.int64), np.asarray(positions, float), np.asarray(cell, float), pbc,
                      cutoff=cutoff, max_neighbors=4)


# ------------------------------------------------------------------------------------------ the parts
def test_periodic_pairs_are_the_frozen_ones_in_the_same_order():
    rng = np.random.default_rng(31)
    for k in range(60):
        _, positions, cell, pbc, cutoff, _ = _random_structure(rng, k)
        pbc = np.broadcast_to(pbc, (3,))
        if pbc.any() and abs(np.linalg.det(cell)) < 1e-3:
            continue
        a, b = old.periodic_pairs(positions, cell, pbc, cutoff), new.periodic_pairs(positions, cell, pbc, cutoff)
        for x, y in zip(a[:2] + a[4:], b[:2] + b[4:]):
            np.testing.assert_array_equal(y, x)
        np.testing.assert_allclose(b[2], a[2], rtol=0, atol=ATOL)
        np.testing.assert_allclose(b[3], a[3], rtol=0, atol=ATOL)


def test_neighbor_edges_and_line_graph_of_shuffled_edges_are_the_frozen_ones():
    """The public parts: neighbor_edges, and line_graph on edges in any order (not grouped by atom)."""
    rng = np.random.default_rng(37)
    for k in range(24):
        numbers, positions, cell, pbc, cutoff, max_neighbors = _random_structure(rng, k)
        try:
            a = old.neighbor_edges(numbers, positions, cell, pbc, cutoff=cutoff, max_neighbors=max_neighbors)
        except ValueError:
            continue
        b = new.neighbor_edges(numbers, positions, cell, pbc, cutoff=cutoff, max_neighbors=max_neighbors)
        np.testing.assert_array_equal(b[0], a[0])
        np.testing.assert_array_equal(b[1], a[1])
        np.testing.assert_allclose(b[2], a[2], rtol=0, atol=ATOL)
        assert b[3] == a[3]
        perm = rng.permutation(a[0].shape[1])
        args = (a[0][:, perm], a[1][perm], a[2][perm], len(numbers))
        la, lb = old.line_graph(*args), new.line_graph(*args)
        np.testing.assert_array_equal(lb[0], la[0])
        np.testing.assert_allclose(lb[1], la[1], rtol=0, atol=ATOL)


def test_line_graph_of_one_way_edges_keeps_what_is_not_backtracking():
    """Edges without their reverse (not from neighbor_edges): only true backtracks are dropped."""
    edge_index = np.array([[0, 1, 1, 2, 1], [1, 0, 2, 0, 0]])  # not grouped by src either
    # 1 -> 0 at shift (1, 0, 0) is another image of 0, not a backtrack of 0 -> 1; the last edge is 0 -> 1's reverse
    edge_shift = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    edge_vec = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 1.0, 0], [-1.0, -1.0, 0], [-1.0, 0, 0]])
    la, lb = old.line_graph(edge_index, edge_shift, edge_vec, 3), new.line_graph(edge_index, edge_shift, edge_vec, 3)
    np.testing.assert_array_equal(lb[0], la[0])
    np.testing.assert_allclose(lb[1], la[1], rtol=0, atol=ATOL)
    # 0->1 meets 1->0 (other image) and 1->2; 1->0 (image) meets 0->1; 1->2 meets 2->0; 2->0 meets 0->1
    assert sorted(map(tuple, lb[0].T.tolist())) == [(0, 1), (0, 2), (1, 0), (2, 3), (3, 0)]


def test_check_structure_gives_the_frozen_errors():
    rng = np.random.default_rng(41)
    for k in range(40):
        numbers, positions, cell, pbc, _, _ = _random_structure(rng, k)
        if k % 4 == 0:
            positions = np.concatenate([positions, positions[:1] + rng.normal(0, 0.03, 3)])  # an atom on another's site
            numbers = np.concatenate([numbers, numbers[:1]])
        errors = []
        for module in (old, new):
            try:
                module.check_structure(numbers, positions, cell, np.broadcast_to(pbc, (3,)))
                errors.append(None)
            except ValueError as e:
                errors.append(str(e))
        assert errors[0] == errors[1]


# ------------------------------------------------------------------------------------------ speed
def test_the_new_builder_is_faster_than_the_frozen_one():
    """Best of 3 interleaved rounds over the same structures (about 3x faster; asserted: faster)."""
    from ase.build import bulk

    rng = np.random.default_rng(53)
    structures = []
    for name, kind, a in (("Cu", "fcc", 3.61), ("Fe", "bcc", 2.87), ("Si", "diamond", 5.43), ("NaCl", "rocksalt", 5.64)):
        atoms = bulk(name, kind, a=a, cubic=True)
        structures.append((atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc))
    for _ in range(8):
        n = int(rng.integers(2, 30))
        cell = rng.uniform(2.5, 3.2) * n ** (1 / 3) * (np.eye(3) + rng.normal(0, 0.08, (3, 3)))
        structures.append((rng.integers(1, 60, n), rng.random((n, 3)) @ cell, cell, np.ones(3, bool)))
    best = {old: np.inf, new: np.inf}
    for _ in range(3):
        for module in (old, new):
            start = time.perf_counter()
            for s in structures:
                module.build_crystal_graph(*s)
            best[module] = min(best[module], time.perf_counter() - start)
    assert best[new] < best[old], best
