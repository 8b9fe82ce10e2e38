"""hpo.data.metrics against numpy / scipy references, on numpy arrays and torch tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hpo.data import metrics as M

rng = np.random.default_rng(0)
Y = rng.normal(size=200)
P = Y + 0.3 * rng.normal(size=200)


@pytest.mark.parametrize("as_torch", [False, True])
def test_errors_and_r2_match_numpy(as_torch):
    p, y = (torch.tensor(P), torch.tensor(Y)) if as_torch else (P, Y)
    assert M.mae(p, y) == pytest.approx(np.mean(np.abs(P - Y)), rel=1e-12)
    assert M.mse(p, y) == pytest.approx(np.mean((P - Y) ** 2), rel=1e-12)
    assert M.rmse(p, y) == pytest.approx(np.sqrt(np.mean((P - Y) ** 2)), rel=1e-12)
    r2 = 1 - np.sum((Y - P) ** 2) / np.sum((Y - Y.mean()) ** 2)
    assert M.r2(p, y) == pytest.approx(r2, rel=1e-12)
    assert all(isinstance(f(p, y), float) for f in (M.mae, M.mse, M.rmse, M.r2))


def test_correlations_match_scipy():
    assert M.pearson(P, Y) == pytest.approx(stats.pearsonr(P, Y)[0], rel=1e-12)
    assert M.spearman(P, Y) == pytest.approx(stats.spearmanr(P, Y)[0], rel=1e-12)
    ties_a, ties_b = np.array([1, 2, 2, 3, 3, 3, 4.0]), np.array([2, 1, 4, 3, 3, 5, 6.0])
    assert M.spearman(ties_a, ties_b) == pytest.approx(stats.spearmanr(ties_a, ties_b)[0], rel=1e-12)
    assert M.pearson(torch.tensor(P), torch.tensor(Y)) == pytest.approx(stats.pearsonr(P, Y)[0], rel=1e-12)


def test_undefined_values_are_nan():
    empty = np.array([])
    assert all(math.isnan(f(empty, empty)) for f in (M.mae, M.mse, M.rmse, M.r2))
    assert math.isnan(M.r2(np.array([1.0, 2.0]), np.array([3.0, 3.0])))  # constant target
    assert math.isnan(M.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(M.pearson([1.0], [2.0]))
