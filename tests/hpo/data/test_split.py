"""hpo.data.split: seeded, disjoint, covering splits; groups kept together; chronological order; the two count rules."""

from __future__ import annotations

import numpy as np
import pytest

from hpo.data.split import chronological_split, cut, fewest_items, grouped_split, random_split, split_counts
from hpo.errors import DataError


def assert_partition(parts: dict, n: int) -> None:
    joined = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(joined.tolist()) == list(range(n))  # covering, and disjoint (no index twice)
    for ix in parts.values():
        assert np.all(np.diff(ix) > 0)  # sorted


@pytest.mark.parametrize("rule", ["round", "floor"])
def test_random_split_is_seeded_disjoint_and_covering(rule):
    a = random_split(101, 0.1, 0.2, seed=7, rule=rule)
    b = random_split(101, 0.1, 0.2, seed=7, rule=rule)
    c = random_split(101, 0.1, 0.2, seed=8, rule=rule)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    assert_partition(a, 101)


def test_counts_of_the_two_rules():
    assert split_counts(101, 0.1, 0.2, "round") == (10, 20)
    assert split_counts(101, 0.1, 0.2, "floor") == (10, 20)
    assert split_counts(9, 0.15, 0.15, "round") == (1, 1)  # round(1.35)
    assert split_counts(5, 0.01, 0.0, "round") == (1, 0)  # val at least 1
    assert split_counts(5, 0.01, 0.0, "floor") == (1, 0)  # a zero fraction takes nothing under floor
    sizes = {k: len(v) for k, v in random_split(101, 0.1, 0.2, seed=0).items()}
    assert sizes == {"train": 71, "val": 10, "test": 20}


def test_round_rule_takes_test_then_val_from_the_permutation():
    perm = np.random.default_rng(3).permutation(20)
    parts = random_split(20, 0.25, 0.25, seed=3)
    assert parts["test"].tolist() == sorted(perm[:5].tolist())
    assert parts["val"].tolist() == sorted(perm[5:10].tolist())


def test_floor_rule_takes_train_first_and_max_items_is_a_random_subset():
    perm = np.random.default_rng(3).permutation(30)[:20]
    parts = random_split(30, 0.1, 0.1, seed=3, rule="floor", max_items=20)
    assert parts["train"].tolist() == sorted(perm[:16].tolist())
    assert parts["test"].tolist() == sorted(perm[18:].tolist())
    assert sum(len(v) for v in parts.values()) == 20


def test_too_few_items_name_the_fewest():
    with pytest.raises(DataError, match=r"data.npz: must hold enough samples for val_fraction 0.1 and test_fraction 0.1 "
                                        r"to leave no split empty \(at least 6 samples\), but got 2 samples"):
        random_split(2, 0.1, 0.1, seed=0, label="data.npz")
    assert fewest_items(0.1, 0.1) == 6
    with pytest.raises(DataError, match=r"test_fraction 0 and val_fraction 0.1 .* \(the test split would be empty\)"):
        random_split(40, 0.1, 0.0, seed=0, what="pairs", fraction_order=("test_fraction", "val_fraction"))
    with pytest.raises(DataError, match=r"must hold at least 3 records so that no split is empty \(val_fraction 0.1, "
                                        r"test_fraction 0.1\), but got 2"):
        random_split(2, 0.1, 0.1, seed=0, rule="floor", what="records")


def test_grouped_split_keeps_every_group_in_one_part():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=300)
    parts = grouped_split(groups, 0.2, 0.2, seed=1)
    assert_partition(parts, 300)
    owner = {}
    for name, ix in parts.items():
        for g in np.unique(groups[ix]):
            assert owner.setdefault(int(g), name) == name
    n_groups = len(np.unique(groups))
    assert len(np.unique(groups[parts["test"]])) == round(0.2 * n_groups)
    again = grouped_split(groups, 0.2, 0.2, seed=1)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_grouped_split_over_string_labels_and_declared_codes():
    labels = np.array(["ann", "bob", "ann", "cy", "dee", "bob", "eve", "cy", "fay", "gus"])
    parts = grouped_split(labels, 0.2, 0.2, seed=0)
    assert_partition(parts, len(labels))
    codes = np.array([0, 0, 1, 1, 4, 4, 5, 6, 7, 8])  # codes 2 and 3 belong to no item but take part in the draw
    declared = grouped_split(codes, 0.2, 0.2, seed=0, n_groups=9)
    assert_partition(declared, len(codes))
    assert any(not np.array_equal(declared[k], grouped_split(codes, 0.2, 0.2, seed=0)[k]) for k in declared)


def test_chronological_split_is_consecutive_and_in_time_order():
    bounds = chronological_split(1000, 0.7, 0.1)
    assert bounds == {"train": (0, 700), "val": (700, 800), "test": (800, 1000)}
    b = chronological_split(7, 0.5, 0.25)  # round(3.5) = 4, round(1.75) = 2
    assert b["train"][1] == b["val"][0] and b["val"][1] == b["test"][0] and b["test"][1] == 7
    assert b["train"][0] < b["val"][0] < b["test"][0]


def test_cut_keeps_the_order_of_the_permutation():
    order = np.array([4, 1, 3, 0, 2, 5])
    parts = cut(order, {"train": 3, "val": 1})
    assert parts["train"].tolist() == [4, 1, 3] and parts["val"].tolist() == [0] and parts["test"].tolist() == [2, 5]
    parts = cut(order, {"test": 2, "val": 2})
    assert parts["test"].tolist() == [4, 1] and parts["val"].tolist() == [3, 0] and parts["train"].tolist() == [2, 5]
