"""Fixtures of the model-family tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def f_dropout_draws(monkeypatch):
    """Keep-masks drawn as ``F.dropout`` draws its noise on CPU: ``bernoulli_(1 - p)`` over the elements in
    order, with the keep probability ``1 - p`` itself, in place of :mod:`models.layers.dropout`'s cheaper
    draws, wherever the models use them; so that a model can be compared, dropout on, with a computation
    that drops by ``F.dropout`` (the traffic model's first version, DeepBindNet's padded forward)."""
    from models.drug_target import model as drug_target_model
    from models.layers import dropout
    from models.traffic import model as traffic_model

    def bernoulli_mask(shape, keep, device=None):
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(keep)

    for module in (dropout, traffic_model, drug_target_model):
        monkeypatch.setattr(module, "keep_mask", bernoulli_mask)
        monkeypatch.setattr(module, "keep_prob", lambda p: 1.0 - p)
