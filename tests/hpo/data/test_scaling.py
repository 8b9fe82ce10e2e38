"""hpo.data.scaling: the standardizer's statistics come from the training split only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpo.data.scaling import Standardizer


def test_fitted_on_the_train_split_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)) + np.array([0.0, 5.0, -2.0])
    train, rest = np.arange(70), np.arange(70, 100)
    x[rest] += 100.0  # val/test far away: their statistics must not leak in
    s = Standardizer.fit(x[train], axis=0)
    np.testing.assert_allclose(s.mean, x[train].mean(axis=0))
    np.testing.assert_allclose(s.std, x[train].std(axis=0))
    z = s.transform(x)
    np.testing.assert_allclose(z[train].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[train].std(axis=0), 1.0)
    assert (z[rest].mean(axis=0) > 50).all()
    np.testing.assert_allclose(s.inverse(z), x)


def test_scalars_torch_and_constant_features():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    s = Standardizer.fit(y[:2])
    assert isinstance(s.mean, float) and s.mean == 1.5 and s.std == pytest.approx(0.5)
    const = Standardizer.fit(np.array([[2.0, 1.0], [2.0, 3.0]]), axis=0)
    np.testing.assert_allclose(const.scale, [1.0, 1.0])  # std 0 scales by 1; std 1 stays 1
    assert Standardizer.fit(np.array([7.0]), min_std=1e-12).scale == 1.0
    t = torch.randn(20, 4)
    ts = Standardizer.fit(t[:10], 0, ddof=1)
    torch.testing.assert_close(ts.transform(t), (t - t[:10].mean(0)) / t[:10].std(0))
    assert Standardizer.fit(t[:10], 0).std.allclose(t[:10].std(0, correction=0))
