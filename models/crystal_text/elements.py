"""Physical descriptors of the elements, the atoms' input features.

A learned embedding alone cannot say anything about an element missing from the training split
(71 elemental crystals in ``dcdft`` each hold a different element), so atoms also get fixed
descriptors in the spirit of CGCNN's: one-hot group, period and block, and scaled atomic number,
mass, covalent radius, Pauling electronegativity and valence-electron count (ASE's tables where ASE
has them).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_Z = 118

# Pauling electronegativities for Z = 1..103 (0.0 = none assigned: noble gases He, Ne, Ar).
_PAULING = [
    2.20, 0.00, 0.98, 1.57, 2.04, 2.55, 3.04, 3.44, 3.98, 0.00,  # H .. Ne
    0.93, 1.31, 1.61, 1.90, 2.19, 2.58, 3.16, 0.00, 0.82, 1.00,  # Na .. Ca
    1.36, 1.54, 1.63, 1.66, 1.55, 1.83, 1.88, 1.91, 1.90, 1.65,  # Sc .. Zn
    1.81, 2.01, 2.18, 2.55, 2.96, 3.00, 0.82, 0.95, 1.22, 1.33,  # Ga .. Zr
    1.60, 2.16, 1.90, 2.20, 2.28, 2.20, 1.93, 1.69, 1.78, 1.96,  # Nb .. Sn
    2.05, 2.10, 2.66, 2.60, 0.79, 0.89, 1.10, 1.12, 1.13, 1.14,  # Sb .. Nd
    1.13, 1.17, 1.20, 1.20, 1.10, 1.22, 1.23, 1.24, 1.25, 1.10,  # Pm .. Yb
    1.27, 1.30, 1.50, 2.36, 1.90, 2.20, 2.20, 2.28, 2.54, 2.00,  # Lu .. Hg
    1.62, 2.33, 2.02, 2.00, 2.20, 2.20, 0.70, 0.90, 1.10, 1.30,  # Tl .. Th
    1.50, 1.38, 1.36, 1.28, 1.13, 1.28, 1.30, 1.30, 1.30, 1.30,  # Pa .. Fm
    1.30, 1.30, 1.30,  # Md .. Lr
]

_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)


def period_group_block(z: int) -> tuple[int, int, str]:
    """(period 1-7, group 1-18 or 0 for the f-block, block "s"/"p"/"d"/"f") of element ``z``."""
    period = next(i + 1 for i, end in enumerate(_PERIOD_ENDS) if z <= end)
    start = (0, *_PERIOD_ENDS)[period - 1]
    pos = z - start  # 1-based position in the period
    if period == 1:
        group = 1 if z == 1 else 18
    elif period <= 3:
        group = pos if pos <= 2 else pos + 10
    elif period <= 5:
        group = pos
    else:  # periods 6 and 7: La/Ac at group 3, then 14 f-block elements
        if pos <= 3:
            group = pos
        elif pos <= 17:
            group = 0
        else:
            group = pos - 14
    if group == 0:
        block = "f"
    elif group in (1, 2) or z == 2:
        block = "s"
    elif group >= 13:
        block = "p"
    else:
        block = "d"
    return period, group, block


def valence_electrons(z: int) -> int:
    _, group, block = period_group_block(z)
    if block == "f":
        return 3
    if z == 2:
        return 2
    return group - 10 if group >= 13 else group


@lru_cache(maxsize=1)
def element_feature_table() -> np.ndarray:
    """(MAX_Z + 1, F) float32 table; row 0 is all zeros (padding), row z describes element z."""
    from ase.data import atomic_masses, covalent_radii

    blocks = "spdf"
    n_feat = 19 + 7 + 4 + 6
    table = np.zeros((MAX_Z + 1, n_feat), dtype=np.float32)
    for z in range(1, MAX_Z + 1):
        period, group, block = period_group_block(z)
        row = table[z]
        row[group] = 1.0  # 0 = f-block, 1..18 = groups
        row[19 + period - 1] = 1.0
        row[26 + blocks.index(block)] = 1.0
        en = _PAULING[z - 1] if z <= len(_PAULING) else 0.0
        row[30] = z / 100.0
        row[31] = float(atomic_masses[z]) / 250.0
        row[32] = float(covalent_radii[z]) / 2.0
        row[33] = en / 4.0
        row[34] = 1.0 if en == 0.0 else 0.0  # electronegativity unknown
        row[35] = valence_electrons(z) / 8.0
    return table
