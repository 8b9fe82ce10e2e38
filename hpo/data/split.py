"""Seeded splits of a dataset into train / val / test: random, grouped and chronological, one each.

:func:`random_split` shuffles ``n`` items with ``numpy.random.default_rng(seed)`` and cuts the order by
counts from the fractions; :func:`grouped_split` does the same over groups (every item of a group lands
in the part of its group: unseen faces, cold drugs); :func:`chronological_split` cuts a time axis into
consecutive ranges. Two count rules exist in the field and both are kept, so a family's split never
changes: ``"round"`` (test ``round(f n)``, val ``max(1, round(f n))``; the test part comes first in the
order) and ``"floor"`` (ALIGNN: ``max(1, floor(f n))`` for each fraction > 0; the training part comes
first). A fraction that leaves a part empty is a :class:`hpo.errors.DataError` naming the fewest items
that would do. Indices come back sorted, as numpy int64 arrays; :func:`cut` cuts a permutation drawn
elsewhere (e.g. by a generator that also made the data) into runs, keeping its order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Sequence

from hpo.errors import DataError

if TYPE_CHECKING:
    import numpy as np

Rule = Literal["round", "floor"]
NAMES = ("train", "val", "test")


def split_counts(n: int, val_fraction: float, test_fraction: float, rule: Rule = "round") -> tuple[int, int]:
    """``(n_val, n_test)`` of ``n`` items (or groups) under the count ``rule`` (see the module docstring)."""
    if rule == "round":
        return max(1, int(round(val_fraction * n))), int(round(test_fraction * n))
    n_val = max(1, math.floor(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, math.floor(test_fraction * n)) if test_fraction > 0 else 0
    return n_val, n_test


def fewest_items(val_fraction: float, test_fraction: float) -> int | None:
    """The fewest items for which no part is empty under the ``"round"`` rule (None when ``test_fraction``
    leaves the test part empty always)."""
    for n in range(3, 1_000_000):
        n_val, n_test = split_counts(n, val_fraction, test_fraction)
        if n_test >= 1 and n - n_val - n_test >= 1:
            return n
    return None


def _counts(n: int, val: float, test: float, rule: Rule, what: str, label: str, fraction_order: Sequence[str]) -> tuple[int, int]:
    """``(n_val, n_test)`` of ``n`` items, or a :class:`DataError` naming the fractions (in ``fraction_order``)
    and the items (``what``: samples, ids, pairs) when a part would be empty."""
    n_val, n_test = split_counts(n, val, test, rule)
    if (rule == "round" and n_test >= 1 or rule == "floor") and n - n_val - n_test >= 1:
        return n_val, n_test
    fractions = [(name, {"val_fraction": val, "test_fraction": test}[name]) for name in fraction_order]
    if rule == "floor":
        need = 1 + (val > 0) + (test > 0)
        raise DataError(f"{label}: must hold at least {need} {what} so that no split is empty "
                        f"({', '.join(f'{k} {v}' for k, v in fractions)}), but got {n}")
    fewest = fewest_items(val, test)
    need = f"at least {fewest} {what}" if fewest else "a larger test_fraction"
    raise DataError(f"{label}: must hold enough {what} for {' and '.join(f'{k} {v:g}' for k, v in fractions)} to leave no "
                    f"split empty ({need}), but got {n} {what} (the {'test' if n_test < 1 else 'training'} split would be empty)")


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int, *, rule: Rule = "round",
                 max_items: int | None = None, what: str = "samples", label: str = "task.dataset",
                 fraction_order: Sequence[str] = ("val_fraction", "test_fraction")) -> dict[str, "np.ndarray"]:
    """Shuffle ``n`` items with ``seed`` and cut the order into parts (sorted indices).

    ``rule="round"``: test, then val, then train along the permutation; ``rule="floor"``: the permutation is
    first cut to ``max_items`` (a random subset), then train, val, test. ``fraction_order`` orders the
    fractions in messages."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    if max_items is not None and max_items < n:
        order = order[:max_items]
    m = len(order)
    n_val, n_test = _counts(m, val_fraction, test_fraction, rule, what, label, fraction_order)
    parts = cut(order, {"test": n_test, "val": n_val} if rule == "round" else {"train": m - n_val - n_test, "val": n_val})
    return {name: np.sort(parts[name]).astype(np.int64) for name in NAMES}


def cut(order: Any, sizes: dict[str, int]) -> dict[str, Any]:
    """Consecutive runs of ``order`` (a permutation: numpy array or torch tensor), in the order ``sizes``
    names two parts; the third part of train / val / test takes the rest. Indices keep their order."""
    names = [*sizes, *(name for name in NAMES if name not in sizes)]
    a, b = sizes[names[0]], sizes[names[0]] + sizes[names[1]]
    return {names[0]: order[:a], names[1]: order[a:b], names[2]: order[b:]}


def grouped_split(groups: "np.ndarray", val_fraction: float, test_fraction: float, seed: int, *,
                  n_groups: int | None = None, what: str = "groups", label: str = "task.dataset",
                  fraction_order: Sequence[str] = ("val_fraction", "test_fraction")) -> dict[str, "np.ndarray"]:
    """Split the distinct groups at random (``rule="round"``) and send every item with its group.

    ``groups`` holds one label per item. With ``n_groups`` the labels are codes ``0 .. n_groups - 1``
    (codes that no item carries still take part in the draw); otherwise the distinct labels are the groups."""
    import numpy as np

    groups = np.asarray(groups)
    if n_groups is None:
        _, codes = np.unique(groups, return_inverse=True)
        n_groups = int(codes.max()) + 1 if len(codes) else 0
    else:
        codes = groups
    parts = random_split(n_groups, val_fraction, test_fraction, seed, what=what, label=label, fraction_order=fraction_order)
    assign = np.zeros(n_groups, dtype=np.int8)
    assign[parts["val"]], assign[parts["test"]] = 1, 2
    of_item = assign[codes]
    return {name: np.flatnonzero(of_item == k) for k, name in enumerate(NAMES)}


def chronological_split(n: int, train_fraction: float, val_fraction: float) -> dict[str, tuple[int, int]]:
    """``[start, stop)`` of each part of a time axis of ``n`` steps: the first ``round(train_fraction n)``
    steps train, the next ``round(val_fraction n)`` validate, the rest test (parts never overlap in time)."""
    n_train = int(round(n * train_fraction))
    n_val = int(round(n * val_fraction))
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
