"""The cheaper dropout draws of :mod:`models.layers.dropout`: the keep probability they stand for, that
every 15-bit field of a random word is a fair draw, independent of its neighbours, reproducible from the
seed, replayed by the traffic model's recomputed forward (``recompute``), and drawn by DeepBindNet's
packed forward."""

from __future__ import annotations

import math

import pytest
import torch

from models.layers import dropout as fast
from models.traffic import model as traffic_model
from models.traffic.config import RECOMPUTE_MODES, TrafficConfig


def _within(rate: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(rate - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def test_keep_prob_is_one_minus_p_to_15_bits():
    for p in (0.0, 1e-3, 0.004, 0.1, 0.2, 0.25, 0.5, 0.9):
        keep = fast.keep_prob(p)
        assert abs(keep - (1 - p)) <= 2.0**-16
        assert (keep * 2**15).is_integer()
    assert fast.keep_prob(0.1) == 29491 / 32768
    assert fast.keep_prob(0.0) == 1.0 and fast.keep_prob(1e-5) == 1.0  # below half a step: nothing dropped
    assert fast.keep_prob(1.0) == 2.0**-15


@pytest.mark.parametrize("keep", [0.5, fast.keep_prob(0.1), fast.keep_prob(0.004)])
def test_keep_mask_keeps_at_its_rate_in_every_field(monkeypatch, keep):
    """Each of the four 16-bit fields of a word keeps at the rate (the top one's top bit is always 0 from
    ``random_``, the others' must be cleared); chunk boundaries and a ragged end included."""
    monkeypatch.setattr(fast, "WORDS_PER_CHUNK", 1000)
    n = 4 * 150_000 + 3
    torch.manual_seed(0)
    m = fast.keep_mask((n,), keep)
    assert m.dtype == torch.bool and m.shape == (n,) and m.is_contiguous()
    assert _within(m.float().mean().item(), keep, n)
    fields = m[: n - 3].view(-1, 4)
    for k in range(4):
        assert _within(fields[:, k].float().mean().item(), keep, len(fields)), k


def test_keep_mask_draws_are_independent():
    """Neighbours from one word and from adjacent words are kept together at ``keep**2``; the shape is kept."""
    keep = fast.keep_prob(0.3)
    torch.manual_seed(1)
    m = fast.keep_mask((400, 300), keep).reshape(-1).float()
    same_word = m.view(-1, 4)
    both = {f"fields {k},{k + 1}": same_word[:, k] * same_word[:, k + 1] for k in range(3)}
    both.update({"next word": same_word[:-1, 3] * same_word[1:, 0], "lag 7": m[:-7] * m[7:]})
    for name, b in both.items():
        assert _within(b.mean().item(), keep * keep, len(b)), name
    assert fast.keep_mask((2, 3, 5), 0.5).shape == (2, 3, 5)
    assert fast.keep_mask((7,), 1.0).all()


def test_keep_mask_follows_the_seed():
    torch.manual_seed(5)
    a = fast.keep_mask((1000,), 0.5)
    b = fast.keep_mask((1000,), 0.5)
    torch.manual_seed(5)
    assert torch.equal(fast.keep_mask((1000,), 0.5), a)
    assert not torch.equal(a, b)


def test_dropout_is_unbiased_and_backward_uses_the_same_mask():
    p = 0.3
    keep = fast.keep_prob(p)
    x = torch.full((300_000,), 2.0, requires_grad=True)
    y = fast.dropout(x, p, True)
    kept = y != 0
    assert torch.allclose(y[kept], torch.tensor(2.0 / keep))
    assert _within(kept.float().mean().item(), keep, x.numel())
    assert abs(y.mean().item() - 2.0) < 5 * 2.0 * math.sqrt((1 - keep) / keep / x.numel())  # E[y] = x
    g = torch.randn_like(x)
    y.backward(g)
    assert torch.allclose(x.grad, torch.where(kept, g / keep, 0.0))
    assert fast.dropout(x, p, False) is x and fast.dropout(x, 0.0, True) is x


def _train_step(cfg, dtype=torch.float64):
    torch.manual_seed(0)
    model = traffic_model.TrafficTransformer(cfg, n_nodes=5, in_features=2, time_features=1, input_len=4,
                                             output_len=3).to(dtype).train()
    g = torch.Generator().manual_seed(1)
    x, tf = torch.randn(3, 4, 5, 2, generator=g, dtype=dtype), torch.rand(3, 3, 1, generator=g, dtype=dtype)
    torch.manual_seed(7)
    y = model(x, tf)
    y.square().sum().backward()
    return y, {k: p.grad for k, p in model.named_parameters()}


def test_traffic_recompute_replays_the_draws():
    """``recompute`` re-runs blocks in backward; their dropout draws are replayed, so every mode gives the
    same outputs and gradients, and dropout is on (training differs from the model without it)."""
    small = dict(embed_dim=8, num_heads=2, mlp_ratio=2.0, fusion_heads=2, dropout=0.2, fusion_dropout=0.0,
                 temporal_depth_1=1, spatial_depth_1=2, temporal_depth_2=1, spatial_depth_2=1)
    y0, g0 = _train_step(TrafficConfig(**small, recompute="none"))
    for mode in RECOMPUTE_MODES:
        y, grads = _train_step(TrafficConfig(**small, recompute=mode))
        assert torch.allclose(y, y0, rtol=1e-10, atol=1e-10), mode
        for k in g0:
            assert (grads[k] is None) == (g0[k] is None), (mode, k)
            if g0[k] is not None:
                assert torch.allclose(grads[k], g0[k], rtol=1e-10, atol=1e-10), (mode, k)
    y_off, _ = _train_step(TrafficConfig(**{**small, "dropout": 0.0}, recompute="none"))
    assert not torch.allclose(y_off, y0)


def test_deepbindnet_packed_forward_drops_with_the_cheap_draws(monkeypatch):
    """The packed fusion's dropouts draw from :func:`keep_mask` (one seed gives one step, another seed
    another), three masks per fusion block in training mode and none in eval mode."""
    from models.drug_target import model as drug_target_model
    from tests.models.test_drug_target_dedup import fixed_batch, make_model

    model = make_model(gated=True, dropout_rate=0.3, fusion_layers=2).train()
    drug, protein, di, pi = fixed_batch()
    drawn = []

    def counting(shape, keep, device=None):
        drawn.append((tuple(shape), keep))
        return fast.keep_mask(shape, keep, device)

    monkeypatch.setattr(drug_target_model, "keep_mask", counting)

    def out(seed):
        torch.manual_seed(seed)
        return model(drug, protein, di, pi)

    assert torch.equal(out(3), out(3)) and not torch.allclose(out(3), out(4))
    assert len(drawn) == 4 * 2 * 2 * 3  # 4 forwards x 2 layers x 2 blocks x (attention, feed-forward hidden, output)
    assert {keep for _, keep in drawn} == {fast.keep_prob(0.3)}
    drawn.clear()
    model.eval()
    out(3)
    assert drawn == []
