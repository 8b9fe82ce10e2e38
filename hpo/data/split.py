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

Fixed splits, for results set beside a benchmark's: :func:`read_split_file` reads a ``split_file`` (a JARVIS
leaderboard JSON ``{"train": {id: target}, "val": ..., "test": ...}``, lists of ids or row indices, ALIGNN's
``ids_train_val_test.json``, or a CSV of ``id,split`` rows) and checks its shape, :func:`explicit_split`
matches its entries to a dataset's ids (or row indices), :func:`labels_split` reads a ``split_field``
(one ``train`` / ``val`` / ``test`` per record), :func:`alignn_split` is ALIGNN's own seeded random split, and
:func:`matbench_split` is a Matbench v0.1 fold (sklearn's ``KFold(5, shuffle=True, random_state=18012019)``,
reproduced by :func:`kfold_test_indices` without sklearn) with a validation part carved from its training rows.
Their errors read ``file: task.dataset.split_file: what must hold, but got X``.
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


# ------------------------------------------------------------------------------------ explicit splits
#: how split files and split fields may name a part (ALIGNN's ids_train_val_test.json uses id_train ...)
SPLIT_NAMES = {"train": "train", "id_train": "train", "val": "val", "valid": "val", "validation": "val",
               "id_val": "val", "test": "test", "id_test": "test"}
SPLIT_FILE_KEY = "task.dataset.split_file"
SPLIT_FIELD_KEY = "task.dataset.split_field"
_FILE_SHAPES = ('a JSON object {"train": ..., "val": ..., "test": ...} whose values are lists of ids (or row indices) '
                "or objects keyed by id (the JARVIS leaderboard's shape), or a CSV of 'id,split' rows")


def _more(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def read_split_file(path: Any) -> dict[str, list[Any]]:
    """The entries (ids or row indices, as written) of each part ``train`` / ``val`` / ``test`` of a split
    file, in file order. JSON: an object with the three parts (``id_train`` ... and ``valid`` are read too)
    whose values are lists, or objects keyed by id (the JARVIS leaderboard's ``{"train": {id: target}}``);
    CSV: rows ``id,split`` with an optional header row. A file that is missing or malformed, a part that is
    missing or empty, an entry listed twice or in two parts is a :class:`DataError`
    ``path: task.dataset.split_file: what must hold, but got X``."""
    import csv
    import json
    from pathlib import Path

    path = Path(path)
    at = f"{path}: {SPLIT_FILE_KEY}"
    if not path.is_file():
        raise DataError(f"{at}: must be an existing file ({_FILE_SHAPES}), but got {path} (no such file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{at}: must be a readable UTF-8 file, but got {type(e).__name__}: {e}") from None
    parts: dict[str, list[Any]] = {}
    if path.suffix.lower() == ".csv":
        try:
            rows = [(k + 1, row) for k, row in enumerate(csv.reader(text.splitlines())) if any(c.strip() for c in row)]
        except csv.Error as e:
            raise DataError(f"{at}: must be a CSV of 'id,split' rows, but got {e}") from None
        if rows and len(rows[0][1]) == 2 and rows[0][1][1].strip().lower() not in SPLIT_NAMES:
            rows = rows[1:]  # a header row, e.g. "id,split"
        bad = [f"row {line} = {','.join(row)!r}" for line, row in rows
               if len(row) != 2 or not row[0].strip() or row[1].strip().lower() not in SPLIT_NAMES]
        if bad:
            raise DataError(f"{at}: must be 'id,split' rows with split one of train, val, test, but got {_more(bad)}")
        for _, (ident, name) in rows:
            parts.setdefault(SPLIT_NAMES[name.strip().lower()], []).append(ident.strip())
    else:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError, ValueError) as e:
            raise DataError(f"{at}: must be {_FILE_SHAPES}, but got invalid JSON ({str(e)[:120]})") from None
        if not isinstance(data, dict):
            raise DataError(f"{at}: must be {_FILE_SHAPES}, but got a JSON {type(data).__name__}")
        unknown = [repr(k) for k in data if k not in SPLIT_NAMES]
        if unknown:
            raise DataError(f"{at}: must have only the keys train, val, test (or id_train, id_val, id_test), but got {_more(unknown)}")
        for key, value in data.items():
            name = SPLIT_NAMES[key]
            if name in parts:
                raise DataError(f"{at}: must name each split once, but got {name} twice (as {key!r})")
            if isinstance(value, dict):
                value = list(value)
            if not isinstance(value, list) or any(isinstance(v, (bool, dict, list)) or v is None for v in value):
                raise DataError(f"{at}: {key} must be a list of ids or row indices, or an object keyed by id, "
                                f"but got {json.dumps(value)[:80]}")
            parts[name] = value
    missing = [name for name in NAMES if not parts.get(name)]
    if missing:
        raise DataError(f"{at}: must list at least one entry in each of train, val and test, but got "
                        + ", ".join(f"{'an empty' if name in parts else 'no'} {name} split" for name in missing))
    seen: dict[str, str] = {}
    dup: list[str] = []
    for name in NAMES:
        for entry in parts[name]:
            key = str(entry)
            if key in seen:
                dup.append(f"{key!r} in {seen[key]}{' again' if seen[key] == name else f' and {name}'}")
            else:
                seen[key] = name
    if dup:
        raise DataError(f"{at}: must list each entry once, in one split (splits must not overlap), but got {_more(dup)}")
    return {name: parts[name] for name in NAMES}


def labels_split(labels: Sequence[Any], label: str, ids: Sequence[Any] | None = None) -> dict[str, "np.ndarray"]:
    """Sorted indices of each part from one label per item (``train`` / ``val`` / ``test``, or an alias).
    An item whose label names no split, or a part left empty, is a :class:`DataError` naming ``label``
    (``file: task.dataset.split_field``)."""
    import numpy as np

    codes = np.full(len(labels), -1, dtype=np.int8)
    bad: list[str] = []
    for i, value in enumerate(labels):
        name = SPLIT_NAMES.get(str(value).strip().lower()) if isinstance(value, (str, int)) else None
        if name is None:
            bad.append(f"record {i}{f' (id {ids[i]})' if ids is not None else ''} = {value!r}")
        else:
            codes[i] = NAMES.index(name)
    if bad:
        raise DataError(f"{label}: {SPLIT_FIELD_KEY}: every record's value must be train, val or test, but got {_more(bad)}")
    parts = {name: np.flatnonzero(codes == k).astype(np.int64) for k, name in enumerate(NAMES)}
    empty = [name for name in NAMES if not len(parts[name])]
    if empty:
        raise DataError(f"{label}: {SPLIT_FIELD_KEY}: must give at least one record to each of train, val and test, "
                        f"but got none in {', '.join(empty)}")
    return parts


def explicit_split(parts: dict[str, list[Any]], n: int, ids: Sequence[Any] | None, label: str,
                   what: str = "records", file: Any = None) -> dict[str, "np.ndarray"]:
    """Sorted indices of each part of a split file's entries (:func:`read_split_file`) over ``n`` items:
    matched to ``ids`` (as strings) when the data has ids, else 0-based row indices ``0 .. n - 1``.
    An entry that names no item (or an id that several items share) is a :class:`DataError`
    ``file: task.dataset.split_file: ...`` (``file``: the split file, else ``label``, the data); items the
    file does not list take part in no split."""
    import logging

    import numpy as np

    at = f"{file or label}: {SPLIT_FILE_KEY}"
    what = f"{what} of {label}" if file else what
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    if ids is not None:
        index: dict[str, int] = {}
        shared: set[str] = set()
        for i, ident in enumerate(ids):
            key = str(ident)
            if key in index:
                shared.add(key)
            index[key] = i
        ambiguous = sorted({str(e) for entries in parts.values() for e in entries} & shared)
        if ambiguous:
            raise DataError(f"{at}: must name ids that one record each carries, but got ids shared by several {what}: "
                            f"{_more([repr(a) for a in ambiguous])}")
        for name in NAMES:
            found = [index.get(str(e)) for e in parts[name]]
            unknown += [f"{e!r} ({name})" for e, i in zip(parts[name], found) if i is None]
            out[name] = np.sort(np.asarray([i for i in found if i is not None], dtype=np.int64))
        if unknown:
            raise DataError(f"{at}: must name ids of the {what} ({n} usable; e.g. {', '.join(repr(str(i)) for i in list(ids)[:3])}), "
                            f"but got {len(unknown)} unknown: {_more(unknown)}")
    else:
        for name in NAMES:
            rows = []
            for e in parts[name]:
                try:
                    i = int(e) if not isinstance(e, float) or e.is_integer() else None
                except (TypeError, ValueError):
                    i = None
                if i is None or not 0 <= i < n:
                    unknown.append(f"{e!r} ({name})")
                else:
                    rows.append(i)
            out[name] = np.sort(np.asarray(rows, dtype=np.int64))
        if unknown:
            raise DataError(f"{at}: must name row indices 0 .. {n - 1} of the {what} (they have no ids), "
                            f"but got {len(unknown)} out of range or not integers: {_more(unknown)}")
        if any(len(set(out[name].tolist())) != len(out[name]) for name in NAMES):
            raise DataError(f"{at}: must list each row once, but got a row twice (as 1 and 1.0?)")
    unused = n - sum(len(v) for v in out.values())
    if unused:
        logging.getLogger(__name__).info("%s: %d of %d %s are in no split of %s (not used)", label, unused, n, what,
                                         SPLIT_FILE_KEY)
    return out


def alignn_split(n: int, split_seed: int = 123, train_ratio: float | None = None, val_ratio: float = 0.1,
                 test_ratio: float = 0.1, *, label: str = "task.dataset", what: str = "usable records") -> dict[str, "np.ndarray"]:
    """ALIGNN's random split (``alignn.data.get_id_train_val_test``, keep_data_order false), reproduced
    exactly: ``list(range(n))`` shuffled by Python's ``random.seed(split_seed); random.shuffle``; ``n_train =
    int(train_ratio n)`` (``train_ratio`` None: ``1 - val_ratio - test_ratio``), ``n_val = int(val_ratio n)``,
    ``n_test = int(test_ratio n)``; train is the first ``n_train`` of the order, val the ``n_val`` before the
    last ``n_test``, test the last ``n_test`` (items between train and val are in no split). The global
    ``random`` state is left alone. Sorted indices; an empty part is a :class:`DataError`."""
    import random

    import numpy as np

    if train_ratio is None:
        train_ratio = 1 - val_ratio - test_ratio
    n_train, n_test, n_val = int(train_ratio * n), int(test_ratio * n), int(val_ratio * n)
    order = list(range(n))
    random.Random(split_seed).shuffle(order)
    if n_train + n_val + n_test > n:
        raise DataError(f"{label}: task.dataset.split: alignn needs n_train + n_val + n_test <= the {what}, but got "
                        f"{n_train} + {n_val} + {n_test} > {n}")
    parts = {"train": order[:n_train],
             "val": order[-(n_val + n_test):-n_test] if n_test > 0 else order[-(n_val + n_test):] if n_val else [],
             "test": order[-n_test:] if n_test > 0 else []}
    empty = [name for name in NAMES if not parts[name]]
    if empty:
        raise DataError(f"{label}: task.dataset.split: alignn must leave no split empty (int(fraction x {n}) {what} each), but got "
                        f"an empty {', '.join(empty)} split (train {n_train}, val {n_val}, test {n_test})")
    return {name: np.sort(np.asarray(parts[name], dtype=np.int64)) for name in NAMES}


# ------------------------------------------------------------------------------------ matbench folds
#: Matbench v0.1's folds: ``sklearn.model_selection.KFold(n_splits=5, shuffle=True, random_state=18012019)``
#: over the dataset's rows (matbench's regression tasks; its classification tasks stratify)
MATBENCH_FOLDS = 5
MATBENCH_SEED = 18012019


def kfold_test_indices(n: int, n_splits: int = MATBENCH_FOLDS, seed: int = MATBENCH_SEED) -> list["np.ndarray"]:
    """The test indices of each fold of ``sklearn.model_selection.KFold(n_splits, shuffle=True,
    random_state=seed)`` over ``n`` rows, reproduced without sklearn: ``arange(n)`` shuffled in place by
    ``numpy.random.RandomState(seed)`` (sklearn's ``check_random_state``); fold ``k`` is the next
    ``n // n_splits`` rows of that order, one more for the first ``n % n_splits`` folds. Sorted int64
    arrays (sklearn returns each fold's test part sorted too)."""
    import numpy as np

    if n_splits < 2 or n < n_splits:
        raise DataError(f"KFold needs 2 <= n_splits <= n, but got n_splits {n_splits} over {n} rows")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_splits, n // n_splits, dtype=np.int64)
    sizes[: n % n_splits] += 1
    stops = np.cumsum(sizes)
    return [np.sort(order[stop - size:stop]).astype(np.int64) for size, stop in zip(sizes, stops)]


def matbench_split(n: int, fold: int, val_fraction: float, split_seed: int, *, label: str = "task.dataset",
                   what: str = "usable records") -> dict[str, "np.ndarray"]:
    """Matbench v0.1 fold ``fold`` (0 .. 4) of ``n`` rows: its test part (:func:`kfold_test_indices`) is the
    test split; the validation split is carved from the fold's training rows (the other four folds):
    ``max(1, floor(val_fraction n_rest))`` of them (none when ``val_fraction`` is 0), drawn by
    ``numpy.random.default_rng(split_seed)``; the rest trains. Sorted int64 indices."""
    import numpy as np

    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < MATBENCH_FOLDS:
        raise DataError(f"{label}: task.dataset.fold: must be an integer 0 .. {MATBENCH_FOLDS - 1} (a matbench fold), "
                        f"but got {fold!r}")
    if n < 2 * MATBENCH_FOLDS:
        raise DataError(f"{label}: task.dataset.split: matbench must split at least {2 * MATBENCH_FOLDS} {what} (5 folds, and a "
                        f"fold's training rows hold both train and val), but got {n}")
    test = kfold_test_indices(n)[int(fold)]
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), test)
    n_val = max(1, math.floor(val_fraction * len(rest))) if val_fraction > 0 else 0
    if n_val >= len(rest):
        raise DataError(f"{label}: task.dataset.val_fraction: must leave training rows in matbench fold {fold} "
                        f"({len(rest)} rows outside its test part), but got {val_fraction:g} ({n_val} val rows)")
    order = np.random.default_rng(split_seed).permutation(len(rest))
    val = rest[order[:n_val]]
    train = rest[order[n_val:]]
    return {"train": np.sort(train).astype(np.int64), "val": np.sort(val).astype(np.int64), "test": test}
