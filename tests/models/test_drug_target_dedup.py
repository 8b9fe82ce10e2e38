"""drug_target: the deduplicated, packed DeepBindNet forward (issue #17, item 4) computes what the padded,
per-pair forward computes: outputs and gradients within 1e-5 on batches with repeated proteins and drugs,
in training mode too (the same dropout masks: here the packed forward draws them by ``F.dropout``'s
``bernoulli_``, the fixture ``f_dropout_draws``, in place of its cheaper draws), with the same state_dict
keys; and it does less work: each distinct sequence is encoded and first-layer projected once, and
position-wise layers see real tokens only.
"""

from __future__ import annotations

import pytest
import torch

from models.drug_target.config import DeepBindConfig
from models.drug_target.data import PAD
from models.drug_target.model import DeepBindNet

VOCAB = {"smiles_vocab_size": 30, "protein_vocab_size": 26, "max_smiles_len": 14, "max_protein_len": 40}


def make_model(**overrides) -> DeepBindNet:
    cfg = {"hidden_dim": 16, "feature_dim": 32, "fusion_heads": 2, "fusion_layers": 2, "embed_dim": 8,
           "encoder_layers": 2, "encoder_heads": 2, "dropout_rate": 0.0, **overrides}
    torch.manual_seed(0)
    return DeepBindNet(DeepBindConfig(**cfg), **VOCAB, target_mean=6.0, target_std=0.5)


def fixed_batch():
    """3 distinct drugs and 4 distinct proteins of different lengths in 9 pairs: every drug and protein repeats."""
    g = torch.Generator().manual_seed(3)
    drug = torch.randint(2, 30, (3, 14), generator=g)
    drug[1, 9:] = PAD
    drug[2, 4:] = PAD
    protein = torch.randint(2, 26, (4, 40), generator=g)
    for row, length in ((0, 31), (2, 7), (3, 22)):  # row 1 fills the width
        protein[row, length:] = PAD
    drug_index = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 0])
    protein_index = torch.tensor([0, 0, 1, 2, 3, 3, 1, 2, 2])
    return drug, protein, drug_index, protein_index


def outputs_and_grads(model, *inputs, packed: bool, seed: int = 11):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks (training mode) come from here
    out = model(*inputs, packed=packed)
    (out * torch.linspace(-1.0, 2.0, len(out))).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("overrides", [
    {"gated": True}, {"gated": False}, {"fusion_layers": 1}, {"fusion_layers": 0}, {"fusion_layers": 3, "protein_pool": 3},
    {"drug_encoder": "transformer", "protein_encoder": "transformer"},
])
def test_dedup_gives_the_outputs_and_gradients_of_encoding_every_pair(overrides):
    model = make_model(**overrides).eval()
    drug, protein, di, pi = fixed_batch()
    per_pair = outputs_and_grads(model, drug[di], protein[pi], packed=False)  # today's computation, no dedup
    dedup = outputs_and_grads(model, drug, protein, di, pi, packed=True)  # the default forward
    assert_same(dedup, per_pair)
    assert_same(outputs_and_grads(model, drug, protein, di, pi, packed=False), per_pair)  # dedup'd, padded
    torch.testing.assert_close(model(drug, protein, di, pi), dedup[0])  # packed is the default


@pytest.mark.usefixtures("f_dropout_draws")
@pytest.mark.parametrize("gated", [True, False])
def test_training_mode_draws_the_same_dropout_masks(gated):
    """With dropout on, the packed forward drops the features the padded one drops (CPU generator): a
    training step is the same step, not just the same in expectation."""
    model = make_model(gated=gated, dropout_rate=0.3).train()
    drug, protein, di, pi = fixed_batch()
    padded = outputs_and_grads(model, drug[di], protein[pi], packed=False)
    packed = outputs_and_grads(model, drug, protein, di, pi, packed=True)
    assert_same(packed, padded)
    other = outputs_and_grads(model, drug, protein, di, pi, packed=True, seed=12)
    assert not torch.allclose(other[0], packed[0])  # dropout is on: another seed, other masks


def test_state_dict_keys_are_unchanged():
    """The packed forward reuses the modules: checkpoints load both ways (keys as on main before it)."""
    model = make_model(fusion_layers=1, encoder_layers=1)
    block = ["attn.q.weight", "attn.q.bias", "attn.kv.weight", "attn.kv.bias", "attn.out.weight", "attn.out.bias",
             "attn.gate.weight", "attn.gate.bias", "attn.norm.weight", "attn.norm.bias", "ff.0.weight", "ff.0.bias",
             "ff.3.weight", "ff.3.bias", "norm2.weight", "norm2.bias"]
    expected = ["target_mean", "target_std"]
    expected += [f"{side}_encoder.{k}" for side in ("drug", "protein") for k in ("embed.weight", "convs.0.weight", "convs.0.bias")]
    expected += [f"fusion.0.{side}.{k}" for side in ("drug_from_protein", "protein_from_drug") for k in block]
    expected += [f"head.{i}.{k}" for i in (0, 3, 6) for k in ("weight", "bias")]
    assert list(model.state_dict()) == expected


def test_each_distinct_sequence_is_projected_once_and_position_wise_layers_see_real_tokens_only():
    model = make_model(fusion_layers=2).eval()
    drug, protein, di, pi = fixed_batch()
    rows = {}

    def record(name):
        return lambda module, args, out: rows.setdefault(name, []).append(tuple(args[0].shape))

    hooks = [model.protein_encoder.register_forward_hook(record("protein_encoder")),
             model.fusion[0].drug_from_protein.attn.kv.register_forward_hook(record("kv0")),
             model.fusion[1].protein_from_drug.ff[0].register_forward_hook(record("ff1")),
             model.fusion[1].drug_from_protein.ff[0].register_forward_hook(record("ff1_drug"))]
    model(drug, protein, di, pi)
    real_protein = int((protein != PAD).sum(1)[pi].sum())
    real_drug = int((drug != PAD).sum(1)[di].sum())
    assert rows["protein_encoder"] == [(4, 40)]  # 4 distinct proteins encoded, not 9
    assert rows["kv0"] == [(4, 40, 16)]  # the first layer's protein keys/values: once per distinct protein
    assert rows["ff1"] == [(real_protein, 16)]  # 9 pairs' real protein tokens, no padding
    assert rows["ff1_drug"] == [(real_drug, 16)]
    assert real_protein < 9 * 40 and real_drug < 9 * 14
    rows.clear()
    model(drug, protein, di, pi, packed=False)
    assert rows["ff1"] == [(9, 40, 16)]  # the padded computation: every pair padded to the longest
    for h in hooks:
        h.remove()


@pytest.mark.usefixtures("f_dropout_draws")
def test_a_grouped_training_step_of_the_task_equals_the_padded_step():
    """The task's step (packed) on a batch from a few proteins (``batch_proteins``) gives the loss and the
    gradients of the padded per-pair computation, dropout on."""
    from hpo.tasks import get_task

    Task = get_task("drug_target")
    spec = Task.DatasetSpec.model_validate({"format": "synthetic", "n_drugs": 12, "n_proteins": 10,
                                            "smiles_length": [6, 16], "protein_length": [10, 30]})
    task = Task(spec)
    _, model_cfg, data_cfg = Task.split_config({**Task.presets["tiny"], "dropout_rate": 0.2, "fusion_layers": 2,
                                                "batch_proteins": 2})
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits).train()
    batch = next(iter(task.loader(splits, "train", 12, shuffle=True, seed=0)))
    assert batch["protein"].shape[0] < 12 and batch["drug"].shape[0] < 12  # proteins and drugs repeat

    def step(per_pair: bool):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        if per_pair:
            z = model(batch["drug"][batch["drug_index"]], batch["protein"][batch["protein_index"]], packed=False)
            loss = torch.nn.functional.mse_loss(z, model.scale(batch["y"]))
        else:
            loss = task.step(model, batch, train=True).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    assert_same(step(False), step(True))
