"""Unit tests of the shared layers (``models.layers``): shapes, key masks, the gate, gradients, errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.layers import FUSIONS, CrossAttention, GatedResidualFusion, make_fusion  # noqa: E402


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _mask(batch, length):
    """(B, K) bool with row i keeping its first ``K - i`` keys (>= 1)."""
    keep = torch.arange(length)[None, :] < (length - torch.arange(batch))[:, None].clamp_min(1)
    return keep


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("qf, kvf, hidden, heads, Q, K", [(8, 8, 8, 1, 5, 5), (12, 6, 16, 4, 1, 7), (6, 10, 4, 2, 9, 3)])
@pytest.mark.parametrize("batch", [1, 3])
def test_cross_attention_shapes(gated, qf, kvf, hidden, heads, Q, K, batch):
    attn = CrossAttention(qf, kvf, hidden, heads, gated=gated).eval()
    out = attn(_randn(batch, Q, qf), _randn(batch, K, kvf, seed=1), _mask(batch, K))
    assert out.shape == (batch, Q, qf)
    assert torch.isfinite(out).all()
    assert (attn.gate is not None) == gated
    assert {n.split(".")[0] for n, _ in attn.named_parameters()} == {"q", "kv", "out", "norm"} | ({"gate"} if gated else set())


def test_widths_default_to_the_query_width():
    attn = CrossAttention(10, heads=2)
    assert (attn.q.in_features, attn.kv.in_features, attn.q.out_features, attn.out.out_features) == (10, 10, 10, 10)


@pytest.mark.parametrize("gated", [False, True])
def test_a_masked_key_changes_nothing(gated):
    torch.manual_seed(0)
    attn = CrossAttention(8, 6, 8, 2, dropout=0.5, gated=gated).eval()
    B, Q, K = 3, 4, 6
    query, kv, mask = _randn(B, Q, 8), _randn(B, K, 6, seed=1), _mask(B, K)
    out = attn(query, kv, mask)
    changed = torch.where(mask[..., None], kv, 100 * _randn(B, K, 6, seed=2))  # only the masked keys change
    assert not torch.equal(changed, kv)
    assert torch.allclose(attn(query, changed, mask), out, rtol=0, atol=1e-6)
    kept = kv.clone()
    kept[:, 0] += 1.0  # an attended key does change the output
    assert not torch.allclose(attn(query, kept, mask), out, atol=1e-4)


def test_no_mask_attends_to_every_key():
    torch.manual_seed(0)
    attn = CrossAttention(8, 8, 8, 2).eval()
    query, kv = _randn(2, 3, 8), _randn(2, 5, 8, seed=1)
    full = torch.ones(2, 5, dtype=torch.bool)
    assert torch.allclose(attn(query, kv), attn(query, kv, full), atol=1e-6)


def test_gate_lies_in_zero_one_and_scales_the_attended_values():
    torch.manual_seed(0)
    attn = CrossAttention(8, 8, 8, 2, gated=True).eval()
    with torch.no_grad():
        attn.gate.weight.mul_(50.0)  # push the gate to its extremes
    query, kv, mask = 10 * _randn(4, 5, 8), 10 * _randn(4, 6, 8, seed=1), _mask(4, 6)
    a = attn.attend(query, kv, mask)
    g = attn.gate_values(query, a)
    assert g.shape == a.shape
    assert ((g >= 0) & (g <= 1)).all()
    assert (g < 0.01).any() and (g > 0.99).any()
    assert torch.allclose(attn(query, kv, mask), attn.norm(query + g * a), atol=1e-6)


def test_plain_block_has_no_gate():
    attn = CrossAttention(8)
    with pytest.raises(RuntimeError, match="gated=False"):
        attn.gate_values(_randn(1, 2, 8), _randn(1, 2, 8))


@pytest.mark.parametrize("gated", [False, True])
def test_gradients_reach_every_cross_attention_parameter(gated):
    torch.manual_seed(0)
    attn = CrossAttention(8, 6, 12, 3, dropout=0.1, gated=gated).train()
    query = _randn(2, 4, 8).requires_grad_()
    kv = _randn(2, 5, 6, seed=1).requires_grad_()
    (attn(query, kv, _mask(2, 5)) * _randn(2, 4, 8, seed=2)).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert query.grad.abs().sum() > 0 and kv.grad.abs().sum() > 0


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="divisible by the number of heads 3"):
        CrossAttention(8, 8, 8, 3)


# -- fusion -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(FUSIONS))
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("shape", [(4, 8), (2, 3, 5, 8)])
def test_fusion_shapes_and_gradients(kind, norm, shape):
    torch.manual_seed(0)
    block = make_fusion(kind, 8, norm=norm)
    a, b = _randn(*shape).requires_grad_(), _randn(*shape, seed=1).requires_grad_()
    out = block(a, b)
    assert out.shape == shape
    (out * _randn(*shape, seed=2)).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(n.startswith("norm.") for n, _ in block.named_parameters()) == norm


def test_fusion_maths():
    torch.manual_seed(0)
    a, b = _randn(3, 8), _randn(3, 8, seed=1)
    assert torch.equal(make_fusion("sum", 8)(a, b), a + b)
    assert torch.allclose(make_fusion("adaptive", 8)(a, b), (a + b) / 2)  # zero logits: an even mix
    gated = make_fusion("gated", 8)
    z = torch.sigmoid(gated.w_a(a) + gated.w_b(b))
    assert torch.allclose(gated(a, b), z * a + (1 - z) * b)
    concat = make_fusion("concat", 8)
    assert torch.allclose(concat(a, b), concat.proj(torch.cat([a, b], -1)))
    for act, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        res = make_fusion("gated_residual", 8, gate_activation=act)
        assert torch.allclose(res(a, b), a + fn(res.gate(torch.cat([a, b], -1))) * res.value(b))


def test_gated_fusion_gate_lies_in_zero_one():
    """The output is a per-feature convex mix of the inputs."""
    torch.manual_seed(0)
    gated = make_fusion("gated", 8)
    a, b = 20 * _randn(5, 8), 20 * _randn(5, 8, seed=1)
    out = gated(a, b)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    assert ((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()


def test_unknown_fusion_lists_the_choices():
    with pytest.raises(ValueError, match="unknown fusion 'mean': choose one of concat, gated, sum, gated_residual, adaptive"):
        make_fusion("mean", 8)
    with pytest.raises(ValueError, match="gate_activation must be one of sigmoid, tanh, but got 'relu'"):
        GatedResidualFusion(8, gate_activation="relu")
