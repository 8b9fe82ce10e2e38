"""Reading, scaling and windowing traffic series (everything here runs once per study, then is cached).

A series is a (T time steps, N sensors) matrix of readings in which **0 marks a missing reading**
(DCRNN's convention for METR-LA / PEMS-BAY; NaN and empty cells are turned into 0 on reading).

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

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from hpo.errors import DataError
from hpo.safe_pickle import load_data_pickle

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


class WindowLoader:
    """Batches of windows in time order, or shuffled by a generator seeded once with ``seed`` (each
    pass draws a new permutation from it, so a run is reproducible and epochs differ)."""

    def __init__(self, windows, batch_size: int, *, shuffle: bool, seed: int = 0, stride: int = 1) -> None:
        import torch

        self.windows, self.batch_size, self.shuffle, self.stride = windows, batch_size, shuffle, stride
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.windows) / self.stride) / self.batch_size)

    def __iter__(self):
        import torch

        starts = torch.arange(0, len(self.windows), self.stride)  # every stride-th window start
        n = len(starts)
        order = starts[torch.randperm(n, generator=self._gen)] if self.shuffle else starts
        for i in range(0, n, self.batch_size):
            yield self.windows.batch(order[i : i + self.batch_size])


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

    values = np.asarray(raw.values, dtype=np.float32)
    values = np.where(np.isfinite(values), values, 0.0).astype(np.float32)
    T, N = values.shape
    L, H = dcfg.input_len, dcfg.output_len
    n_train = int(round(T * spec.train_frac))
    n_val = int(round(T * spec.val_frac))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, T)}
    for name, (a, b) in bounds.items():
        if b - a < L + H:
            raise DataError(f"the {name} part has {b - a} time steps (of {T}), fewer than input_len + output_len = "
                            f"{L + H}; use a longer series or other split fractions")

    mean, std = fit_scaler(values[:n_train], dcfg.scaler)
    tf = time_features(raw.times, T, dcfg)  # (T, F_t)
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


def fit_scaler(train_values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the observed (non-zero) training readings: shape (1,) for ``global``, (N,) for
    ``per_node`` (a sensor never observed in training falls back to the global statistics)."""
    obs = train_values != 0
    if not obs.any():
        raise DataError("the train part has no observed (non-zero) readings")
    g_mean = float(train_values[obs].mean())
    g_std = float(train_values[obs].std())
    g_std = g_std if g_std > 1e-6 else 1.0
    if kind == "global":
        return np.array([g_mean], np.float32), np.array([g_std], np.float32)
    n_obs = obs.sum(0)
    s = np.where(obs, train_values, 0.0).sum(0)
    mean = np.where(n_obs > 0, s / np.maximum(n_obs, 1), g_mean)
    var = np.where(obs, (train_values - mean) ** 2, 0.0).sum(0) / np.maximum(n_obs, 1)
    std = np.sqrt(var)
    std = np.where((n_obs > 1) & (std > 1e-6), std, g_std)
    return mean.astype(np.float32), std.astype(np.float32)


def time_features(times: Optional[np.ndarray], T: int, dcfg) -> np.ndarray:
    """(T, F_t) float32: time of day in [0, 1) and/or day of week / 7, as ``dcfg`` asks."""
    cols = []
    if dcfg.time_of_day or dcfg.day_of_week:
        if times is None:
            raise DataError("time features need timestamps: give the CSV a time_column or a start, "
                            "or set time_of_day and day_of_week to false")
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
def read_h5(spec: "DcrnnH5Dataset") -> RawSeries:
    import pandas as pd

    key = h5_key(spec.path, spec.key)
    df = pd.read_hdf(spec.path, key)
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{spec.path}: key {key!r} holds a {type(df).__name__}, not a time x sensors DataFrame")
    values = _numeric_frame(df, spec.path)
    times = df.index.to_numpy() if isinstance(df.index, pd.DatetimeIndex) else None
    if times is None:
        logger.warning("%s: the index is not a DatetimeIndex; no time features can be made", spec.path)
    return RawSeries(values, times, [str(c) for c in df.columns], None)


def h5_key(path: Path, key: Optional[str]) -> str:
    import pandas as pd

    with pd.HDFStore(path, "r") as store:
        keys = store.keys()
    if key is not None:
        k = key if key.startswith("/") else "/" + key
        if k not in keys:
            raise DataError(f"{path}: no key {key!r}; keys are {', '.join(keys)}")
        return k
    if len(keys) != 1:
        raise DataError(f"{path}: holds {len(keys)} keys ({', '.join(keys)}); name one with `key:`")
    return keys[0]


def h5_peek(path: Path, key: Optional[str]) -> tuple[int, int, list[str]]:
    """(time steps, sensors, sensor ids) without reading the whole frame."""
    import pandas as pd

    k = h5_key(path, key)
    with pd.HDFStore(path, "r") as store:
        head = store.select(k, start=0, stop=1)
        storer = store.get_storer(k)
        n_rows = getattr(storer, "nrows", None)
        if not isinstance(n_rows, (int, np.integer)):
            n_rows = int(storer.shape[0])
    return int(n_rows), head.shape[1], [str(c) for c in head.columns]


def _numeric_frame(df, path) -> np.ndarray:
    bad = [str(c) for c, t in df.dtypes.items() if not np.issubdtype(t, np.number)]
    if bad:
        raise DataError(f"{path}: non-numeric sensor columns {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    values = df.to_numpy(dtype=np.float32, na_value=0.0)
    return np.where(np.isfinite(values), values, 0.0).astype(np.float32)


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
        raise DataError(f"{path}: the file is empty")
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

    header = csv_has_header(spec.path, spec.header, log=True)
    df = pd.read_csv(spec.path, header=0 if header else None)
    times = None
    if spec.time_column is not None:
        if spec.time_column not in df.columns:
            raise DataError(f"{spec.path}: no column {spec.time_column!r} (time_column); columns start "
                            f"{', '.join(map(str, df.columns[:5]))}")
        times = pd.to_datetime(df.pop(spec.time_column)).to_numpy()
    elif spec.start is not None:
        times = pd.date_range(spec.start, periods=len(df), freq=pd.Timedelta(minutes=spec.interval_minutes)).to_numpy()
    values = _numeric_frame(df, spec.path)
    ids = [str(c) for c in df.columns] if header else None
    return RawSeries(values, times, ids, None)


def pems_channel(spec: "PemsNpzDataset", target: Optional[str], n_channels: int) -> int:
    names = spec.channel_names(n_channels)
    if len(names) != n_channels:
        raise DataError(f"{spec.path}: `channels` names {len(names)} channels, but the data has {n_channels}")
    if target is None:
        return 0
    if target not in names:
        raise DataError(f"{spec.path}: target must be one of the channels {', '.join(names)}, but got {target!r}")
    return names.index(target)


def pems_peek(spec: "PemsNpzDataset") -> tuple[int, int, int]:
    """(time steps, sensors, channels) from the .npy header inside the .npz."""
    shapes = npz_shapes(spec.path)
    shape = shapes.get("data")
    if shape is None or len(shape) not in (2, 3):
        raise DataError(f"{spec.path}: expected an array `data` of shape (time, sensors, channels), found "
                        f"{', '.join(f'{k} {v}' for k, v in shapes.items()) or 'nothing'}")
    return shape[0], shape[1], shape[2] if len(shape) == 3 else 1


def pems_ids(spec: "PemsNpzDataset", n: int) -> list[str]:
    if spec.ids is None:
        return [str(i) for i in range(n)]
    ids = [line.strip() for line in spec.ids.read_text().splitlines() if line.strip()]
    if len(ids) != n:
        raise DataError(f"{spec.ids}: {len(ids)} sensor ids for {n} sensors in {spec.path}")
    return ids


def read_pems_npz(spec: "PemsNpzDataset", target: Optional[str]) -> RawSeries:
    with np.load(spec.path, allow_pickle=False) as z:
        if "data" not in z.files:
            raise DataError(f"{spec.path}: no array `data` (found {', '.join(z.files)})")
        data = z["data"]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{spec.path}: `data` must be (time, sensors, channels), but its shape is {data.shape}")
    values = data[:, :, pems_channel(spec, target, data.shape[2])].astype(np.float32)
    times = None
    if spec.start is not None:
        import pandas as pd

        times = pd.date_range(spec.start, periods=len(values), freq=pd.Timedelta(minutes=spec.interval_minutes)).to_numpy()
    return RawSeries(values, times, pems_ids(spec, values.shape[1]), None)


def csv_peek(spec: "CsvDataset") -> tuple[int, Optional[list[str]]]:
    """(sensors, ids or None) from the first line."""
    header = csv_has_header(spec.path, spec.header)
    with open(spec.path, newline="") as f:
        first = _fields(f.readline())
    if header:
        ids = [v.strip().strip('"') for v in first]
        if spec.time_column is not None:
            if spec.time_column not in ids:
                raise DataError(f"{spec.path}: no column {spec.time_column!r} (time_column)")
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
    raise DataError(f"{path}: cannot tell the adjacency format from the suffix {suffix!r}; set adj_format")


def read_adjacency(spec: Any, sensor_ids: Optional[Sequence[str]], n_nodes: int) -> np.ndarray:
    """The (N, N) float32 adjacency of ``spec.adj`` in data column order.

    Files with sensor ids (DCRNN pickle, matrix CSV with an id header, distance lists) are aligned to
    the data's ids; id-less matrices must have the data's size and order.
    """
    path = spec.adj
    fmt = adjacency_format(path, spec.adj_format)
    if fmt == "distances_csv":
        if sensor_ids is None:
            raise DataError(f"{path}: a distance list needs the data's sensor ids (a header row)")
        adj = _distances_to_adj(path, list(sensor_ids), spec.adj_threshold)
    else:
        ids, adj = _read_matrix(path, fmt)
        if ids is not None and sensor_ids is not None:
            pos = {s: i for i, s in enumerate(ids)}
            missing = [s for s in sensor_ids if s not in pos]
            if missing:
                raise DataError(f"{path}: {len(missing)} of the data's {len(sensor_ids)} sensors are not in the "
                                f"adjacency (first: {', '.join(missing[:3])})")
            order = [pos[s] for s in sensor_ids]
            adj = adj[np.ix_(order, order)]
        elif adj.shape[0] != n_nodes:
            raise DataError(f"{path}: the adjacency is {adj.shape[0]} x {adj.shape[1]} but the data has {n_nodes} sensors")
    if not np.isfinite(adj).all() or (adj < 0).any():
        raise DataError(f"{path}: adjacency weights must be finite and >= 0")
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
            raise DataError(f"{path}: expected DCRNN's [sensor_ids, sensor_id_to_ind, adj_mx], got {type(obj).__name__}")
        raw_ids, id_to_ind, adj = obj
        ids = [_s(v) for v in raw_ids]
        if isinstance(id_to_ind, dict) and id_to_ind:
            order = sorted(((int(i), _s(k)) for k, i in id_to_ind.items()))
            ids = [k for _, k in order]
    elif fmt == "npy":
        ids, adj = None, np.load(path, allow_pickle=False)
    elif fmt == "matrix_csv":
        with open(path, newline="") as f:
            rows = [_fields(line) for line in f if line.strip()]
        ids = None
        if rows and len(rows) == len(rows[0]) + 1:
            ids, rows = rows[0], rows[1:]
        try:
            adj = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
        except ValueError as e:
            raise DataError(f"{path}: not a numeric matrix ({e})") from None
    else:
        raise DataError(f"unknown adjacency format {fmt!r}")
    adj = np.asarray(adj, dtype=np.float32)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise DataError(f"{path}: the adjacency must be a square matrix, but its shape is {adj.shape}")
    if ids is not None and len(ids) != adj.shape[0]:
        raise DataError(f"{path}: {len(ids)} sensor ids for a {adj.shape[0]} x {adj.shape[0]} adjacency")
    return ids, adj


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_distances(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = [_fields(line) for line in f if line.strip()]
    if rows and _float(rows[0][2]) is None:
        rows = rows[1:]
    try:
        return [r[0] for r in rows], [r[1] for r in rows], np.array([float(r[2]) for r in rows])
    except (ValueError, IndexError) as e:
        raise DataError(f"{path}: expected rows from,to,distance ({e})") from None


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
        raise DataError(f"{path}: no distance rows between the data's sensors")
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
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz ({e})") from None
    return out


def _npz_splits(spec: "DcrnnNpzDataset", dcfg: "TrafficDataConfig"):
    import torch

    from hpo.tasks import Splits

    L, H = dcfg.input_len, dcfg.output_len
    arrays = {}
    for name, fname in zip(SPLITS, spec.SPLIT_FILES):
        path = spec.dir / fname
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(f"{path}: no array {' / '.join(missing)} (DCRNN npz files hold x, y, x_offsets, y_offsets)")
            x, y = z["x"], z["y"]
        if x.ndim != 4 or y.ndim != 4 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
            raise DataError(f"{path}: x and y must be (samples, steps, nodes, features) with equal samples and "
                            f"nodes, but got {x.shape} and {y.shape}")
        if L > x.shape[1] or H > y.shape[1]:
            raise DataError(f"{path}: holds {x.shape[1]} input and {y.shape[1]} output steps; input_len={L} and "
                            f"output_len={H} must not exceed them")
        if name == "train":  # scaler over every training input step, before the window is cut
            mean, std = fit_scaler(np.nan_to_num(x[..., 0]).reshape(-1, x.shape[2]), dcfg.scaler)
        arrays[name] = (x[:, -L:], y[:, :H])
    n_nodes = arrays["train"][0].shape[2]
    n_feat = arrays["train"][0].shape[3]
    for name, (x, _) in arrays.items():
        if x.shape[2:] != (n_nodes, n_feat):
            raise DataError(f"{spec.dir}: {name}.npz has {x.shape[2]} nodes x {x.shape[3]} features, train.npz "
                            f"{n_nodes} x {n_feat}")
    cols = []
    if dcfg.time_of_day:
        if n_feat < 2:
            raise DataError(f"{spec.dir}: time_of_day needs feature 1 (generate_training_data.py --add_time_in_day), "
                            f"but the files have {n_feat} feature(s); set time_of_day: false")
        cols.append(lambda a: a[..., 1])
    if dcfg.day_of_week:
        if n_feat < 9:
            raise DataError(f"{spec.dir}: day_of_week needs features 2-8 (the day-of-week one-hot), but the files "
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
