"""Descriptions of crystals, word tokens and the vocabulary.

The seed models encode a Robocrystallographer-style description with a pretrained materials
language model. Nothing can be downloaded here, so when the data carry no description one is
generated from the structure (formula, lattice system and space group via spglib, cell size,
coordination and bonding per element), and the text encoder is trained from scratch over its word
tokens. The vocabulary is built from the *training* descriptions only; other tokens map to
``<unk>``.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

PAD, UNK, CLS, MASK = "<pad>", "<unk>", "<cls>", "<mask>"
SPECIALS = (PAD, UNK, CLS, MASK)
PAD_ID, UNK_ID, CLS_ID, MASK_ID = range(4)

_TOKEN = re.compile(r"\w+(?:[-+./]\w+)*|[^\w\s]")

_LATTICE_SYSTEMS = ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                    (167, "trigonal"), (194, "hexagonal"), (230, "cubic"))


def lattice_system(space_group: int) -> str:
    return next(name for last, name in _LATTICE_SYSTEMS if space_group <= last)


def symmetry(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, symprec: float) -> tuple[str, int] | None:
    """(international symbol, number) of the space group, or None when spglib finds none."""
    import spglib

    frac = np.linalg.solve(np.asarray(cell, float).T, np.asarray(positions, float).T).T
    try:
        with warnings.catch_warnings():  # spglib 2.5+ warns about its legacy error handling on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = spglib.get_symmetry_dataset((np.asarray(cell, float), frac, np.asarray(numbers, int)), symprec=symprec)
    except Exception:  # spglib raises its own error types for degenerate cells  # noqa: BLE001
        ds = None
    if ds is None:
        return None
    return str(ds.international), int(ds.number)


def describe(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc,
    edge_index: np.ndarray,
    distances: np.ndarray,
    *,
    symprec: float = 0.1,
    coordination_tolerance: float = 0.2,
) -> str:
    """A short English description of a structure from its neighbour graph, e.g.

    ``NaCl crystallizes in the cubic Fm-3m space group ( 225 ) . The unit cell holds 2 atoms , 22 Å3
    per atom . Na is 6-coordinate , bonded to 6 Cl at 2.8 Å . Cl is 6-coordinate , bonded to 6 Na at 2.8 Å .``
    """
    from ase.data import chemical_symbols
    from ase.formula import Formula

    from models.crystal_text.graphs import coordination

    numbers = np.asarray(numbers, dtype=np.int64)
    n = len(numbers)
    symbols = [chemical_symbols[z] for z in numbers]
    formula = Formula.from_list(symbols).reduce()[0].format("metal")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    words: list[str] = []
    if pbc.all():
        sym = symmetry(numbers, positions, cell, symprec)
        if sym is None:
            words.append(f"{formula} crystallizes with no space group found .")
        else:
            words.append(f"{formula} crystallizes in the {lattice_system(sym[1])} {sym[0]} space group ( {sym[1]} ) .")
        volume = abs(float(np.linalg.det(np.asarray(cell, float))))
        words.append(f"The unit cell holds {n} atoms , {volume / n:.0f} Å3 per atom .")
    else:
        words.append(f"{formula} is a {'periodic' if pbc.any() else 'finite'} structure of {n} atoms .")
    if edge_index.shape[1]:
        is_bond, cn = coordination(edge_index, distances, n, coordination_tolerance)
        src, dst = edge_index[0][is_bond], edge_index[1][is_bond]
        bond_len = distances[is_bond]
        for z in dict.fromkeys(z for z in _formula_order(formula, symbols, numbers)):
            atoms = np.flatnonzero(numbers == z)
            values, counts = np.unique(cn[atoms], return_counts=True)
            mode = int(values[np.argmax(counts)])
            typical = atoms[cn[atoms] == mode]
            sel = np.isin(src, typical)
            partners = Counter(numbers[dst[sel]].tolist())
            parts = [f"{round(c / len(typical))} {chemical_symbols[p]}" for p, c in sorted(partners.items(), key=lambda kv: (-kv[1], kv[0]))]
            parts = [p for p in parts if not p.startswith("0 ")]
            words.append(
                f"{chemical_symbols[z]} is {mode}-coordinate , bonded to {' and '.join(parts)} at {bond_len[sel].mean():.1f} Å ."
            )
    return " ".join(words)


def _formula_order(formula: str, symbols: Sequence[str], numbers: np.ndarray) -> list[int]:
    """Atomic numbers in the order their symbols appear in ``formula`` (then any others)."""
    from ase.data import atomic_numbers

    seen = [atomic_numbers[s] for s in re.findall(r"[A-Z][a-z]?", formula) if s in atomic_numbers]
    return [z for z in seen if z in set(numbers.tolist())] + sorted(set(numbers.tolist()) - set(seen))


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Word tokens: runs of letters/digits, joined by ``- + . /`` inside a word ("Fd-3m", "2.8",
    "P6_3/mmc"); any other non-space character is a token of its own."""
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)


def build_vocab(token_lists: Iterable[Sequence[str]], *, min_freq: int = 1, max_size: int = 10000) -> list[str]:
    """Special tokens, then training tokens by falling frequency (ties alphabetical)."""
    counts = Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t))
    return [*SPECIALS, *ranked[: max(0, max_size - len(SPECIALS))]]


def encode(tokens: Sequence[str], index: dict[str, int], max_tokens: int) -> np.ndarray:
    """``[CLS]`` + the first ``max_tokens`` token ids (unknown tokens -> ``<unk>``), int32."""
    ids = [CLS_ID] + [index.get(t, UNK_ID) for t in tokens[:max_tokens]]
    return np.asarray(ids, dtype=np.int32)
