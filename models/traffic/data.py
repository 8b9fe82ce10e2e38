"""Reading, scaling and windowing traffic series (everything here runs once per study, then is cached).

A series is a (T time steps, N sensors) matrix of readings in which **0 marks a missing reading**
(DCRNN's convention for METR-LA / PEMS-BAY). Anything else that is not a finite number - NaN, inf, an
empty or non-numeric CSV cell - is an error naming the file, row and sensor (never turned into 0), as
are ragged CSV rows, object arrays, truncated files and adjacencies of the wrong shape: every reader
raises :class:`hpo.errors.DataError` as ``file: where: what must hold, but got X``.

Nothing in a data file is ever run: ``.npz``/``.npy`` are read with ``allow_pickle=False``, pickles
with :mod:`hpo.data.safe_pickle`, and HDF5 files with h5py, reading only the numeric arrays of pandas'
frame layout (PyTables, and so ``pandas.read_hdf``, unpickles node attributes and object columns as
soon as it opens a node).

Pipeline for the single-series formats (``dcrnn_h5``, ``csv``, ``synthetic``):

1. read the matrix, its timestamps (if any), its sensor ids (if any) and the adjacency, in data order;
2. cut the *time axis* chronologically into train / val / test (``train_frac``, ``val_frac``, rest);
   windows never cross a cut, so no reading of a later part is ever an input or target of an
   earlier one (DCRNN instead windows first and then splits the windows, which lets the first val
   windows see training targets; here the parts are disjoint in time);
3. fit a z-score scaler on the *observed* (non-zero) readings of the train part only;
4. build input features per step: the scaled signal (missing -> 0, i.e. the mean) plus, optionally,
   the time of day in [0, 1) and the day of week / 7;
5. windows: every start ``s`` of a part gives inputs ``s .. s+L-1`` and targets ``s+L .. s+L+H-1``.

Windows are not materialised (METR-LA would take ~0.7 GB as float32 windows); each part keeps its
(T_part, N, F) feature tensor and gathers a batch of windows on demand.
``dcrnn_npz`` files hold windows already; they are scaled the same way (train statistics only).
"""

from __future__ import annotations

import io
import logging
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from hpo.data.loader import IndexBatcher
from hpo.data.safe_pickle import load_data_pickle
from hpo.data.scaling import Standardizer
from hpo.data.split import chronological_split
from hpo.errors import DataError

if TYPE_CHECKING:
    import torch

    from models.traffic.config import TrafficDataConfig
    from models.traffic.datasets import (
        CsvDataset,
        DcrnnH5Dataset,
        DcrnnNpzDataset,
        PemsNpzDataset,
        SyntheticDataset,
        TrafficDataset,
    )

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------
# windows and batches
# ------------------------------------------------------------------------------------------------
class SeriesWindows:
    """Every window of one chronological part of a series.

    Args:
        x: (T, N, F) input features per step (feature 0 = scaled signal, then time features).
        y: (T, N) readings in data units, 0 = missing (the targets).
        tf: (T, F_t) time features per step (F_t may be 0); those of the forecast steps are given to
            the decoder.
        input_len, output_len: L and H.

    A batch (:meth:`batch`) is a dict: ``x`` (B, L, N, F), ``y`` (B, H, N), ``tf`` (B, H, F_t).
    """

    def __init__(self, x: "torch.Tensor", y: "torch.Tensor", tf: "torch.Tensor", input_len: int, output_len: int) -> None:
        self.x, self.y, self.tf = x, y, tf
        self.input_len, self.output_len = input_len, output_len
        self.n_windows = max(0, x.shape[0] - input_len - output_len + 1)

    def __len__(self) -> int:
        return self.n_windows

    def batch(self, idx: "torch.Tensor") -> dict:
        import torch

        L, H = self.input_len, self.output_len
        t_in = idx[:, None] + torch.arange(L)  # (B, L)
        t_out = idx[:, None] + L + torch.arange(H)  # (B, H)
        return {"x": self.x[t_in], "y": self.y[t_out], "tf": self.tf[t_out]}


class ArrayWindows:
    """Windows stored as arrays (``dcrnn_npz``): ``x`` (S, L, N, F), ``y`` (S, H, N), ``tf`` (S, H, F_t)."""

    def __init__(self, x: "torch.Tensor", y: "torch.Tensor", tf: "torch.Tensor") -> None:
        self.x, self.y, self.tf = x, y, tf

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, idx: "torch.Tensor") -> dict:
        return {"x": self.x[idx], "y": self.y[idx], "tf": self.tf[idx]}


class WindowLoader(IndexBatcher):
    """Batches of windows in time order, or shuffled by a generator seeded once with ``seed`` (each
    pass draws a new permutation from it, so a run is reproducible and epochs differ); with ``stride``
    k only every k-th window start is visited."""

    def __init__(self, windows, batch_size: int, *, shuffle: bool, seed: int = 0, stride: int = 1) -> None:
        import torch

        starts = torch.arange(0, len(windows), stride)  # every stride-th window start
        super().__init__(len(starts), batch_size, shuffle=shuffle, seed=seed, indices=starts)
        self.windows, self.stride = windows, stride

    def __iter__(self):
        for ix in self.batches():
            yield self.windows.batch(ix)


# ------------------------------------------------------------------------------------------------
# the raw series and the pipeline
# ------------------------------------------------------------------------------------------------
@dataclass
class RawSeries:
    values: np.ndarray  # (T, N) float32 readings, 0 = missing
    times: Optional[np.ndarray]  # (T,) datetime64 or None when the file has no clock
    sensor_ids: Optional[list[str]]  # N ids in column order, or None (headerless CSV)
    adj: Optional[np.ndarray]  # (N, N) float32 in column order, or None


def load_splits(spec: "TrafficDataset", dcfg: "TrafficDataConfig", target: Optional[str] = None):
    """Read ``spec`` and build the :class:`hpo.tasks.Splits` (uncached; the task caches it).
    ``target`` names the channel of a ``pems_npz`` file (the other formats hold one signal)."""
    if spec.format == "dcrnn_npz":
        return _npz_splits(spec, dcfg)
    if spec.format == "dcrnn_h5":
        raw = read_h5(spec)
    elif spec.format == "csv":
        raw = read_csv(spec)
    elif spec.format == "pems_npz":
        raw = read_pems_npz(spec, target)
    elif spec.format == "synthetic":
        raw = generate_synthetic(spec)
    else:  # the spec validates the name
        raise DataError(f"unknown traffic format {spec.format!r}")
    if raw.adj is None and getattr(spec, "adj", None) is not None:
        raw.adj = read_adjacency(spec, raw.sensor_ids, raw.values.shape[1])
    return series_splits(raw, spec, dcfg)


def series_splits(raw: RawSeries, spec: Any, dcfg: "TrafficDataConfig"):
    """Chronological split, train-only scaler, time features and windows of one series."""
    import torch

    from hpo.tasks import Splits

    label = _label(spec)
    values = np.asarray(raw.values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] == 0:
        raise _bad(label, "readings", "must be a time x sensors matrix with at least one sensor", f"shape {values.shape}")
    check_readings(values, label, raw.sensor_ids, kind="time step")  # every reader checks; this is the net
    T, N = values.shape
    L, H = dcfg.input_len, dcfg.output_len
    bounds = chronological_split(T, spec.train_frac, spec.val_frac)
    n_train = bounds["train"][1]
    short = [f"{name} {b - a}" for name, (a, b) in bounds.items() if b - a < L + H]
    if short:
        raise _bad(label, "time steps", f"each chronological part (train_frac {spec.train_frac}, val_frac "
                   f"{spec.val_frac}, the rest test) must hold at least input_len + output_len = {L + H} steps, so "
                   f"that it has a window; use a longer series or other fractions", f"{T} steps in all: {', '.join(short)}")

    mean, std = fit_scaler(values[:n_train], dcfg.scaler, label)
    tf = time_features(raw.times, T, dcfg, label)  # (T, F_t)
    scaled = np.where(values != 0, (values - mean) / std, 0.0).astype(np.float32)
    x = np.concatenate([scaled[:, :, None], np.broadcast_to(tf[:, None, :], (T, N, tf.shape[1]))], axis=2)

    parts = {}
    for name, (a, b) in bounds.items():
        parts[name] = SeriesWindows(torch.from_numpy(np.ascontiguousarray(x[a:b])),
                                    torch.from_numpy(np.ascontiguousarray(values[a:b])),
                                    torch.from_numpy(np.ascontiguousarray(tf[a:b])), L, H)
    info = _info(raw.sensor_ids, raw.adj, N, x.shape[2], tf.shape[1], dcfg, mean, std)
    info.update(split_steps={k: b - a for k, (a, b) in bounds.items()},
                start_time=str(raw.times[0]) if raw.times is not None else None)
    return Splits(parts["train"], parts["val"], parts["test"], info=info)


def _label(spec: Any) -> str:
    """How messages name a dataset: its file or folder."""
    for field in ("path", "dir"):
        if getattr(spec, field, None) is not None:
            return str(getattr(spec, field))
    return "task.dataset"


def fit_scaler(train_values: np.ndarray, kind: str, file: Any = "task.dataset") -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the observed (non-zero) training readings: shape (1,) for ``global``, (N,) for
    ``per_node`` (a sensor never observed in training falls back to the global statistics)."""
    obs = train_values != 0
    if not obs.any():
        raise _bad(file, "the train part", "must hold observed (non-zero) readings to fit the scaler",
                   f"{train_values.size} readings, all 0 (missing)")
    overall = Standardizer.fit(train_values[obs], min_std=1e-6)
    g_mean, g_std = overall.mean, overall.scale
    if kind == "global":
        return np.array([g_mean], np.float32), np.array([g_std], np.float32)
    n_obs = obs.sum(0)
    s = np.where(obs, train_values, 0.0).sum(0)
    mean = np.where(n_obs > 0, s / np.maximum(n_obs, 1), g_mean)
    var = np.where(obs, (train_values - mean) ** 2, 0.0).sum(0) / np.maximum(n_obs, 1)
    std = np.sqrt(var)
    std = np.where((n_obs > 1) & (std > 1e-6), std, g_std)
    return mean.astype(np.float32), std.astype(np.float32)


def time_features(times: Optional[np.ndarray], T: int, dcfg, file: Any = "task.dataset") -> np.ndarray:
    """(T, F_t) float32: time of day in [0, 1) and/or day of week / 7, as ``dcfg`` asks."""
    cols = []
    if dcfg.time_of_day or dcfg.day_of_week:
        if times is None:
            raise _bad(file, "timestamps", "time features need timestamps (for time_of_day, day_of_week): give the CSV a "
                       "time_column or the dataset a start, or set time_of_day and day_of_week to false", "none")
        import pandas as pd

        idx = pd.DatetimeIndex(times)
        if dcfg.time_of_day:
            cols.append(((idx - idx.normalize()) / pd.Timedelta(days=1)).to_numpy(np.float64))
        if dcfg.day_of_week:
            cols.append(idx.day_of_week.to_numpy(np.float64) / 7.0)
    if not cols:
        return np.zeros((T, 0), np.float32)
    return np.stack(cols, axis=1).astype(np.float32)


def _info(ids, adj, n_nodes, in_features, time_feats, dcfg, mean, std) -> dict:
    return {
        "n_nodes": int(n_nodes),
        "in_features": int(in_features),
        "time_features": int(time_feats),
        "input_len": dcfg.input_len,
        "output_len": dcfg.output_len,
        "sensor_ids": list(ids) if ids is not None else None,
        "adj": adj,
        "scaler_mean": np.asarray(mean, np.float32),
        "scaler_std": np.asarray(std, np.float32),
        "scaler": dcfg.scaler,
    }


# ------------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------------
def _bad(file: Any, where: str, must: str, got: str) -> DataError:
    """The one form of a data error: ``file: where: what must hold, but got X``."""
    return DataError(f"{file}: {where}: {must}, but got {got}")


def check_readings(values: np.ndarray, file: Any, ids: Optional[Sequence[str]] = None, *, kind: str = "row",
                   offset: int = 0, lines: Optional[Sequence[int]] = None) -> None:
    """Readings (T x N) must be finite numbers (0 marks a missing reading): name the first bad cells as
    ``<kind> <row + offset>`` (or ``line <lines[row]>``), with their column and sensor."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows, cols = np.nonzero(bad)

    def cell(r: int, c: int) -> str:
        row = f"line {lines[r]}" if lines is not None else f"{kind} {r + offset}"
        return row + f", column {c + 1}" + (f" (sensor {ids[c]})" if ids is not None and c < len(ids) else "")

    pairs = list(zip(rows[:5].tolist(), cols[:5].tolist()))
    items = "; ".join(f"{cell(r, c)} = {values[r, c]}" for r, c in pairs)
    more = f" (and {rows.size - 5} more)" if rows.size > 5 else ""
    raise _bad(file, cell(*pairs[0]), "readings must be finite numbers (0 marks a missing reading)", items + more)


# -- HDF5 (pandas' HDFStore layout), read with h5py: nothing in the file is ever unpickled ------------
# PyTables unpickles every pickled node attribute as soon as a node is opened (pandas' HDFStore, even
# `keys()`, opens them all) and object columns on reading; h5py hands back raw bytes and arrays.
def _h5_file(path: Path):
    try:
        import h5py
    except ImportError:  # pragma: no cover - a dependency of the package
        raise DataError(f"{path}: reading dcrnn_h5 files needs h5py (pip install h5py)") from None
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise _bad(path, "file", "must be a complete HDF5 file written by pandas (DCRNN's metr-la.h5)",
                   f"a file h5py cannot open ({str(e)[:160]})") from None


def _attr(node, name: str, default: Any = None) -> Any:
    """A node attribute as text or number (pickled values stay bytes, never unpickled)."""
    if name not in node.attrs:
        return default
    try:
        v = node.attrs[name]
    except (OSError, TypeError, ValueError):
        return default
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def _h5_keys(f) -> list[str]:
    keys = []

    def visit(name, obj):
        if hasattr(obj, "keys") and "pandas_type" in obj.attrs:  # a group pandas wrote
            keys.append("/" + name)

    f.visititems(visit)
    return sorted(keys)


def _h5_pick_key(f, path: Path, key: Optional[str]) -> str:
    keys = _h5_keys(f)
    if key is not None:
        k = key if key.startswith("/") else "/" + key
        if k not in keys:
            raise _bad(path, f"key {key!r}", "must name a pandas frame in the file",
                       f"keys {', '.join(keys) or '(none)'}")
        return k
    if len(keys) != 1:
        raise _bad(path, "keys", "the file must hold one pandas frame, or `key:` must name one",
                   f"{len(keys)} ({', '.join(keys) or 'none'})")
    return keys[0]


def h5_key(path: Path, key: Optional[str]) -> str:
    with _h5_file(path) as f:
        return _h5_pick_key(f, path, key)


def _h5_dataset(group, name: str, path: Path, k: str):
    node = group.get(name)
    if node is None or hasattr(node, "keys"):
        raise _bad(path, f"{k}/{name}", "must be an array of pandas' frame layout (axis0, axis1, block<i>_items, "
                   "block<i>_values)", "nothing" if node is None else "a group")
    pseudo = _attr(node, "PSEUDOATOM")
    if pseudo is not None or node.dtype.kind == "O" or node.dtype.hasobject:
        raise _bad(path, f"{k}/{name}", "must be a plain numeric or text array (an object column is pickled Python "
                   "objects, which are never unpickled)", f"an array of {pseudo or 'objects'}")
    return node


def _labels(arr: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.tolist()]


class _Block:
    """One value block of a pandas frame: its column labels and how to read its (T, columns) values."""

    def __init__(self, items: list[str], where: str, dtype: np.dtype, read) -> None:
        self.items, self.where, self.dtype, self.read = items, where, dtype, read


def _h5_layout(f, path: Path, k: str) -> tuple[list[str], list[_Block], int, str]:
    """(sensor ids, value blocks, time steps, index kind) of a pandas frame, fixed or table format."""
    g = f[k]
    kind = _attr(g, "pandas_type")
    if kind == "frame_table":
        return _h5_table_layout(g, path, k)
    if kind != "frame":
        raise _bad(path, k, "must hold a time x sensors DataFrame", f"pandas type {kind!r}")
    ids = _labels(_h5_dataset(g, "axis0", path, k)[()])
    index = _h5_dataset(g, "axis1", path, k)
    if index.ndim != 1:
        raise _bad(path, f"{k}/axis1", "the index must be one-dimensional (one entry per time step)", f"shape {index.shape}")
    T = int(index.shape[0])
    try:
        nblocks = int(_attr(g, "nblocks", 0))
    except (TypeError, ValueError):
        nblocks = -1
    if nblocks < 1:
        raise _bad(path, f"{k} attribute nblocks", "must be a positive number of value blocks", repr(_attr(g, "nblocks")))
    blocks = []
    for i in range(nblocks):
        items = _labels(_h5_dataset(g, f"block{i}_items", path, k)[()])
        node = _h5_dataset(g, f"block{i}_values", path, k)

        def read(node=node, n=len(items)):
            arr = node[()]
            if _attr(node, "transposed") in (None, 0, False) and arr.ndim == 2 and arr.shape == (n, T) != (T, n):
                arr = arr.T
            return arr

        blocks.append(_Block(items, node.name, node.dtype, read))
    return ids, blocks, T, str(_attr(index, "kind", "")) + ("|index" if index.dtype.kind in "iu" else "")


def _pickled_attr(node, name: str, path: Path, where: str) -> Any:
    """A pandas attribute that PyTables stored pickled (lists of names), read with the restricted
    unpickler: plain lists, tuples and strings only."""
    from hpo.data.safe_pickle import loads_data_pickle

    if name not in node.attrs:
        raise _bad(path, f"{where} attribute {name}", "must be present (pandas writes it)", "nothing")
    raw = node.attrs[name]
    return loads_data_pickle(bytes(raw), label=f"{path}: {where} attribute {name}") if isinstance(raw, (bytes, np.bytes_)) else raw


def _h5_table_layout(g, path: Path, k: str) -> tuple[list[str], list[_Block], int, str]:
    t = g.get("table")
    if t is None or hasattr(t, "keys") or t.dtype.names is None or t.ndim != 1:
        raise _bad(path, f"{k}/table", "a table-format frame must hold a compound table", "none" if t is None else "another node")
    axes = _pickled_attr(g, "non_index_axes", path, k)
    try:
        [(axis, names)] = axes
        ids = [str(v) for v in names]
        assert axis == 1
    except (TypeError, ValueError, AssertionError):
        raise _bad(path, f"{k} attribute non_index_axes", "must be [(1, [column names])]", repr(axes)[:80]) from None
    T = int(t.shape[0])
    if "index" not in t.dtype.names:
        raise _bad(path, f"{k}/table", "must have an index field", f"fields {', '.join(t.dtype.names)}")
    blocks = []
    for field in t.dtype.names:
        if field == "index":
            continue
        items = _pickled_attr(t, f"{field}_kind", path, f"{k}/table")
        if not isinstance(items, list) or not all(isinstance(v, (str, int)) for v in items):
            raise _bad(path, f"{k}/table attribute {field}_kind", "must list the field's column names", repr(items)[:80])
        items = [str(v) for v in items]
        sub = t.dtype.fields[field][0]

        def read(field=field, n=len(items)):
            return np.asarray(t[field]).reshape(T, n)

        blocks.append(_Block(items, f"{k}/table field {field}", sub.base, read))
    index_kind = str(_attr(t, "index_kind", ""))
    return ids, blocks, T, index_kind + ("|index" if t.dtype.fields["index"][0].kind in "iu" else "")


def h5_peek(path: Path, key: Optional[str]) -> tuple[int, int, list[str]]:
    """(time steps, sensors, sensor ids) without reading the readings."""
    with _h5_file(path) as f:
        k = _h5_pick_key(f, path, key)
        ids, _, T, _ = _h5_layout(f, path, k)
        return T, len(ids), ids


def read_h5(spec: "DcrnnH5Dataset") -> RawSeries:
    path = spec.path
    with _h5_file(path) as f:
        k = _h5_pick_key(f, path, spec.key)
        ids, blocks, T, index_kind = _h5_layout(f, path, k)
        if len(set(ids)) != len(ids):
            dup = sorted({s for s in ids if ids.count(s) > 1})
            raise _bad(path, f"{k}/axis0", "sensor ids must be distinct", f"repeated {', '.join(dup[:5])}")
        pos = {s: i for i, s in enumerate(ids)}
        values = np.zeros((T, len(ids)), np.float32)
        seen: set[int] = set()
        for b in blocks:
            if b.dtype.kind not in "biuf":
                raise _bad(path, b.where, "sensor readings must be numbers", f"a {b.dtype} block (columns {', '.join(b.items[:5])})")
            arr = b.read()
            if arr.ndim != 2 or arr.shape != (T, len(b.items)):
                raise _bad(path, b.where, f"must hold {T} time steps x {len(b.items)} columns", f"shape {arr.shape}")
            unknown = [s for s in b.items if s not in pos]
            if unknown:
                raise _bad(path, b.where, "block columns must be sensors of the frame", f"{', '.join(unknown[:5])}")
            cols = [pos[s] for s in b.items]
            values[:, cols] = arr.astype(np.float32)
            seen.update(cols)
        if len(seen) != len(ids):
            missing = [s for i, s in enumerate(ids) if i not in seen]
            raise _bad(path, k, "every sensor of the frame must have readings", f"none for {', '.join(missing[:5])}")
        check_readings(values, path, ids, kind="time step")
        times = _h5_times(f, k, index_kind, path)
    if times is None:
        logger.warning("%s: the index is not a DatetimeIndex; no time features can be made", path)
    return RawSeries(values, times, ids, None)


def _h5_times(f, k: str, index_kind: str, path: Path) -> Optional[np.ndarray]:
    kind, _, integer = index_kind.partition("|")
    if not kind.startswith("datetime64"):
        return None
    unit = kind[len("datetime64["):-1] if kind.startswith("datetime64[") else "ns"  # pandas < 2: nanoseconds
    if unit not in ("s", "ms", "us", "ns") or not integer:
        raise _bad(path, f"{k} index", "a datetime index must be integer time stamps in s/ms/us/ns", f"kind {kind!r}")
    g = f[k]
    raw = g["table"]["index"] if _attr(g, "pandas_type") == "frame_table" else g["axis1"][()]
    return np.asarray(raw).astype(np.int64).view(f"datetime64[{unit}]").astype("datetime64[ns]")


def _csv_lines(path: Path) -> tuple[list[str], list[int]]:
    """The non-blank lines of a CSV and their 1-based line numbers; every row must have as many
    fields as the first (a ragged row is an error, never padded or cut)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"byte {e.start}", "the file must be UTF-8 text (a CSV)", f"byte {e.object[e.start:e.start + 1]!r}") from None
    lines, numbers = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            lines.append(line)
            numbers.append(i)
    if not lines:
        raise _bad(path, "line 1", "the file must hold a row of readings per time step", "an empty file")
    width = _n_fields(lines[0])
    ragged = [(n, k) for n, line in zip(numbers, lines) if (k := _n_fields(line)) != width]
    if ragged:
        listed = ", ".join(f"line {n} has {k}" for n, k in ragged[:5]) + (f" (and {len(ragged) - 5} more)" if len(ragged) > 5 else "")
        raise _bad(path, f"line {ragged[0][0]}", f"every row must have {width} fields like line {numbers[0]} "
                   "(a ragged row is never padded or cut)", listed)
    return lines, numbers


def _n_fields(line: str) -> int:
    if '"' not in line:
        return line.count(",") + 1
    import csv

    return len(next(csv.reader([line])))


def _numeric_frame(df, path, lines: Optional[Sequence[int]] = None) -> np.ndarray:
    """The sensor columns as float32; a cell that is not a number, empty, NaN or inf is an error."""
    import pandas as pd

    cols = list(df.columns)
    out = np.empty((len(df), len(cols)), np.float32)
    for j, c in enumerate(cols):
        col = df[c]
        if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        num = pd.to_numeric(col, errors="coerce")
        bad = np.nonzero(num.isna().to_numpy() & col.notna().to_numpy())[0]
        if bad.size:
            r = int(bad[0])
            row = f"line {lines[r]}" if lines is not None else f"row {r + 1}"
            shown = ", ".join(repr(str(col.iloc[int(i)]))[:40] for i in bad[:5])
            raise _bad(path, f"{row}, column {j + 1} ({c})", "readings must be numbers (0 marks a missing reading)",
                       shown + (f" (and {bad.size - 5} more)" if bad.size > 5 else ""))
        out[:, j] = num.to_numpy(dtype=np.float64, na_value=np.nan)
    check_readings(out, path, [str(c) for c in cols], lines=lines)
    return out


def csv_has_header(path: Path, declared: Optional[bool], *, log: bool = False) -> bool:
    """Whether the first row of a time x sensors CSV holds sensor ids.

    ``declared`` wins when given. Detection (``header: null``): a header if any first-row field is
    not a number; if all are numbers, a header only if they are all distinct integers and none lies
    within the range of the next rows' readings (ids such as 773869 over speeds 0-70). Sensor ids
    that look like readings (0, 1, 2, ...) cannot be told apart: set ``header`` explicitly then.
    """
    if declared is not None:
        return declared
    with open(path, newline="") as f:
        lines = [f.readline() for _ in range(101)]
    first = _fields(lines[0])
    if not first:
        raise _bad(path, "line 1", "the file must hold a row of readings per time step (a header row first, or not)",
                   "an empty first line" if any(line.strip() for line in lines) else "an empty file")
    nums = [_float(v) for v in first]
    if any(v is None for v in nums):
        return True
    rest = [_float(v) for line in lines[1:] if line.strip() for v in _fields(line)]
    rest = [v for v in rest if v is not None and math.isfinite(v)]
    ints = all(v.isdigit() or (v.startswith("-") and v[1:].isdigit()) for v in (s.strip() for s in first))
    if ints and len(set(first)) == len(first) and rest:
        lo, hi = min(rest), max(rest)
        if all(not lo <= v <= hi for v in nums):
            (logger.info if log else logger.debug)("%s: first row read as sensor ids (distinct integers outside the readings' range %g-%g); "
                        "set header: false if it is data", path, lo, hi)
            return True
    return False


def read_csv(spec: "CsvDataset") -> RawSeries:
    import pandas as pd

    path = spec.path
    lines, numbers = _csv_lines(path)
    header = csv_has_header(path, spec.header, log=True)
    data_lines = numbers[1:] if header else numbers
    if not data_lines:
        raise _bad(path, f"line {numbers[0]}", "the file must hold rows of readings after its header", "only the header")
    try:
        df = pd.read_csv(io.StringIO("\n".join(lines)), header=0 if header else None, keep_default_na=False,
                         na_values=[""], skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise _bad(path, "file", "must be a comma-separated table of readings", f"{type(e).__name__}: {str(e)[:200]}") from None
    first = _fields(lines[0])
    if header and len(set(first)) != len(first):  # pandas would rename a repeated id to "id.1"
        dup = sorted({v for v in first if first.count(v) > 1})
        raise _bad(path, f"line {numbers[0]}", "sensor ids in the header must be distinct", f"repeated {', '.join(dup[:5])}")
    times = None
    if spec.time_column is not None:
        if spec.time_column not in df.columns:
            raise _bad(path, f"line {numbers[0]}", f"the header must have the time_column {spec.time_column!r}",
                       f"columns {', '.join(map(str, df.columns[:5]))}{' ...' if len(df.columns) > 5 else ''}")
        col = df.pop(spec.time_column)
        parsed = pd.to_datetime(col, errors="coerce")
        bad = np.nonzero(parsed.isna().to_numpy())[0]
        if bad.size:
            raise _bad(path, f"line {data_lines[int(bad[0])]}, column {spec.time_column!r}", "must hold a timestamp",
                       repr(str(col.iloc[int(bad[0])]))[:60])
        times = parsed.to_numpy()
    elif spec.start is not None:
        times = pd.date_range(spec.start, periods=len(df), freq=pd.Timedelta(minutes=spec.interval_minutes)).to_numpy()
    if df.shape[1] == 0:
        raise _bad(path, f"line {numbers[0]}", "the file must have at least one sensor column", "none")
    values = _numeric_frame(df, path, data_lines)
    ids = [str(c) for c in df.columns] if header else None
    return RawSeries(values, times, ids, None)


def pems_channel(spec: "PemsNpzDataset", target: Optional[str], n_channels: int) -> int:
    names = spec.channel_names(n_channels)
    if len(names) != n_channels:
        raise _bad(spec.path, "array data", f"must have as many channels as `channels` names ({len(names)})", f"{n_channels}")
    if target is None:
        return 0
    if target not in names:
        raise DataError(f"{spec.path}: channels: target must be one of the channels {', '.join(names)}, but got {target!r}")
    return names.index(target)


def pems_peek(spec: "PemsNpzDataset") -> tuple[int, int, int]:
    """(time steps, sensors, channels) from the .npy header inside the .npz."""
    shapes = npz_shapes(spec.path)
    shape = shapes.get("data")
    if shape is None or len(shape) not in (2, 3):
        raise DataError(f"{spec.path}: array data: must be in the archive with shape (time, sensors, channels), but got "
                        f"{', '.join(f'{k} {v}' for k, v in shapes.items()) or 'nothing'}")
    return shape[0], shape[1], shape[2] if len(shape) == 3 else 1


def pems_ids(spec: "PemsNpzDataset", n: int) -> list[str]:
    if spec.ids is None:
        return [str(i) for i in range(n)]
    try:
        ids = [line.strip() for line in spec.ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise _bad(spec.ids, "file", "must be UTF-8 text, one sensor id per line", "binary data") from None
    if len(ids) != n:
        raise _bad(spec.ids, "lines", f"must list one sensor id per sensor of {spec.path} ({n})", f"{len(ids)} ids")
    if len(set(ids)) != len(ids):
        dup = sorted({s for s in ids if ids.count(s) > 1})
        raise _bad(spec.ids, "lines", "sensor ids must be distinct", f"repeated {', '.join(dup[:5])}")
    return ids


def load_npz(path: Path, names: Sequence[str], hint: str = "") -> dict[str, np.ndarray]:
    """Numeric arrays ``names`` of an .npz, never unpickled (``allow_pickle=False``): a missing array, an
    object array, a non-numeric one or a damaged archive is a :class:`DataError` naming the file."""
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise _bad(path, "file", "must be an .npz archive (numpy.savez)", "a single .npy array")
            missing = [n for n in names if n not in z.files]
            if missing:
                raise _bad(path, f"array {' / '.join(missing)}", f"must be in the archive{hint}",
                           f"arrays {', '.join(z.files) or '(none)'}")
            for n in names:
                try:
                    arr = z[n]
                except ValueError as e:  # an object array: it would need unpickling
                    raise _bad(path, f"array {n}", "must be a numeric array stored without pickle (object arrays "
                               "are never unpickled)", str(e)[:120]) from None
                if arr.dtype.kind not in "biuf":
                    raise _bad(path, f"array {n}", "must be numeric", f"dtype {arr.dtype}")
                out[n] = arr
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as e:
        raise _bad(path, "file", "must be a complete .npz archive (numpy.savez)",
                   f"{type(e).__name__}: {str(e)[:160] or 'truncated'}") from None
    return out


def read_pems_npz(spec: "PemsNpzDataset", target: Optional[str]) -> RawSeries:
    data = load_npz(spec.path, ["data"], " (PEMS04.npz holds `data`: time x sensors x channels)")["data"]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or 0 in data.shape[1:]:
        raise _bad(spec.path, "array data", "must be (time, sensors, channels) with at least one sensor and channel",
                   f"shape {data.shape}")
    values = data[:, :, pems_channel(spec, target, data.shape[2])].astype(np.float32)
    ids = pems_ids(spec, values.shape[1])
    check_readings(values, spec.path, ids, kind="time step")
    times = None
    if spec.start is not None:
        import pandas as pd

        times = pd.date_range(spec.start, periods=len(values), freq=pd.Timedelta(minutes=spec.interval_minutes)).to_numpy()
    return RawSeries(values, times, ids, None)


def csv_peek(spec: "CsvDataset") -> tuple[int, Optional[list[str]]]:
    """(sensors, ids or None) from the first line."""
    header = csv_has_header(spec.path, spec.header)
    with open(spec.path, newline="") as f:
        first = _fields(f.readline())
    if header:
        ids = [v.strip().strip('"') for v in first]
        if spec.time_column is not None:
            if spec.time_column not in ids:
                raise _bad(spec.path, "line 1", f"the header must have the time_column {spec.time_column!r}",
                           f"columns {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")
            ids.remove(spec.time_column)
        return len(ids), ids
    return len(first), None


def _fields(line: str) -> list[str]:
    line = line.strip()
    return [v.strip().strip('"') for v in line.split(",")] if line else []


def _float(v: str) -> Optional[float]:
    try:
        return float(v)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# adjacency
# ------------------------------------------------------------------------------------------------
def adjacency_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return "dcrnn_pkl"
    if suffix == ".npy":
        return "npy"
    if suffix in (".csv", ".txt"):
        with open(path, newline="") as f:
            first = _fields(f.readline())
        return "distances_csv" if len(first) == 3 else "matrix_csv"
    raise _bad(path, "suffix", "must be .pkl, .npy, .csv or .txt, or adj_format must name the format", repr(suffix))


def read_adjacency(spec: Any, sensor_ids: Optional[Sequence[str]], n_nodes: int) -> np.ndarray:
    """The (N, N) float32 adjacency of ``spec.adj`` in data column order.

    Files with sensor ids (DCRNN pickle, matrix CSV with an id header, distance lists) are aligned to
    the data's ids; id-less matrices must have the data's size and order.
    """
    path = spec.adj
    fmt = adjacency_format(path, spec.adj_format)
    if fmt == "distances_csv":
        if sensor_ids is None:
            raise _bad(path, "file", "a distance list needs the data's sensor ids (a header row in the data)",
                       "data without sensor ids")
        adj = _distances_to_adj(path, list(sensor_ids), spec.adj_threshold)
    else:
        ids, adj = _read_matrix(path, fmt)
        if ids is not None and sensor_ids is not None:
            pos = {s: i for i, s in enumerate(ids)}
            missing = [s for s in sensor_ids if s not in pos]
            if missing:
                raise _bad(path, "sensor ids", f"the adjacency must list every one of the data's {len(sensor_ids)} "
                           "sensors", f"{len(missing)} missing (first: {', '.join(missing[:3])})")
            order = [pos[s] for s in sensor_ids]
            adj = adj[np.ix_(order, order)]
        elif adj.shape[0] != n_nodes:
            raise _bad(path, "shape", f"the adjacency must be {n_nodes} x {n_nodes} (one row per sensor of the data)",
                       f"{adj.shape[0]} x {adj.shape[1]}")
    bad = np.argwhere(~np.isfinite(adj) | (adj < 0))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise _bad(path, f"entry [{i}, {j}]", "adjacency weights must be finite and >= 0",
                   f"{adj[i, j]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return adj.astype(np.float32)


def adjacency_peek(spec: Any) -> tuple[int, Optional[list[str]]]:
    """(size, ids or None) of ``spec.adj`` (distance lists: the ids they mention)."""
    path = spec.adj
    fmt = adjacency_format(path, spec.adj_format)
    if fmt == "distances_csv":
        src, dst, _ = _read_distances(path)
        ids = sorted(set(src) | set(dst))
        return len(ids), ids
    if fmt == "matrix_csv":
        with open(path, newline="") as f:
            first = _fields(f.readline())
            n_rows = 1 + sum(1 for line in f if line.strip())
        if n_rows == len(first) + 1:
            return len(first), first
        return len(first), None
    ids, adj = _read_matrix(path, fmt)
    return adj.shape[0], ids


def _read_matrix(path: Path, fmt: str) -> tuple[Optional[list[str]], np.ndarray]:
    if fmt == "dcrnn_pkl":
        obj = load_data_pickle(path)
        if not (isinstance(obj, (list, tuple)) and len(obj) == 3 and isinstance(obj[2], np.ndarray)):
            raise _bad(path, "pickle", "must hold DCRNN's [sensor_ids, sensor_id_to_ind, adj_mx] (adj_mx an array)",
                       f"a {type(obj).__name__}" + (f" of {len(obj)}" if isinstance(obj, (list, tuple)) else ""))
        raw_ids, id_to_ind, adj = obj
        if not isinstance(raw_ids, (list, tuple, np.ndarray)) or not isinstance(id_to_ind, dict):
            raise _bad(path, "pickle", "sensor_ids must be a list and sensor_id_to_ind a dict",
                       f"{type(raw_ids).__name__} and {type(id_to_ind).__name__}")
        ids = [_s(v) for v in raw_ids]
        if id_to_ind:
            try:
                order = sorted(((int(i), _s(k)) for k, i in id_to_ind.items()))
            except (TypeError, ValueError):
                raise _bad(path, "sensor_id_to_ind", "must map each sensor id to an integer index",
                           repr(list(id_to_ind.items())[:3])[:80]) from None
            if [i for i, _ in order] != list(range(len(order))):
                raise _bad(path, "sensor_id_to_ind", f"indices must be 0..{len(order) - 1}, each once",
                           f"{[i for i, _ in order][:8]}")
            ids = [k for _, k in order]
        if adj.dtype.kind not in "biuf":
            raise _bad(path, "adj_mx", "must be a numeric matrix", f"dtype {adj.dtype}")
    elif fmt == "npy":
        ids = None
        try:
            adj = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise _bad(path, "file", "must be a numeric .npy matrix stored without pickle", f"{type(e).__name__}: "
                       f"{str(e)[:160] or 'truncated'}") from None
        if not isinstance(adj, np.ndarray) or adj.dtype.kind not in "biuf":
            raise _bad(path, "file", "must be a numeric .npy matrix", f"dtype {getattr(adj, 'dtype', type(adj).__name__)}")
    elif fmt == "matrix_csv":
        lines, numbers = _csv_lines(path)
        rows = [_fields(line) for line in lines]
        ids = None
        if len(rows) == len(rows[0]) + 1:
            ids, rows, numbers = rows[0], rows[1:], numbers[1:]
        vals = np.empty((len(rows), len(rows[0]) if rows else 0), np.float64)
        for r, (row, n) in enumerate(zip(rows, numbers)):
            for c, v in enumerate(row):
                f = _float(v)
                if f is None:
                    raise _bad(path, f"line {n}, column {c + 1}", "adjacency weights must be numbers", repr(v)[:40])
                vals[r, c] = f
        adj = vals
    else:
        raise DataError(f"unknown adjacency format {fmt!r}")
    adj = np.asarray(adj, dtype=np.float32)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1] or adj.shape[0] == 0:
        raise _bad(path, "shape", "the adjacency must be a non-empty square matrix", f"shape {adj.shape}")
    if ids is not None and len(ids) != adj.shape[0]:
        raise _bad(path, "sensor ids", f"must be one per row of the {adj.shape[0]} x {adj.shape[0]} adjacency", f"{len(ids)} ids")
    if ids is not None and len(set(ids)) != len(ids):
        dup = sorted({s for s in ids if ids.count(s) > 1})
        raise _bad(path, "sensor ids", "must be distinct", f"repeated {', '.join(dup[:5])}")
    return ids, adj


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_distances(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    lines, numbers = _csv_lines(path)
    rows = [_fields(line) for line in lines]
    if len(rows[0]) != 3:
        raise _bad(path, f"line {numbers[0]}", "a distance list must have rows from,to,distance", f"{len(rows[0])} fields")
    if _float(rows[0][2]) is None:
        rows, numbers = rows[1:], numbers[1:]
    d = np.empty(len(rows))
    for i, (r, n) in enumerate(zip(rows, numbers)):
        v = _float(r[2])
        if v is None or not math.isfinite(v) or v < 0:
            raise _bad(path, f"line {n}, column 3", "distances must be finite numbers >= 0", repr(r[2])[:40])
        d[i] = v
    return [r[0] for r in rows], [r[1] for r in rows], d


def _distances_to_adj(path: Path, ids: list[str], threshold: float) -> np.ndarray:
    """DCRNN's ``gen_adj_mx.get_adjacency_matrix``: a thresholded Gaussian kernel of road distance,
    ``exp(-(d / std)^2)`` with ``std`` over the listed distances; weights < ``threshold`` are 0."""
    src, dst, d = _read_distances(path)
    pos = {s: i for i, s in enumerate(ids)}
    dist = np.full((len(ids), len(ids)), np.inf)
    for a, b, v in zip(src, dst, d):
        if a in pos and b in pos:
            dist[pos[a], pos[b]] = v
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        raise _bad(path, "rows", "must list distances between the data's sensors", "no row between two of them")
    std = finite.std() if finite.std() > 0 else 1.0
    adj = np.exp(-np.square(dist / std))
    adj[adj < threshold] = 0.0
    np.fill_diagonal(adj, 1.0)
    return adj.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# DCRNN npz windows
# ------------------------------------------------------------------------------------------------
def npz_shapes(path: Path) -> dict[str, tuple]:
    """Array shapes inside an .npz, read from the .npy headers only."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".npy"):
                    with z.open(name) as f:
                        version = np.lib.format.read_magic(f)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                        shape, _, _ = read(f)
                    out[name[:-4]] = tuple(shape)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
        raise _bad(path, "file", "must be a complete .npz archive (numpy.savez)", f"{type(e).__name__}: {str(e)[:160]}") from None
    return out


def _npz_splits(spec: "DcrnnNpzDataset", dcfg: "TrafficDataConfig"):
    import torch

    from hpo.tasks import Splits

    L, H = dcfg.input_len, dcfg.output_len
    arrays = {}
    for name, fname in zip(SPLITS, spec.SPLIT_FILES):
        path = spec.dir / fname
        z = load_npz(path, ["x", "y"], " (DCRNN npz files hold x, y, x_offsets, y_offsets)")
        x, y = z["x"], z["y"]
        if x.ndim != 4 or y.ndim != 4 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2] or 0 in x.shape[2:]:
            raise _bad(path, "arrays x, y", "must be (samples, steps, nodes, features) with equal samples and nodes",
                       f"{x.shape} and {y.shape}")
        if x.shape[0] == 0:
            raise _bad(path, "array x", f"the {name} split must hold at least one sample (window)", "0 samples")
        if L > x.shape[1] or H > y.shape[1]:
            raise _bad(path, "arrays x, y", f"input_len={L} and output_len={H} must not exceed the steps the file "
                       "holds", f"{x.shape[1]} input and {y.shape[1]} output steps")
        for key, arr in (("x", x), ("y", y)):
            bad = np.argwhere(~np.isfinite(arr))
            if bad.size:
                raise _bad(path, f"array {key}[{', '.join(map(str, bad[0].tolist()))}]", "readings and features must be "
                           "finite numbers (0 marks a missing reading)",
                           f"{arr[tuple(bad[0])]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
        if name == "train":  # scaler over every training input step, before the window is cut
            mean, std = fit_scaler(x[..., 0].reshape(-1, x.shape[2]), dcfg.scaler, path)
        arrays[name] = (x[:, -L:], y[:, :H])
    n_nodes = arrays["train"][0].shape[2]
    n_feat = arrays["train"][0].shape[3]
    for name, (x, _) in arrays.items():
        if x.shape[2:] != (n_nodes, n_feat):
            raise _bad(spec.dir / f"{name}.npz", "array x", f"must have train.npz's {n_nodes} nodes x {n_feat} features",
                       f"{x.shape[2]} x {x.shape[3]}")
    cols = []
    if dcfg.time_of_day:
        if n_feat < 2:
            raise DataError(f"{spec.dir}: features: time_of_day needs feature 1 (generate_training_data.py --add_time_in_day), "
                            f"but the files have {n_feat} feature(s); set time_of_day: false")
        cols.append(lambda a: a[..., 1])
    if dcfg.day_of_week:
        if n_feat < 9:
            raise DataError(f"{spec.dir}: features: day_of_week needs features 2-8 (the day-of-week one-hot), but the files "
                            f"have {n_feat} features; set day_of_week: false")
        cols.append(lambda a: np.argmax(a[..., 2:9], axis=-1) / 7.0)

    parts = {}
    for name, (x, y) in arrays.items():
        sig = x[..., 0].astype(np.float32)
        sig = np.where(np.isfinite(sig), sig, 0.0)
        scaled = np.where(sig != 0, (sig - mean) / std, 0.0)
        feats = [scaled] + [c(x) for c in cols]
        xf = np.stack(feats, axis=-1).astype(np.float32)
        tf = np.stack([c(y[:, :, 0:1, :])[:, :, 0] for c in cols], axis=-1) if cols else np.zeros(y.shape[:2] + (0,))
        target = np.where(np.isfinite(y[..., 0]), y[..., 0], 0.0)
        parts[name] = ArrayWindows(torch.from_numpy(xf), torch.from_numpy(target.astype(np.float32)),
                                   torch.from_numpy(tf.astype(np.float32)))
    adj = read_adjacency(spec, None, n_nodes) if spec.adj is not None else None
    info = _info(None, adj, n_nodes, 1 + len(cols), len(cols), dcfg, mean, std)
    return Splits(parts["train"], parts["val"], parts["test"], info=info)


# ------------------------------------------------------------------------------------------------
# synthetic data
# ------------------------------------------------------------------------------------------------
def generate_synthetic(spec: "SyntheticDataset") -> RawSeries:
    """Speeds on a random road-like sensor graph.

    - graph: sensors at random points of the unit square, each linked to its ``k_neighbors`` nearest
      plus a minimum spanning tree (so it is connected); weights are DCRNN's Gaussian kernel of distance,
      diagonal 1;
    - daily rush hours (08:00 and 17:30, weaker at weekends) that start at the graph's centre and
      reach a sensor ``hops * wave_minutes_per_hop`` later, weaker with distance;
    - incidents (Poisson, ``events_per_day``) at random sensors whose congestion travels upstream:
      a sensor ``k`` hops away slows down ``k * wave_minutes_per_hop`` later, by ``0.7 ** k`` as much;
    - AR(1) measurement noise, and ``missing_rate`` of readings reported as 0, half of them as
      sensor outages of an hour.
    """
    import pandas as pd
    from scipy.signal import lfilter
    from scipy.sparse.csgraph import minimum_spanning_tree, shortest_path

    rng = np.random.default_rng(spec.seed)
    N, spd = spec.n_nodes, spec.steps_per_day
    T = int(round(spec.n_days * spd))
    step_min = 1440.0 / spd

    pos = rng.uniform(0, 1, (N, 2))
    dist = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    mst = minimum_spanning_tree(dist).toarray() > 0
    edges = mst | mst.T
    k = min(spec.k_neighbors, N - 1)
    nearest = np.argsort(dist, axis=1)[:, 1 : k + 1]
    edges[np.repeat(np.arange(N), k), nearest.ravel()] = True
    edges = edges | edges.T
    sigma = dist[edges].std() if edges.any() and dist[edges].std() > 0 else 1.0
    adj = np.where(edges, np.exp(-np.square(dist / sigma)), 0.0)
    np.fill_diagonal(adj, 1.0)
    hops = shortest_path(edges.astype(float), unweighted=True, directed=False)
    centre = int(np.argmin(hops.sum(1)))

    t = np.arange(T)
    start = pd.Timestamp(spec.start)
    times = (start + pd.to_timedelta(t * step_min, unit="min")).to_numpy()
    tod = ((start.hour * 60 + start.minute) / 1440.0 + t / spd) % 1.0  # (T,)
    dow = (start.day_of_week + np.floor((start.hour * 60 + start.minute) / 1440.0 + t / spd)) % 7
    weekday = np.where(dow < 5, 1.0, 0.3)

    lag = hops[centre] * spec.wave_minutes_per_hop / 1440.0  # (N,) days
    reach = np.exp(-hops[centre] / 3.0)  # (N,)
    rush = np.zeros((T, N))
    for peak, width in ((8.0 / 24, 1.2 / 24), (17.5 / 24, 1.5 / 24)):
        phase = (tod[:, None] - peak - lag[None, :] + 0.5) % 1.0 - 0.5
        rush += np.exp(-0.5 * (phase / width) ** 2)
    speed = spec.free_flow + rng.normal(0, 3, N)[None, :] - spec.rush_hour_drop * weekday[:, None] * reach[None] * rush

    n_events = rng.poisson(spec.events_per_day * spec.n_days)
    wave_steps = spec.wave_minutes_per_hop / step_min
    for _ in range(n_events):
        t0, src = rng.uniform(0, T), rng.integers(N)
        drop, dur = rng.uniform(10, 30), rng.uniform(30, 120) / step_min
        near = hops[src] <= 4
        arrive = t0 + hops[src][near] * wave_steps  # (n_near,)
        env = np.exp(-0.5 * ((t[:, None] - arrive[None] - dur / 2) / (dur / 2)) ** 2)
        speed[:, near] -= drop * (0.7 ** hops[src][near])[None] * env

    noise = lfilter([1.0], [1.0, -0.6], rng.normal(0, spec.reading_noise, (T, N)), axis=0)  # AR(1)
    values = np.clip(speed + noise, 3.0, 80.0)

    if spec.missing_rate > 0:
        values[rng.random((T, N)) < spec.missing_rate / 2] = 0.0
        outage = max(1, int(round(60 / step_min)))
        n_out = int(round(spec.missing_rate / 2 * T * N / outage))
        for _ in range(n_out):
            t0, node = rng.integers(max(1, T - outage)), rng.integers(N)
            values[t0 : t0 + outage, node] = 0.0
    ids = [f"s{i:03d}" for i in range(N)]
    return RawSeries(values.astype(np.float32), times, ids, adj.astype(np.float32))
