"""The lighter traffic model (issue #17) computes what its first version computed.

``bench/legacy/traffic_v1.py`` is a frozen copy of ``models/traffic/model.py`` before the memory work. Built
from the same seed, both models have the same parameters under the same names; on a fixed seeded batch
their outputs and every parameter's gradient agree within 1e-5 (float32) and 1e-10 (float64), in eval
mode and in training mode with dropout, over fusion types, depths, positions, sensor-graph modes and the
other options of the config. In training mode the new model draws its keep-masks 15 bits an element
(``models.layers.dropout``), not as ``F.dropout`` draws them; here it draws them as ``F.dropout`` does
(``bernoulli_(1 - p)`` over the elements in order: the fixture ``f_dropout_draws`` of ``conftest.py``),
so that dropout drops the same elements in both and every other number can be compared. ``tests/models/test_dropout.py`` tests the draws.
The last tests check that the new model keeps far less for backward than the old one, and less again
with each ``recompute`` mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.legacy import traffic_v1 as old_model
from models.traffic import model as new_model
from models.traffic.config import RECOMPUTE_MODES, TrafficConfig

pytestmark = pytest.mark.usefixtures("f_dropout_draws")

SMALL = dict(embed_dim=8, num_heads=2, mlp_ratio=2.0, fusion_heads=2, dropout=0.2, fusion_dropout=0.2,
             temporal_depth_1=1, spatial_depth_1=1, temporal_depth_2=1, spatial_depth_2=1)

CONFIGS = {
    "gated": {},
    "seed_depths": dict(temporal_depth_1=2, spatial_depth_1=2, temporal_depth_2=2, spatial_depth_2=2),
    "uneven_depths": dict(temporal_depth_1=3, spatial_depth_1=1, temporal_depth_2=1, spatial_depth_2=2),
    "cross_attn_rotary": dict(fusion_type="cross_attn", positional_encoding_type="rotary"),
    "cross_attn_relative": dict(fusion_type="cross_attn", positional_encoding_type="relative", fusion_heads=4),
    "concat_learnable": dict(fusion_type="concat", positional_encoding_type="learnable"),
    "gated_residual_tanh_mask": dict(fusion_type="gated_residual", gate_activation="tanh", spatial_graph="mask",
                                     graph_hops=2),
    "adaptive_bias_no_node_emb": dict(fusion_type="adaptive", spatial_graph="bias", node_embedding=False),
    "droppath_attn_dropout": dict(stochastic_depth_rate=0.3, attn_dropout=0.1, mlp_ratio=1.5),
    "no_dropout": dict(dropout=0.0, fusion_dropout=0.0, fusion_type="cross_attn"),
}


def _ring(n):
    a = np.eye(n, dtype=np.float32)
    for i in range(n):
        a[i, (i + 1) % n] = 0.5
    return a


def _run(module, cfg, *, train, dtype=torch.float32, B=3, N=5, L=4, H=3, Ft=1):
    torch.manual_seed(0)
    model = module.TrafficTransformer(cfg, n_nodes=N, in_features=2, time_features=Ft, input_len=L, output_len=H,
                                      adj=_ring(N) if cfg.spatial_graph != "none" else None,
                                      scaler_mean=[50.0], scaler_std=[10.0]).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, L, N, 2, generator=g, dtype=dtype)
    tf = torch.rand(B, H, Ft, generator=g, dtype=dtype)
    model.train(train)
    torch.manual_seed(7)  # the dropout draws
    y = model(x, tf)
    (y * torch.linspace(-1.0, 1.0, y.numel(), dtype=dtype).view_as(y)).sum().backward()
    return model, y, {k: p.grad for k, p in model.named_parameters()}


def _assert_same(cfg, *, train, dtype, tol, **shape):
    old, y_old, g_old = _run(old_model, cfg, train=train, dtype=dtype, **shape)
    new, y_new, g_new = _run(new_model, cfg, train=train, dtype=dtype, **shape)
    assert list(old.state_dict()) == list(new.state_dict())
    for k, v in old.state_dict().items():
        assert torch.equal(v, new.state_dict()[k]), k
    assert y_new.shape == y_old.shape and y_new.is_contiguous()
    assert torch.allclose(y_new, y_old, rtol=tol, atol=tol), (y_new - y_old).abs().max()
    assert list(g_old) == list(g_new)
    for k in g_old:
        assert (g_old[k] is None) == (g_new[k] is None), k
        if g_old[k] is not None:
            assert torch.allclose(g_new[k], g_old[k], rtol=tol, atol=tol), (k, (g_new[k] - g_old[k]).abs().max())


@pytest.mark.parametrize("recompute", RECOMPUTE_MODES)
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_same_outputs_and_gradients_float32(name, train, recompute):
    """Whatever backward recomputes (``recompute``: none, attention, block), the numbers are the first version's:
    the recomputed forward replays the same dropout draws."""
    cfg = TrafficConfig(**{**SMALL, **CONFIGS[name], "recompute": recompute})
    _assert_same(cfg, train=train, dtype=torch.float32, tol=1e-5)


@pytest.mark.parametrize("name", ["gated", "cross_attn_relative", "gated_residual_tanh_mask", "droppath_attn_dropout"])
@pytest.mark.parametrize("recompute", RECOMPUTE_MODES)
def test_same_outputs_and_gradients_float64(name, recompute):
    """In float64 the two agree to rounding: the same arithmetic, not merely a close one."""
    cfg = TrafficConfig(**{**SMALL, **CONFIGS[name], "recompute": recompute})
    _assert_same(cfg, train=True, dtype=torch.float64, tol=1e-10)


def test_same_across_many_mlp_chunks(monkeypatch):
    """The feed-forward runs in row chunks; with chunks of a few rows (and a ragged last one) nothing changes."""
    monkeypatch.setattr(new_model, "MLP_CHUNK_ELEMENTS", 7 * 16)  # 7 rows of the 16-wide hidden layer
    _assert_same(TrafficConfig(**SMALL), train=True, dtype=torch.float64, tol=1e-10)
    _assert_same(TrafficConfig(**SMALL), train=False, dtype=torch.float32, tol=1e-5, B=2, N=6, L=3, H=2, Ft=0)


def test_old_checkpoint_loads_and_predicts_the_same():
    cfg = TrafficConfig(**SMALL)
    kw = dict(n_nodes=4, in_features=2, time_features=1, input_len=4, output_len=3)
    torch.manual_seed(3)
    old = old_model.TrafficTransformer(cfg, **kw).eval()
    new = new_model.TrafficTransformer(cfg, **kw).eval()
    new.load_state_dict(old.state_dict())  # strict
    x, tf = torch.randn(2, 4, 4, 2), torch.rand(2, 3, 1)
    with torch.no_grad():
        assert torch.allclose(new(x, tf), old(x, tf), rtol=1e-5, atol=1e-5)


def _saved_bytes(module, cfg, B=2, N=24, L=6, H=6):
    """Bytes of the distinct storages autograd keeps for backward after one training forward."""
    torch.manual_seed(0)
    model = module.TrafficTransformer(cfg, n_nodes=N, in_features=2, time_features=1, input_len=L, output_len=H).train()
    x, tf = torch.randn(B, L, N, 2), torch.rand(B, H, 1)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, tf)
    return sum(storages.values())


def test_keeps_far_less_for_backward():
    """The old model keeps ~23 token-sized tensors per block (permuted copies, float dropout noise, the
    feed-forward's hidden layer twice); the new one less than half of that."""
    cfg = TrafficConfig(embed_dim=16, num_heads=2, fusion_heads=2, recompute="none")
    old, new = _saved_bytes(old_model, cfg), _saved_bytes(new_model, cfg)
    assert new < 0.5 * old, (new, old)


def test_recomputing_keeps_less_for_backward():
    """``recompute: attention`` keeps a stream block's input instead of its normalised input, q, k, v and
    attention output (about half of what the block kept); ``block`` keeps only the input of each stream block.
    What autograd keeps includes the checkpoints' own inputs. The default keeps everything (``none``)."""
    kept = {r: _saved_bytes(new_model, TrafficConfig(embed_dim=16, num_heads=2, fusion_heads=2, recompute=r))
            for r in RECOMPUTE_MODES}
    assert TrafficConfig().recompute == "none"
    assert kept["attention"] < 0.6 * kept["none"], kept
    assert kept["block"] < 0.75 * kept["attention"], kept
    assert kept["block"] < 0.2 * _saved_bytes(old_model, TrafficConfig(embed_dim=16, num_heads=2, fusion_heads=2)), kept


def test_recompute_is_checked():
    with pytest.raises(ValueError, match=r"recompute must be one of none, attention, block, but got 'all'"):
        TrafficConfig(recompute="all")
