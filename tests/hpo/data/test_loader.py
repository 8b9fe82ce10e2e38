"""hpo.data.loader: the seeded index batcher visits every index once per pass."""

from __future__ import annotations

import torch

from hpo.data.loader import IndexBatcher


def one_pass(batcher) -> list[int]:
    return torch.cat(list(batcher)).tolist()


def test_every_index_once_per_epoch_and_epochs_differ():
    b = IndexBatcher(103, 10, shuffle=True, seed=5)
    assert len(b) == 11
    first, second = one_pass(b), one_pass(b)
    assert sorted(first) == sorted(second) == list(range(103))
    assert first != second
    assert [len(x) for x in b][-1] == 3


def test_seeded_runs_repeat():
    a, b = IndexBatcher(50, 8, shuffle=True, seed=1), IndexBatcher(50, 8, shuffle=True, seed=1)
    assert [one_pass(a), one_pass(a)] == [one_pass(b), one_pass(b)]
    assert one_pass(IndexBatcher(50, 8, shuffle=True, seed=2)) != one_pass(IndexBatcher(50, 8, shuffle=True, seed=1))
    g = torch.Generator().manual_seed(1)
    assert one_pass(IndexBatcher(50, 8, shuffle=True, seed=1)) == torch.randperm(50, generator=g).tolist()


def test_unshuffled_order_and_given_indices():
    assert one_pass(IndexBatcher(7, 3, shuffle=False)) == list(range(7))
    starts = torch.arange(0, 20, 3)
    b = IndexBatcher(0, 4, shuffle=True, seed=0, indices=starts)
    assert len(b) == 2 and sorted(one_pass(b)) == starts.tolist()
    assert one_pass(IndexBatcher(0, 4, shuffle=False, indices=starts)) == starts.tolist()


def test_a_subclass_orders_its_own_way():
    class Reversed(IndexBatcher):
        def order(self):
            return self.indices.flip(0)

    assert one_pass(Reversed(5, 2, shuffle=False)) == [4, 3, 2, 1, 0]
