"""A corpus of malformed traffic data files, for every format (issue #13, item 5).

Each case writes one bad file (or folder) next to otherwise good ones and asserts that
``task.load`` - what ``hpo validate``, ``hpo run`` and every trial call - refuses it with one clear
line ``file: where: what must hold, but got X`` that names the bad file, and that ``hpo validate``
exits with 2 on it before any trial. Zeros are DCRNN's missing readings: a file with zeros loads.
Nothing here reads shared data or the network.
"""

from __future__ import annotations

import re
import textwrap
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from hpo.data.cache import DataCache
from hpo.errors import DataError
from models.traffic import TrafficDataConfig, TrafficDataset, TrafficTask

IDS = ["717447", "717446", "773869", "767541"]
DC = TrafficDataConfig(input_len=4, output_len=3)
T = 120
LINE = re.compile(r"^(?P<file>[^:]+): (?P<where>[^:]+): (?P<must>.+), but got (?P<got>.+)$")
REFUSED: dict[str, int] = {}


def _series(T: int = T, N: int = 4) -> np.ndarray:
    v = (np.arange(T)[:, None] + 1 + 1000 * np.arange(N)[None, :]).astype(np.float64)
    v[5, 1] = 0.0  # a missing reading: allowed
    return v


def _frame(values: np.ndarray | None = None, ids=IDS):
    import pandas as pd

    values = _series() if values is None else values
    return pd.DataFrame(values, index=pd.date_range("2012-03-01", periods=len(values), freq="5min"), columns=ids)


def _h5(d: Path, df=None, name: str = "m.h5", **kw) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PerformanceWarning for object blocks
        (_frame() if df is None else df).to_hdf(d / name, key=kw.pop("key", "df"), **kw)
    return name


def _csv(d: Path, text: str, name: str = "s.csv") -> str:
    (d / name).write_text(textwrap.dedent(text).lstrip())
    return name


def _good_csv(values: np.ndarray | None = None) -> str:
    values = _series() if values is None else values
    return ",".join(IDS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in values) + "\n"


def _npz(d: Path, folder: str = "npz", S=(20, 5, 6), N=3, L=12, F=2, over: dict | None = None) -> str:
    rng = np.random.default_rng(0)
    (d / folder).mkdir()
    for split, s in zip(("train", "val", "test"), S):
        arrays = {"x": 40 + rng.normal(0, 5, (s, L, N, F)), "y": 40 + rng.normal(0, 5, (s, L, N, F)),
                  "x_offsets": np.arange(-L + 1, 1)[:, None], "y_offsets": np.arange(1, L + 1)[:, None]}
        arrays.update((over or {}).get(split, {}))
        kw = {k: v for k, v in arrays.items() if v is not None}
        np.savez(d / folder / f"{split}.npz", **kw)
    return folder


def _pems(d: Path, data=None, name="PEMS04.npz", **extra) -> str:
    if data is None:
        data = np.stack([_series(), _series() / 100, 70 - _series() / 10], axis=2)
    np.savez(d / name, data=data, **extra)
    return name


def _h5_set(path: Path, dataset: str, i: int, value: str) -> None:
    """Edit one label of a pandas HDF5 file (pandas itself refuses to write repeated column ids)."""
    import h5py

    with h5py.File(path, "r+") as f:
        labels = f[dataset][()].copy()
        labels[i] = value.encode()
        f[dataset][...] = labels


def _truncate(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _adj_npy(d: Path, adj, name="adj.npy") -> str:
    np.save(d / name, np.asarray(adj), allow_pickle=True)
    return name


def _pkl(d: Path, obj, name="adj_mx.pkl") -> str:
    import pickle

    with open(d / name, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return name


def _ragged(d):
    return _csv(d, "a,b,c,d\n1,2,3,4\n5,6,7\n8,9,10,11\n")


# Each case: (format, name, build(dir) -> (dataset dict, the bad file relative to dir), where/must fragment)
Case = tuple[str, str, Callable[[Path], tuple[dict, str]], str]
CASES: list[Case] = [
    # ---------------------------------------------------------------- dcrnn_h5
    ("dcrnn_h5", "empty file", lambda d: ((d / "m.h5").write_bytes(b""), ({"path": "m.h5"}, "m.h5"))[1],
     "file: must be a complete HDF5 file"),
    ("dcrnn_h5", "truncated file", lambda d: (_h5(d), _truncate(d / "m.h5"), ({"path": "m.h5"}, "m.h5"))[2],
     "file: must be a complete HDF5 file"),
    ("dcrnn_h5", "not HDF5 at all", lambda d: ((d / "m.h5").write_text("time,a\n1,2\n"), ({"path": "m.h5"}, "m.h5"))[1],
     "file: must be a complete HDF5 file"),
    ("dcrnn_h5", "missing key", lambda d: (_h5(d), ({"path": "m.h5", "key": "speed"}, "m.h5"))[1],
     "key 'speed': must name a pandas frame"),
    ("dcrnn_h5", "two frames, no key", lambda d: (_h5(d), _h5(d, key="other"), ({"path": "m.h5"}, "m.h5"))[2],
     "keys: the file must hold one pandas frame"),
    ("dcrnn_h5", "a Series, not a frame", lambda d: (_h5(d, _frame()["717447"]), ({"path": "m.h5"}, "m.h5"))[1],
     "/df: must hold a time x sensors DataFrame"),
    ("dcrnn_h5", "NaN reading", lambda d: (_h5(d, _frame(_nan(_series(), 7, 2))), ({"path": "m.h5"}, "m.h5"))[1],
     "time step 7, column 3 (sensor 773869): readings must be finite numbers"),
    ("dcrnn_h5", "inf reading", lambda d: (_h5(d, _frame(_nan(_series(), 90, 0, np.inf))), ({"path": "m.h5"}, "m.h5"))[1],
     "time step 90, column 1 (sensor 717447): readings must be finite numbers"),
    ("dcrnn_h5", "text column (non-numeric)", lambda d: (_h5(d, _frame().assign(**{"717446": "abc"})),
                                                         ({"path": "m.h5"}, "m.h5"))[1],
     "must be a plain numeric or text array"),
    ("dcrnn_h5", "object column", lambda d: (_h5(d, _frame().astype({"773869": object})), ({"path": "m.h5"}, "m.h5"))[1],
     "must be a plain numeric or text array"),
    ("dcrnn_h5", "repeated sensor id", lambda d: (_h5(d), _h5_set(d / "m.h5", "df/axis0", 3, IDS[0]), ({"path": "m.h5"}, "m.h5"))[2],
     "/df/axis0: sensor ids must be distinct"),
    ("dcrnn_h5", "series shorter than input+output", lambda d: (_h5(d, _frame(_series(T=20))), ({"path": "m.h5"}, "m.h5"))[1],
     "time steps: each chronological part"),
    ("dcrnn_h5", "no observed training reading", lambda d: (_h5(d, _frame(_zero_head(_series(), 84))),
                                                            ({"path": "m.h5"}, "m.h5"))[1],
     "the train part: must hold observed (non-zero) readings"),
    ("dcrnn_h5", "adjacency pickle: sensor ids mismatch", lambda d: (_h5(d), _pkl(d, [IDS[:3] + ["999"], {s: i for i, s in enumerate(IDS[:3] + ["999"])},
                                                                                    np.eye(4, dtype=np.float32)]),
                                                                    ({"path": "m.h5", "adj": "adj_mx.pkl"}, "adj_mx.pkl"))[2],
     "sensor ids: the adjacency must list every one of the data's 4 sensors"),
    ("dcrnn_h5", "adjacency pickle: not DCRNN's triple", lambda d: (_h5(d), _pkl(d, {"adj": np.eye(4)}),
                                                                   ({"path": "m.h5", "adj": "adj_mx.pkl"}, "adj_mx.pkl"))[2],
     "pickle: must hold DCRNN's [sensor_ids, sensor_id_to_ind, adj_mx]"),
    ("dcrnn_h5", "adjacency pickle: non-square", lambda d: (_h5(d), _pkl(d, [IDS, {s: i for i, s in enumerate(IDS)}, np.ones((4, 3))]),
                                                           ({"path": "m.h5", "adj": "adj_mx.pkl"}, "adj_mx.pkl"))[2],
     "shape: the adjacency must be a non-empty square matrix"),
    ("dcrnn_h5", "adjacency pickle: NaN weight", lambda d: (_h5(d), _pkl(d, [IDS, {s: i for i, s in enumerate(IDS)},
                                                                             _nan(np.eye(4), 1, 2)]),
                                                           ({"path": "m.h5", "adj": "adj_mx.pkl"}, "adj_mx.pkl"))[2],
     "adjacency weights must be finite and >= 0"),
    ("dcrnn_h5", "adjacency pickle: truncated", lambda d: (_h5(d), _pkl(d, [IDS, {s: i for i, s in enumerate(IDS)}, np.eye(4)]),
                                                          _truncate(d / "adj_mx.pkl"),
                                                          ({"path": "m.h5", "adj": "adj_mx.pkl"}, "adj_mx.pkl"))[3],
     "file: must be a complete, readable pickle"),
    ("dcrnn_h5", "adjacency npy: wrong size", lambda d: (_h5(d), _adj_npy(d, np.eye(3)),
                                                        ({"path": "m.h5", "adj": "adj.npy"}, "adj.npy"))[2],
     "shape: the adjacency must be 4 x 4"),
    ("dcrnn_h5", "adjacency npy: object array", lambda d: (_h5(d), _adj_npy(d, np.array([[1, "a"], [None, 2]], dtype=object)),
                                                          ({"path": "m.h5", "adj": "adj.npy"}, "adj.npy"))[2],
     "file: must be a numeric .npy matrix stored without pickle"),
    ("dcrnn_h5", "adjacency npy: inf weight", lambda d: (_h5(d), _adj_npy(d, _nan(np.eye(4), 0, 3, np.inf)),
                                                        ({"path": "m.h5", "adj": "adj.npy"}, "adj.npy"))[2],
     "entry [0, 3]: adjacency weights must be finite and >= 0"),
    # ---------------------------------------------------------------- csv
    ("csv", "empty file", lambda d: (_csv(d, ""), ({"path": "s.csv"}, "s.csv"))[1], "line 1: the file must hold a row"),
    ("csv", "header only", lambda d: (_csv(d, "a,b,c,d\n"), ({"path": "s.csv", "header": True}, "s.csv"))[1],
     "line 1: the file must hold rows of readings after its header"),
    ("csv", "ragged row (short)", lambda d: (_ragged(d), ({"path": "s.csv"}, "s.csv"))[1],
     "line 3: every row must have 4 fields like line 1"),
    ("csv", "ragged row (long)", lambda d: (_csv(d, "a,b,c,d\n1,2,3,4\n5,6,7,8,9\n"), ({"path": "s.csv"}, "s.csv"))[1],
     "line 3: every row must have 4 fields"),
    ("csv", "truncated file", lambda d: (_csv(d, _good_csv()[:-9]), ({"path": "s.csv"}, "s.csv"))[1],
     "every row must have 4 fields like line 1"),
    ("csv", "non-numeric reading", lambda d: (_csv(d, _good_csv().replace("\n10,", "\nabc,")), ({"path": "s.csv"}, "s.csv"))[1],
     "line 11, column 1 (717447): readings must be numbers"),
    ("csv", "NaN reading", lambda d: (_csv(d, _good_csv().replace("\n10,", "\nnan,")), ({"path": "s.csv"}, "s.csv"))[1],
     "line 11, column 1 (717447): readings must be numbers"),
    ("csv", "inf reading", lambda d: (_csv(d, _good_csv().replace("\n10,", "\ninf,")), ({"path": "s.csv"}, "s.csv"))[1],
     "line 11, column 1 (sensor 717447): readings must be finite numbers"),
    ("csv", "empty cell", lambda d: (_csv(d, _good_csv().replace("\n10,", "\n,")), ({"path": "s.csv"}, "s.csv"))[1],
     "line 11, column 1 (sensor 717447): readings must be finite numbers"),
    ("csv", "repeated sensor id", lambda d: (_csv(d, _good_csv().replace(",".join(IDS), "a,b,a,d", 1)), ({"path": "s.csv"}, "s.csv"))[1],
     "line 1: sensor ids in the header must be distinct"),
    ("csv", "missing time_column", lambda d: (_csv(d, _good_csv()), ({"path": "s.csv", "time_column": "timestamp"}, "s.csv"))[1],
     "line 1: the header must have the time_column 'timestamp'"),
    ("csv", "bad timestamp", lambda d: (_csv(d, "t,a,b\n2012-03-01 00:00,1,2\nyesterday,3,4\n"),
                                        ({"path": "s.csv", "time_column": "t"}, "s.csv"))[1],
     "line 3, column 't': must hold a timestamp"),
    ("csv", "series shorter than input+output", lambda d: (_csv(d, _good_csv(_series(T=15))), ({"path": "s.csv"}, "s.csv"))[1],
     "time steps: each chronological part"),
    ("csv", "adjacency csv: ragged", lambda d: (_csv(d, _good_csv()), _csv(d, "1,0,0,0\n0,1,0\n0,0,1,0\n0,0,0,1\n", "adj.csv"),
                                                ({"path": "s.csv", "adj": "adj.csv"}, "adj.csv"))[2],
     "line 2: every row must have 4 fields"),
    ("csv", "adjacency csv: non-numeric", lambda d: (_csv(d, _good_csv()), _csv(d, "1,0,0,0\n0,1,x,0\n0,0,1,0\n0,0,0,1\n", "adj.csv"),
                                                     ({"path": "s.csv", "adj": "adj.csv"}, "adj.csv"))[2],
     "line 2, column 3: adjacency weights must be numbers"),
    ("csv", "adjacency csv: non-square", lambda d: (_csv(d, _good_csv()), _csv(d, "1,0,0,0\n0,1,0,0\n", "adj.csv"),
                                                    ({"path": "s.csv", "adj": "adj.csv"}, "adj.csv"))[2],
     "shape: the adjacency must be a non-empty square matrix"),
    ("csv", "adjacency csv: negative weight", lambda d: (_csv(d, _good_csv()), _csv(d, "1,0,0,0\n0,1,0,0\n0,0,1,-2\n0,0,0,1\n", "adj.csv"),
                                                         ({"path": "s.csv", "adj": "adj.csv"}, "adj.csv"))[2],
     "entry [2, 3]: adjacency weights must be finite and >= 0"),
    ("csv", "distance list: bad distance", lambda d: (_csv(d, _good_csv()), _csv(d, "from,to,cost\n717447,717446,10\n717446,773869,far\n", "dist.csv"),
                                                      ({"path": "s.csv", "adj": "dist.csv"}, "dist.csv"))[2],
     "line 3, column 3: distances must be finite numbers >= 0"),
    ("csv", "distance list: no sensor of the data", lambda d: (_csv(d, _good_csv()), _csv(d, "from,to,cost\n1,2,10\n", "dist.csv"),
                                                               ({"path": "s.csv", "adj": "dist.csv"}, "dist.csv"))[2],
     "rows: must list distances between the data's sensors"),
    # ---------------------------------------------------------------- dcrnn_npz
    ("dcrnn_npz", "empty train.npz", lambda d: (_npz(d), (d / "npz/train.npz").write_bytes(b""), ({"dir": "npz"}, "npz/train.npz"))[2],
     "file: must be a complete .npz archive"),
    ("dcrnn_npz", "truncated val.npz", lambda d: (_npz(d), _truncate(d / "npz/val.npz"), ({"dir": "npz"}, "npz/val.npz"))[2],
     "file: must be a complete .npz archive"),
    ("dcrnn_npz", "missing y", lambda d: (_npz(d, over={"test": {"y": None}}), ({"dir": "npz"}, "npz/test.npz"))[1],
     "array y: must be in the archive"),
    ("dcrnn_npz", "object array x", lambda d: (_npz(d, over={"train": {"x": np.array([[1, "a"]], dtype=object)}}),
                                               ({"dir": "npz"}, "npz/train.npz"))[1],
     "array x: must be a numeric array stored without pickle"),
    ("dcrnn_npz", "text array x", lambda d: (_npz(d, over={"val": {"x": np.full((5, 12, 3, 2), "a")}}), ({"dir": "npz"}, "npz/val.npz"))[1],
     "array x: must be numeric"),
    ("dcrnn_npz", "NaN in x", lambda d: (_npz(d, over={"train": {"x": _nan(np.ones((20, 12, 3, 2)), 3, 4)}}),
                                         ({"dir": "npz"}, "npz/train.npz"))[1],
     "array x[3, 4, 0, 0]: readings and features must be finite numbers"),
    ("dcrnn_npz", "inf in y", lambda d: (_npz(d, over={"test": {"y": _nan(np.ones((6, 12, 3, 2)), 0, 0, np.inf)}}),
                                         ({"dir": "npz"}, "npz/test.npz"))[1],
     "array y[0, 0, 0, 0]: readings and features must be finite numbers"),
    ("dcrnn_npz", "x of the wrong rank", lambda d: (_npz(d, over={"train": {"x": np.ones((20, 12, 3))}}), ({"dir": "npz"}, "npz/train.npz"))[1],
     "arrays x, y: must be (samples, steps, nodes, features)"),
    ("dcrnn_npz", "splits disagree on nodes", lambda d: (_npz(d, over={"val": {"x": np.ones((5, 12, 4, 2)), "y": np.ones((5, 12, 4, 2))}}),
                                                         ({"dir": "npz"}, "npz/val.npz"))[1],
     "array x: must have train.npz's 3 nodes x 2 features"),
    ("dcrnn_npz", "empty val split", lambda d: (_npz(d, S=(20, 0, 6)), ({"dir": "npz"}, "npz/val.npz"))[1],
     "array x: the val split must hold at least one sample"),
    ("dcrnn_npz", "windows shorter than input+output", lambda d: (_npz(d, L=2), ({"dir": "npz"}, "npz/train.npz"))[1],
     "must not exceed the steps the file holds"),
    ("dcrnn_npz", "adjacency of the wrong size", lambda d: (_npz(d), _adj_npy(d, np.eye(4)), ({"dir": "npz", "adj": "adj.npy"}, "adj.npy"))[2],
     "shape: the adjacency must be 3 x 3"),
    # ---------------------------------------------------------------- pems_npz
    ("pems_npz", "empty file", lambda d: ((d / "PEMS04.npz").write_bytes(b""), ({"path": "PEMS04.npz"}, "PEMS04.npz"))[1],
     "file: must be a complete .npz archive"),
    ("pems_npz", "truncated file", lambda d: (_pems(d), _truncate(d / "PEMS04.npz"), ({"path": "PEMS04.npz"}, "PEMS04.npz"))[2],
     "file: must be a complete .npz archive"),
    ("pems_npz", "missing data array", lambda d: (np.savez(d / "PEMS04.npz", flow=_series()), ({"path": "PEMS04.npz"}, "PEMS04.npz"))[1],
     "array data: must be in the archive"),
    ("pems_npz", "object array", lambda d: (np.savez(d / "PEMS04.npz", data=np.array([[1, None]], dtype=object)),
                                            ({"path": "PEMS04.npz"}, "PEMS04.npz"))[1],
     "array data: must be a numeric array stored without pickle"),
    ("pems_npz", "NaN reading in the target channel", lambda d: (_pems(d, _nan(np.stack([_series()] * 3, axis=2), 40, 3)),
                                                                 ({"path": "PEMS04.npz"}, "PEMS04.npz"))[1],
     "time step 40, column 4 (sensor 3): readings must be finite numbers"),
    ("pems_npz", "1-D data", lambda d: (_pems(d, np.arange(100.0)), ({"path": "PEMS04.npz"}, "PEMS04.npz"))[1],
     "array data: must be (time, sensors, channels)"),
    ("pems_npz", "ids file of the wrong length", lambda d: (_pems(d), (d / "ids.txt").write_text("a\nb\n"),
                                                            ({"path": "PEMS04.npz", "ids": "ids.txt"}, "ids.txt"))[2],
     "lines: must list one sensor id per sensor"),
    ("pems_npz", "series shorter than input+output", lambda d: (_pems(d, np.stack([_series(T=18)] * 3, axis=2)),
                                                                ({"path": "PEMS04.npz"}, "PEMS04.npz"))[1],
     "time steps: each chronological part"),
    ("pems_npz", "distance list naming no sensor", lambda d: (_pems(d), _csv(d, "from,to,cost\n7,8,10\n", "distance.csv"),
                                                              ({"path": "PEMS04.npz", "adj": "distance.csv"}, "distance.csv"))[2],
     "rows: must list distances between the data's sensors"),
]


def _nan(a: np.ndarray, i: int, j: int, v: float = np.nan) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a[(i, j)] = v
    return a


def _zero_head(a: np.ndarray, n: int) -> np.ndarray:
    a = a.copy()
    a[:n] = 0.0
    return a


def _build(tmp_path: Path, fmt: str, build) -> tuple[TrafficTask, Path]:
    ds, bad = build(tmp_path)
    spec = TrafficDataset.model_validate({"format": fmt, **ds}, context={"base_dir": str(tmp_path)})
    return TrafficTask(spec, cache=DataCache(None)), tmp_path / bad


@pytest.mark.parametrize("fmt, name, build, fragment", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_malformed_file_gets_one_clear_line_from_load(tmp_path, fmt, name, build, fragment):
    task, bad = _build(tmp_path, fmt, build)
    with pytest.raises(DataError) as e:
        task.load(DC)
    msg = str(e.value)
    lines = msg.splitlines()
    assert len(lines) == 1, msg
    m = LINE.match(lines[0])
    assert m, f"not `file: where: what must hold, but got X`: {msg}"
    assert Path(m["file"]) == bad, msg
    assert fragment in msg, msg
    REFUSED[fmt] = REFUSED.get(fmt, 0) + 1


@pytest.mark.parametrize("fmt, name, build, fragment", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_hpo_validate_refuses_each_malformed_file(tmp_path, monkeypatch, capsys, fmt, name, build, fragment):
    """The same files through `hpo validate` (in process): exit 2, the file named, no traceback."""
    from hpo.cli import main

    ds, bad = build(tmp_path)
    study = _study(tmp_path, fmt, ds)
    monkeypatch.chdir(tmp_path)  # runs/cache goes under tmp_path
    code = main(["validate", str(study)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(tmp_path / bad) in err and "Traceback" not in err, err


def _study(tmp_path: Path, fmt: str, ds: dict) -> Path:
    import json

    (tmp_path / "space.yaml").write_text(textwrap.dedent("""
        params:
          lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
        fixed: {embed_dim: 8, num_heads: 2, mlp_ratio: 1.0, fusion_heads: 2, temporal_depth_1: 1, spatial_depth_1: 1,
                temporal_depth_2: 1, spatial_depth_2: 1, input_len: 4, output_len: 3, epochs: 1, batch_size: 16,
                time_of_day: false, day_of_week: false}
        """))
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(f"""
        name: bad_{fmt}
        task: {{family: traffic, dataset: {json.dumps({"format": fmt, **ds})}}}
        space: space.yaml
        objectives: [val_mae]
        budget: {{n_trials: 1, max_epochs: 1}}
        storage: sqlite:///{tmp_path / 'hpo.db'}
        artifacts: {tmp_path / 'artifacts'}
        """))
    return path


def test_zeros_are_missing_readings_and_load(tmp_path):
    """Control: a file whose only oddity is zeros (DCRNN's missing readings) loads, in every format."""
    values = _series()
    values[10:20, 2] = 0.0
    for fmt, ds in (("dcrnn_h5", {"path": _h5(tmp_path, _frame(values))}),
                    ("csv", {"path": _csv(tmp_path, _good_csv(values))}),
                    ("pems_npz", {"path": _pems(tmp_path, np.stack([values] * 3, axis=2))}),
                    ("dcrnn_npz", {"dir": _npz(tmp_path, over={"train": {"x": np.where(np.arange(12)[None, :, None, None] < 3, 0.0,
                                                                                       np.ones((20, 12, 3, 2)) * 40)}})})):
        spec = TrafficDataset.model_validate({"format": fmt, **ds}, context={"base_dir": str(tmp_path)})
        splits = TrafficTask(spec, cache=DataCache(None)).load(TrafficDataConfig(input_len=4, output_len=3, time_of_day=False))
        assert all(splits.size(s) > 0 for s in ("train", "val", "test")), fmt


@pytest.mark.slow
def test_hpo_run_on_a_bad_traffic_file_exits_2_and_stores_no_study(tmp_path):
    from tests.conftest import hpo_cli, stored_studies

    _ragged(tmp_path)
    study = _study(tmp_path, "csv", {"path": "s.csv"})
    r = hpo_cli("run", study, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: {tmp_path / 's.csv'}: line 3: every row must have 4 fields like line 1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert stored_studies(tmp_path / "hpo.db") == []


def test_zz_figures(report_figures):
    if REFUSED:
        report_figures("traffic: malformed files refused before training", {"total": sum(REFUSED.values()), **REFUSED})
