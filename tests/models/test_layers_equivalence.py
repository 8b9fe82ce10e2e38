"""Numerical equivalence of the shared layers (``models.layers``) with the family code they replaced.

The reference classes below (``Old...``) are frozen copies of the implementations as they were before
the merge: ``CrossAttention``, ``MiddleFusion``, ``FineGrainedAttention`` and ``CrossModalAttention`` of
``models/crystal_text/layers.py``; ``MultiHeadCrossAttention``, ``CrossAttentionBlock`` and ``FusionLayer``
of ``models/drug_target/model.py``; ``Fusion`` of ``models/traffic/model.py`` (now the shared fusion
blocks, and ``CrossAttnFusion`` for ``cross_attn``).
Do not edit them to follow later changes: they are the measure the shared code is held to.

For each family's shapes, plain and gated, with and without key padding: the same seed gives the same
initial weights (so seeded studies train the same), an old state dict loads into the new module (so old
checkpoints load), and outputs and gradients agree in float64, in eval mode and in train mode with dropout
(the random draws are made in the same order).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from models.crystal_text.layers import CrossModalAttention, FineGrainedAttention, MiddleFusion  # noqa: E402
from models.drug_target.model import CrossAttentionBlock, FusionLayer  # noqa: E402
from models.layers import CrossAttention  # noqa: E402

TOL = {"rtol": 1e-12, "atol": 1e-12}


# -- frozen references: crystal_text/layers.py before the merge ---------------------------------------
class OldCrystalCrossAttention(nn.Module):
    def __init__(self, query_features, kv_features, hidden, heads, dropout, gated=False):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"attention width {hidden} must be divisible by the number of heads {heads}")
        self.heads, self.dropout_p = heads, dropout
        self.q = nn.Linear(query_features, hidden)
        self.kv = nn.Linear(kv_features, 2 * hidden)
        self.out = nn.Linear(hidden, query_features)
        self.gate = nn.Linear(2 * query_features, query_features) if gated else None
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(query_features)

    def forward(self, query, kv, kv_mask):
        B, Q, _ = query.shape
        K = kv.size(1)
        q = self.q(query).view(B, Q, self.heads, -1).transpose(1, 2)
        k, v = self.kv(kv).view(B, K, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=kv_mask[:, None, None, :],
                                           dropout_p=self.dropout_p if self.training else 0.0)
        a = self.dropout(self.out(a.transpose(1, 2).reshape(B, Q, -1)))
        if self.gate is not None:
            a = torch.sigmoid(self.gate(torch.cat([query, a], dim=-1))) * a
        return self.norm(query + a)


class OldMiddleFusion(nn.Module):
    def __init__(self, atom_features, text_features, hidden, heads, dropout):
        super().__init__()
        self.attn = OldCrystalCrossAttention(atom_features, text_features, hidden, heads, dropout, gated=True)

    def forward(self, atoms, tokens, token_mask):
        return self.attn(atoms, tokens, token_mask)


class OldFineGrainedAttention(nn.Module):
    def __init__(self, atom_features, text_features, hidden, heads, dropout):
        super().__init__()
        self.atoms_to_text = OldCrystalCrossAttention(atom_features, text_features, hidden, heads, dropout)
        self.text_to_atoms = OldCrystalCrossAttention(text_features, atom_features, hidden, heads, dropout)

    def forward(self, atoms, atom_mask, tokens, token_mask):
        return self.atoms_to_text(atoms, tokens, token_mask), self.text_to_atoms(tokens, atoms, atom_mask)


class OldCrossModalAttention(nn.Module):
    def __init__(self, atom_features, text_features, hidden, heads, dropout, gated):
        super().__init__()
        self.graph_to_text = OldCrystalCrossAttention(atom_features, text_features, hidden, heads, dropout, gated)
        self.text_to_graph = OldCrystalCrossAttention(text_features, atom_features, hidden, heads, dropout, gated)

    def forward(self, graph, text, atoms, atom_mask, tokens, token_mask):
        g = self.graph_to_text(graph.unsqueeze(1), tokens, token_mask).squeeze(1)
        t = self.text_to_graph(text.unsqueeze(1), atoms, atom_mask).squeeze(1)
        return g, t


# -- frozen references: drug_target/model.py before the merge -----------------------------------------
class OldMultiHeadCrossAttention(nn.Module):
    def __init__(self, hidden_dim, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden_dim, hidden_dim)
        self.kv = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x, y, y_mask):
        (b, lx, h), ly, nh = x.shape, y.shape[1], self.heads
        q = self.q(x).view(b, lx, nh, h // nh).transpose(1, 2)
        k, v = self.kv(y).view(b, ly, 2, nh, h // nh).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=y_mask[:, None, None, :])
        return self.out(a.transpose(1, 2).reshape(b, lx, h))


class OldDrugCrossAttentionBlock(nn.Module):
    def __init__(self, hidden_dim, heads, ff_mult, dropout, gated):
        super().__init__()
        self.attn = OldMultiHeadCrossAttention(hidden_dim, heads)
        self.gate = nn.Linear(2 * hidden_dim, hidden_dim) if gated else None
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.ff = nn.Sequential(nn.Linear(hidden_dim, ff_mult * hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * hidden_dim, hidden_dim))
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, y, y_mask):
        a = self.dropout(self.attn(x, y, y_mask))
        if self.gate is not None:
            a = torch.sigmoid(self.gate(torch.cat([x, a], dim=-1))) * a
        x = self.norm1(x + a)
        return self.norm2(x + self.dropout(self.ff(x)))


class OldDrugFusionLayer(nn.Module):
    def __init__(self, hidden_dim, heads, ff_mult, dropout, gated):
        super().__init__()
        self.drug_from_protein = OldDrugCrossAttentionBlock(hidden_dim, heads, ff_mult, dropout, gated)
        self.protein_from_drug = OldDrugCrossAttentionBlock(hidden_dim, heads, ff_mult, dropout, gated)

    def forward(self, d, p, d_mask, p_mask):
        return self.drug_from_protein(d, p, p_mask), self.protein_from_drug(p, d, d_mask)


#: old drug_target key -> new key, inside one CrossAttentionBlock
DRUG_RENAMES = (("gate.", "attn.gate."), ("norm1.", "attn.norm."))


def old_to_new_drug_keys(state: dict) -> dict:
    """The old drug_target layout renamed to the new one (every block of a state dict)."""
    out = {}
    for key, value in state.items():
        for old, new in DRUG_RENAMES:
            head, sep, tail = key.rpartition(old)
            if sep and (not head or head.endswith(".")) and not head.endswith("attn."):
                key = head + new + tail
                break
        out[key] = value
    return out


# -- helpers ------------------------------------------------------------------------------------------
def build_pair(old_cls, new_cls, args, kwargs_old=None, kwargs_new=None, seed=0):
    """Old and new module built from the same seed, in float64."""
    torch.manual_seed(seed)
    old = old_cls(*args, **(kwargs_old or {})).double()
    torch.manual_seed(seed)
    new = new_cls(*args, **(kwargs_new or {})).double()
    return old, new


def padding_mask(batch, length, padded, seed=1):
    """(B, K) bool, True = attend; with ``padded`` every row but the first loses a random tail (>= 1 kept)."""
    mask = torch.ones(batch, length, dtype=torch.bool)
    if padded:
        g = torch.Generator().manual_seed(seed)
        for i in range(1, batch):
            mask[i, int(torch.randint(1, length + 1, (1,), generator=g)):] = False
        mask[-1, 1:] = False  # one row with a single key
    return mask


def inputs(*shapes, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


def assert_same_state(old_state, new_state):
    assert list(old_state) == list(new_state), "parameter names or order differ"
    for key in old_state:
        assert torch.equal(old_state[key], new_state[key]), key


def run_and_grads(module, args):
    """Forward, a fixed scalar of the outputs backwards; returns outputs, input grads, parameter grads."""
    out = module(*args)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(loss, tensors + list(module.parameters()), allow_unused=True)
    return outs, grads


def assert_equivalent(old, new, args_old, args_new=None, *, train=False, seed=3):
    old.train(train)
    new.train(train)
    torch.manual_seed(seed)
    outs_old, grads_old = run_and_grads(old, args_old)
    torch.manual_seed(seed)
    outs_new, grads_new = run_and_grads(new, args_old if args_new is None else args_new)
    assert len(outs_old) == len(outs_new)
    for a, b in zip(outs_old, outs_new):
        assert a.shape == b.shape
        assert torch.allclose(a, b, **TOL), (a - b).abs().max()
    assert len(grads_old) == len(grads_new)
    for a, b in zip(grads_old, grads_new):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, **TOL), (a - b).abs().max()


# -- crystal_text -------------------------------------------------------------------------------------
#: (query_features, kv_features, hidden, heads): atoms -> tokens and tokens -> atoms of the tiny preset,
#: and of the default model widths
CRYSTAL_SHAPES = [(16, 16, 16, 2), (32, 24, 16, 4), (24, 32, 8, 1)]


@pytest.mark.parametrize("shape", CRYSTAL_SHAPES)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("n_queries", [1, 5])
def test_crystal_cross_attention(shape, gated, padded, n_queries):
    qf, kvf, hidden, heads = shape
    old, new = build_pair(OldCrystalCrossAttention, CrossAttention, (qf, kvf, hidden, heads, 0.0), {"gated": gated}, {"gated": gated})
    assert_same_state(old.state_dict(), new.state_dict())
    new.load_state_dict(old.state_dict())
    B, K = 3, 7
    query, kv = inputs((B, n_queries, qf), (B, K, kvf))
    mask = padding_mask(B, K, padded)
    assert_equivalent(old, new, (query, kv, mask))
    if not padded:  # no mask at all is the same as attending to every key
        assert_equivalent(old, new, (query, kv, mask), (query, kv, None))


@pytest.mark.parametrize("gated", [False, True])
def test_crystal_cross_attention_train_mode_dropout(gated):
    old, new = build_pair(OldCrystalCrossAttention, CrossAttention, (16, 12, 16, 2, 0.3), {"gated": gated}, {"gated": gated})
    query, kv = inputs((3, 5, 16), (3, 6, 12))
    assert_equivalent(old, new, (query, kv, padding_mask(3, 6, True)), train=True)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_crystal_fusion_modules(padded, train):
    H, D, hidden, heads, p = 16, 24, 16, 2, 0.2
    B, Na, T = 3, 5, 6
    atoms, tokens, graph, text = inputs((B, Na, H), (B, T, D), (B, H), (B, D))
    atom_mask, token_mask = padding_mask(B, Na, padded, seed=4), padding_mask(B, T, padded, seed=5)

    old, new = build_pair(OldMiddleFusion, MiddleFusion, (H, D, hidden, heads, p))
    assert_same_state(old.state_dict(), new.state_dict())
    assert_equivalent(old, new, (atoms, tokens, token_mask), train=train)

    old, new = build_pair(OldFineGrainedAttention, FineGrainedAttention, (H, D, hidden, heads, p))
    assert_same_state(old.state_dict(), new.state_dict())
    assert_equivalent(old, new, (atoms, atom_mask, tokens, token_mask), train=train)

    for gated in (False, True):
        old, new = build_pair(OldCrossModalAttention, CrossModalAttention, (H, D, hidden, heads, p, gated))
        assert_same_state(old.state_dict(), new.state_dict())
        assert_equivalent(old, new, (graph, text, atoms, atom_mask, tokens, token_mask), train=train)


# -- drug_target --------------------------------------------------------------------------------------
#: (hidden_dim, heads, ff_mult): the tiny preset and the default config
DRUG_SHAPES = [(16, 2, 2), (32, 8, 2), (12, 3, 1)]


@pytest.mark.parametrize("shape", DRUG_SHAPES)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_drug_cross_attention_block(shape, gated, padded):
    H, heads, ff = shape
    old, new = build_pair(OldDrugCrossAttentionBlock, CrossAttentionBlock, (H, heads, ff, 0.0, gated))
    assert_same_state(old_to_new_drug_keys(old.state_dict()), new.state_dict())
    new.load_state_dict(old.state_dict())  # the old layout loads (strict)
    B, Lx, Ly = 3, 9, 4
    x, y = inputs((B, Lx, H), (B, Ly, H))
    assert_equivalent(old, new, (x, y, padding_mask(B, Ly, padded)))


@pytest.mark.parametrize("gated", [False, True])
def test_drug_fusion_layer_train_mode_dropout(gated):
    H, heads, ff = 16, 2, 2
    old, new = build_pair(OldDrugFusionLayer, FusionLayer, (H, heads, ff, 0.25, gated))
    assert_same_state(old_to_new_drug_keys(old.state_dict()), new.state_dict())
    new.load_state_dict(old.state_dict())
    d, p = inputs((3, 6, H), (3, 11, H))
    args = (d, p, padding_mask(3, 6, True, seed=6), padding_mask(3, 11, True, seed=7))
    assert_equivalent(old, new, args, train=False)
    assert_equivalent(old, new, args, train=True)


@pytest.mark.parametrize("gated", [False, True])
def test_deepbindnet_loads_an_old_layout_checkpoint(gated):
    """A whole DeepBindNet state dict in the layout written before the merge loads strictly and predicts the same."""
    from models.drug_target.config import DeepBindConfig
    from models.drug_target.model import DeepBindNet

    cfg = DeepBindConfig(hidden_dim=16, feature_dim=32, fusion_heads=2, fusion_layers=2, embed_dim=16,
                         encoder_layers=1, encoder_heads=2, dropout_rate=0.0, gated=gated)
    kw = {"smiles_vocab_size": 30, "protein_vocab_size": 26, "max_smiles_len": 12, "max_protein_len": 20}
    torch.manual_seed(0)
    model = DeepBindNet(cfg, **kw).eval()
    new_state = model.state_dict()
    old_state = {}
    for key, value in new_state.items():
        for old, new in DRUG_RENAMES:  # fusion.<i>.<direction>.attn.gate.weight -> fusion.<i>.<direction>.gate.weight
            if key.startswith("fusion.") and "." + new in key:
                key = key.replace("." + new, "." + old)
                break
        old_state[key] = value
    assert any(".norm1." in k for k in old_state) and not any(".attn.norm." in k for k in old_state)
    torch.manual_seed(1)
    fresh = DeepBindNet(cfg, **kw).eval()
    fresh.load_state_dict(old_state)  # strict
    drug = torch.randint(1, 30, (4, 12))
    drug[1:, 8:] = 0
    protein = torch.randint(1, 26, (4, 20))
    protein[2:, 5:] = 0
    assert torch.equal(model(drug, protein), fresh(drug, protein))


# -- traffic: models/traffic/model.py's Fusion before the merge ----------------------------------------
class OldTrafficFusion(nn.Module):
    def __init__(self, cfg):
        from models.traffic.model import Attention, Mlp

        super().__init__()
        D, kind = cfg.embed_dim, cfg.fusion_type
        self.kind = kind
        if kind == "gated":
            self.w_t, self.w_s = nn.Linear(D, D, bias=False), nn.Linear(D, D)
        elif kind == "concat":
            self.proj = nn.Linear(2 * D, D)
        elif kind == "cross_attn":
            positions = cfg.positional_encoding_type if cfg.positional_encoding_type in ("relative", "rotary") else None
            self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
            self.attn = Attention(D, cfg.fusion_heads, cfg.fusion_dropout, positions, cfg.max_relative_position)
            self.mlp = Mlp(D, cfg.mlp_ratio, cfg.fusion_dropout)
        elif kind == "gated_residual":
            self.gate = nn.Linear(2 * D, D)
            self.value = nn.Linear(D, D)
            self.act = torch.sigmoid if cfg.gate_activation == "sigmoid" else torch.tanh
        elif kind == "adaptive":
            self.logits = nn.Parameter(torch.zeros(2, D))
        else:
            raise ValueError(f"unknown fusion_type {kind!r}")
        self.norm = nn.LayerNorm(D)

    def forward(self, t, s, pos=None):
        if self.kind == "gated":
            z = torch.sigmoid(self.w_t(t) + self.w_s(s))
            h = z * t + (1 - z) * s
        elif self.kind == "concat":
            h = self.proj(torch.cat([t, s], dim=-1))
        elif self.kind == "cross_attn":
            B, T, N, D = t.shape
            tq = t.permute(0, 2, 1, 3).reshape(B * N, T, D)
            sk = s.permute(0, 2, 1, 3).reshape(B * N, T, D)
            h = tq + self.attn(self.norm_q(tq), self.norm_kv(sk), pos, pos)
            h = h + self.mlp(self.norm_mlp(h))
            h = h.view(B, N, T, D).permute(0, 2, 1, 3)
        elif self.kind == "gated_residual":
            g = self.act(self.gate(torch.cat([t, s], dim=-1)))
            h = t + g * self.value(s)
        else:
            w = torch.softmax(self.logits, dim=0)
            h = w[0] * t + w[1] * s
        return self.norm(h)


#: old traffic key -> new key, inside one Stage's fusion
TRAFFIC_RENAMES = (("w_t.", "w_a."), ("w_s.", "w_b."))

TRAFFIC_FUSIONS = [("gated", "sigmoid", "fixed"), ("concat", "sigmoid", "fixed"), ("cross_attn", "sigmoid", "rotary"),
                   ("cross_attn", "sigmoid", "relative"), ("gated_residual", "sigmoid", "fixed"),
                   ("gated_residual", "tanh", "fixed"), ("adaptive", "sigmoid", "fixed")]


def _traffic_cfg(kind, act, pe):
    from models.traffic.config import TrafficConfig

    return TrafficConfig(embed_dim=8, num_heads=2, mlp_ratio=1.0, fusion_heads=2, dropout=0.0, fusion_type=kind,
                         gate_activation=act, positional_encoding_type=pe, fusion_dropout=0.2)


@pytest.mark.parametrize("kind, act, pe", TRAFFIC_FUSIONS)
@pytest.mark.parametrize("train", [False, True])
def test_traffic_stream_fusion(kind, act, pe, train):
    from models.traffic.model import CrossAttnFusion, make_stream_fusion

    cfg = _traffic_cfg(kind, act, pe)
    old, new = build_pair(OldTrafficFusion, make_stream_fusion, (cfg,))
    renamed = {}
    for key, value in old.state_dict().items():
        for a, b in TRAFFIC_RENAMES:
            key = b + key[len(a):] if key.startswith(a) else key
        renamed[key] = value
    assert_same_state(renamed, new.state_dict())
    t, s = inputs((2, 5, 3, 8), (2, 5, 3, 8))
    pos = torch.arange(5)
    if isinstance(new, CrossAttnFusion):
        assert_equivalent(old, new, (t, s, pos), train=train)
    else:
        assert_equivalent(old, new, (t, s, pos), (t, s), train=train)


@pytest.mark.parametrize("kind", ["gated", "concat"])
def test_traffic_model_loads_an_old_layout_checkpoint(kind):
    """A TrafficTransformer state dict in the layout written before the merge loads strictly and predicts the same."""
    from models.traffic.model import TrafficTransformer

    cfg = _traffic_cfg(kind, "sigmoid", "fixed")
    kw = {"n_nodes": 3, "in_features": 2, "time_features": 1, "input_len": 4, "output_len": 2}
    torch.manual_seed(0)
    model = TrafficTransformer(cfg, **kw).eval()
    old_state = {}
    for key, value in model.state_dict().items():
        for old, new in TRAFFIC_RENAMES:
            key = key.replace(".fusion." + new, ".fusion." + old)
        old_state[key] = value
    assert (kind == "gated") == any(".fusion.w_t." in k for k in old_state)
    torch.manual_seed(1)
    fresh = TrafficTransformer(cfg, **kw).eval()
    fresh.load_state_dict(old_state)  # strict
    x, tf = torch.randn(2, 4, 3, 2), torch.rand(2, 2, 1)
    assert torch.equal(model(x, tf), fresh(x, tf))
