"""Regression metrics of drug–target affinity prediction, as the DTA literature reports them.

- ``mse``, ``rmse``, ``mae``; ``r2``: coefficient of determination ``1 - SS_res / SS_tot`` (the common
  ones, from :mod:`hpo.data.metrics`, over float64 copies).
- ``ci``: concordance index (Gönen & Heller 2005) with DeepDTA's tie rules: every pair with *different*
  true values counts; it scores 1 when the predictions are ordered the same way, 0.5 when the predictions
  are equal, 0 otherwise. Computed exactly in O(n log n) (:func:`concordance_index`).
- ``rm2``: the modified squared correlation r_m² (Roy et al. 2013) *as DeepDTA and GraphDTA compute it*,
  ``r² · (1 − sqrt(|r²² − r0²²|))`` (their ``get_rm2`` squares both terms under the root; Roy's paper
  has ``|r² − r0²|``). We keep DeepDTA's form so that figures compare with the published ones.

All functions take 1-D array-likes of equal length and return floats; an undefined value (a constant
target, fewer than two pairs, a non-finite prediction) is ``nan``.
"""

from __future__ import annotations

import math

import numpy as np

from hpo.data.metrics import mae, mse, r2, rmse

#: name -> direction, in the order the task reports them; RMSE first (the seed minimises it)
METRICS = {"rmse": "minimize", "mse": "minimize", "mae": "minimize", "r2": "maximize", "ci": "maximize", "rm2": "maximize"}


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one set of predictions."""
    y, p = _as_1d(y_true, y_pred)
    if len(y) == 0:
        return {name: math.nan for name in METRICS}
    return {
        "rmse": rmse(p, y),
        "mse": mse(p, y),
        "mae": mae(p, y),
        "r2": r2(p, y),
        "ci": concordance_index(y, p),
        "rm2": rm2_score(y, p),
    }


def rm2_score(y_true, y_pred) -> float:
    """r_m² as in DeepDTA's ``emetrics.get_rm2`` (see the module docstring).

    ``r²`` is the squared Pearson correlation; ``r0²`` the coefficient of determination of the
    regression through the origin ``y ≈ k·p`` with ``k = Σ y·p / Σ p²``.
    """
    y, p = _as_1d(y_true, y_pred)
    if len(y) < 2 or not np.all(np.isfinite(p)):
        return math.nan
    yc, pc = y - y.mean(), p - p.mean()
    denom = float(np.sum(yc**2) * np.sum(pc**2))
    pp = float(np.sum(p * p))
    if denom == 0.0 or pp == 0.0:
        return math.nan
    r2 = float(np.sum(yc * pc)) ** 2 / denom
    k = float(np.sum(y * p)) / pp
    r02 = 1.0 - float(np.sum((y - k * p) ** 2)) / float(np.sum(yc**2))
    return r2 * (1.0 - math.sqrt(abs(r2 * r2 - r02 * r02)))


def concordance_index(y_true, y_pred) -> float:
    """Concordance index over all pairs with different true values; prediction ties score 0.5.

    Exact and O(n log n): sort the pairs by (true, predicted) value, so that no two pairs with equal
    true values are out of order; then the discordant pairs are exactly the inversions of the
    predicted ranks in that order (:func:`count_inversions`). With ``T`` the pairs whose predictions
    tie but true values differ and ``N`` the pairs whose true values differ,
    ``CI = (N - discordant - T + T / 2) / N``.
    """
    y, p = _as_1d(y_true, y_pred)
    n = len(y)
    if not np.all(np.isfinite(p)):
        return math.nan
    _, y_rank = np.unique(y, return_inverse=True)
    _, p_rank = np.unique(p, return_inverse=True)
    pairs_y_diff = _pairs(n) - _tied_pairs(y_rank)
    if pairs_y_diff == 0:
        return math.nan
    order = np.lexsort((p_rank, y_rank))
    discordant = count_inversions(p_rank[order])
    joint = y_rank.astype(np.int64) * (int(p_rank.max()) + 1) + p_rank
    pred_ties = _tied_pairs(p_rank) - _tied_pairs(joint)  # equal predictions, different true values
    concordant = pairs_y_diff - discordant - pred_ties
    return (concordant + 0.5 * pred_ties) / pairs_y_diff


def count_inversions(a) -> int:
    """Number of pairs ``i < j`` with ``a[i] > a[j]`` for non-negative integers ``a``.

    Radix (wavelet-tree) passes from the highest bit down: two values first differ at some bit ``k``;
    they form an inversion when the earlier one has the 1 there. Each pass counts, within every group
    of equal higher bits, the 1s that precede each 0, then stably partitions the group (0s first), all
    with vectorised cumulative sums: O(n) per bit, O(n log n) in all.
    """
    vals = np.asarray(a, dtype=np.int64)
    n = len(vals)
    if n < 2:
        return 0
    if vals.min() < 0:
        raise ValueError("count_inversions needs non-negative integers")
    pos = np.arange(n)
    total = 0
    for k in range(int(vals.max()).bit_length() - 1, -1, -1):
        bit = (vals >> k) & 1
        high = vals >> (k + 1)
        is_start = np.empty(n, dtype=bool)
        is_start[0] = True
        np.not_equal(high[1:], high[:-1], out=is_start[1:])
        start = np.maximum.accumulate(np.where(is_start, pos, 0))  # first position of each element's group
        ones_upto = np.cumsum(bit)
        ones_before = ones_upto - bit - (ones_upto - bit)[start]  # 1s earlier in the same group
        total += int(ones_before[bit == 0].sum())
        group = np.cumsum(is_start) - 1
        zeros_in_group = np.bincount(group, weights=1 - bit).astype(np.int64)[group]
        zeros_before = (pos - start) - ones_before
        new_pos = np.where(bit == 0, start + zeros_before, start + zeros_in_group + ones_before)
        out = np.empty_like(vals)
        out[new_pos] = vals
        vals = out
    return total


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _tied_pairs(ranks: np.ndarray) -> int:
    counts = np.unique(ranks, return_counts=True)[1].astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def _as_1d(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y = _to_numpy(y_true).reshape(-1).astype(np.float64)
    p = _to_numpy(y_pred).reshape(-1).astype(np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, but got {len(y)} and {len(p)}")
    return y, p


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)
