"""No code runs from a data file or a checkpoint (issue #13, item 1).

Every attack is crafted here by hand - raw pickle opcodes for protocols 0-5, an HDF5 file with an
object column or a pickled attribute, a planted torch checkpoint - with a *sentinel* side effect (the
payload would create a file): each test asserts the payload is refused with an error naming the file
and that the sentinel does not exist, i.e. nothing ran. Real data of the same shapes (numpy arrays,
DCRNN's ``[ids, id_to_index, adj]``, DeepDTA's ``Y``, python-2 pickles) still load.
"""

from __future__ import annotations

import collections
import os
import pickle
import sqlite3
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hpo.errors import DataError, UsageError
from hpo.data.safe_pickle import ALLOWED_GLOBALS, UnsafePickleError, load_data_pickle, loads_data_pickle
from tests.conftest import hpo_cli, stored_studies

PROTOCOLS = range(6)
REFUSED: dict[str, int] = collections.Counter()


# ------------------------------------------------------------------------------------------------
# hand-made pickles
# ------------------------------------------------------------------------------------------------
def _s(p: int, text: str) -> bytes:
    """A text argument: UNICODE (protocol 0) or BINUNICODE."""
    if p == 0:
        return b"V" + text.encode("raw_unicode_escape") + b"\n"
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(p: int, v: int) -> bytes:
    return b"I" + str(v).encode() + b"\n" if p == 0 or v >= 2**31 else b"J" + struct.pack("<i", v)


def _head(p: int) -> bytes:
    return bytes([0x80, p]) if p >= 2 else b""


def _global(p: int, module: str, name: str) -> bytes:
    """GLOBAL (protocols 0-3) or STACK_GLOBAL (4-5): how pickle itself names a global."""
    if p >= 4:
        return _s(p, module) + _s(p, name) + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(p: int, *args: str) -> bytes:
    """MARK args TUPLE REDUCE: call what is on the stack."""
    return b"(" + b"".join(_s(p, a) for a in args) + b"tR"


def _touch(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').close()"


def attacks(p: int, sentinel: Path) -> dict[str, bytes]:
    """Payloads that would run code (or leak an object that does) if admitted; each creates ``sentinel``
    when it runs."""
    h, code, shell = _head(p), _touch(sentinel), f"touch '{sentinel}'"
    out = {
        "GLOBAL os.system": _global(p, "os", "system") + _call(p, shell),
        "GLOBAL posix.system": _global(p, "posix", "system") + _call(p, shell),
        "GLOBAL builtins.eval": _global(p, "builtins", "eval") + _call(p, code),
        "GLOBAL builtins.exec": _global(p, "builtins", "exec") + _call(p, code),
        # the attack of the issue: a dotted name under the old numpy.dtypes wildcard walks to builtins.eval
        "dotted numpy.dtypes __builtins__.get -> eval": _global(p, "numpy.dtypes", "__builtins__.get") + _call(p, "eval")
        + _call(p, code),
        "numpy.dtypes.__builtins__ (the builtins dict)": _global(p, "numpy.dtypes", "__builtins__"),
        "private numpy.dtypes._add_dtype_helper": _global(p, "numpy.dtypes", "_add_dtype_helper"),
        "dotted numpy ndarray.__reduce_ex__": _global(p, "numpy", "ndarray.__reduce_ex__"),
        "dotted collections OrderedDict.fromkeys": _global(p, "collections", "OrderedDict.fromkeys") + _call(p, "a"),
        # an admitted class called with arguments a data pickle never needs
        "REDUCE numpy.ndarray((2**40,), 'f8')": _global(p, "numpy", "ndarray") + b"((" + _int(p, 2**40) + b"t"
        + _s(p, "f8") + b"tR",
        "REDUCE _reconstruct(Float64DType, ...)": _global(p, "numpy._core.multiarray", "_reconstruct") + b"("
        + _global(p, "numpy.dtypes", "Float64DType") + b"(" + _int(p, 0) + b"t" + _s(p, "b") + b"tR",
        "REDUCE _reconstruct(ndarray, (2**40,), 'b')": _global(p, "numpy._core.multiarray", "_reconstruct") + b"("
        + _global(p, "numpy", "ndarray") + b"(" + _int(p, 2**40) + b"t" + _s(p, "b") + b"tR",
        "REDUCE _codecs.encode(text, 'rot13')": _global(p, "_codecs", "encode") + _call(p, "abc", "rot13"),
        "BUILD state on an OrderedDict": _global(p, "collections", "OrderedDict") + b")R" + b"(" + _s(p, "x")
        + _s(p, "y") + b"db",
        # INST / OBJ build an instance of whatever class they name (here: the dotted walk to eval)
        "INST os.system": b"(" + _s(p, shell) + b"ios\nsystem\n",
        "INST numpy.dtypes __builtins__.get -> eval": b"(" + _s(p, "eval") + b"inumpy.dtypes\n__builtins__.get\n"
        + b"(" + _s(p, code) + b"tR",
        "OBJ numpy.dtypes __builtins__.get -> eval": b"(" + _global(p, "numpy.dtypes", "__builtins__.get")
        + _s(p, "eval") + b"o" + b"(" + _s(p, code) + b"tR",
        "PERSID": b"Pexternal\n",
    }
    if p >= 2:
        out["NEWOBJ OrderedDict"] = _global(p, "collections", "OrderedDict") + b")\x81"
        out["EXT1 code 1"] = b"\x82\x01"
    if p >= 4:
        out["NEWOBJ_EX OrderedDict"] = _global(p, "collections", "OrderedDict") + b")}\x92"
    return {k: h + v + b"." for k, v in out.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_attack_payload_is_refused_and_runs_nothing(tmp_path, protocol, report_figures):
    sentinel = tmp_path / "pwned"
    payloads = attacks(protocol, sentinel)
    for name, data in payloads.items():
        path = tmp_path / f"adj_mx_{len(REFUSED)}.pkl"
        path.write_bytes(data)
        with pytest.raises(UnsafePickleError) as e:
            load_data_pickle(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: "), (name, msg)
        assert "must hold only numpy arrays and plain data" in msg and ", but got " in msg, (name, msg)
        assert "\n" not in msg
        assert not sentinel.exists(), f"{name} (protocol {protocol}) ran code"
        REFUSED[f"p{protocol}"] += 1
    report_figures(f"data safety: pickle attacks refused (protocol {protocol})", {"payloads": len(payloads),
                                                                                  "code run": 0})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_payloads_are_live(tmp_path, protocol):
    """Control: the same bytes under plain ``pickle.loads`` do run (so a refusal above is not a parse
    error of a broken payload). Only the python-level payloads are run here, in tmp_path."""
    sentinel = tmp_path / "pwned"
    payloads = attacks(protocol, sentinel)
    live = ["GLOBAL builtins.eval", "GLOBAL builtins.exec"]
    if protocol >= 4:  # dotted names are walked by protocol 4+
        live += ["dotted numpy.dtypes __builtins__.get -> eval", "INST numpy.dtypes __builtins__.get -> eval",
                 "OBJ numpy.dtypes __builtins__.get -> eval"]
    for name in live:
        pickle.loads(payloads[name])
        assert sentinel.exists(), name
        sentinel.unlink()


def test_the_issue_payload_names_what_was_refused(tmp_path):
    """The protocol-4 STACK_GLOBAL("numpy.dtypes", "__builtins__.get") of the issue: the message says
    which global and why, and nothing ran."""
    sentinel = tmp_path / "pwned"
    path = tmp_path / "Y"
    path.write_bytes(attacks(4, sentinel)["dotted numpy.dtypes __builtins__.get -> eval"])
    with pytest.raises(UnsafePickleError, match=r"global numpy\.dtypes\.__builtins__\.get: .*dotted name"):
        load_data_pickle(path)
    assert not sentinel.exists()


def test_allow_list_is_explicit_pairs_without_dotted_or_extra_private_names():
    assert all(isinstance(m, str) and isinstance(n, str) for m, n in ALLOWED_GLOBALS)  # no (module, None) wildcard
    assert not [n for _, n in ALLOWED_GLOBALS if "." in n]
    private = {n for _, n in ALLOWED_GLOBALS if n.startswith("_")}
    assert private == {"_reconstruct", "_frombuffer"}  # the numpy reconstructors, nothing else
    assert ("numpy.dtypes", "Float64DType") in ALLOWED_GLOBALS and ("numpy.dtypes", "Int64DType") in ALLOWED_GLOBALS


# ------------------------------------------------------------------------------------------------
# real data still loads
# ------------------------------------------------------------------------------------------------
def _legit() -> dict[str, object]:
    ids = ["773869", "767541", "767542"]
    adj = np.array([[1, 0.5, 0], [0.5, 1, 0.2], [0, 0.2, 1]], np.float32)
    y = np.array([[5.0, 7.3, np.nan], [11.1, 6.0, 8.2]])  # a DeepDTA/KIBA Y with a missing pair
    return {
        "dcrnn adj_mx [ids, id_to_ind, adj]": [ids, {s: i for i, s in enumerate(ids)}, adj],
        "deepdta Y float64 with NaN": y,
        "int64 matrix": np.arange(12, dtype=np.int64).reshape(3, 4),
        "fortran float32": np.asfortranarray(np.eye(3, dtype=np.float32)),
        "bool, 0-d, empty": [np.array([True, False]), np.array(3.5), np.zeros((0, 2))],
        "unicode array": np.array(["a", "bc"]),
        "numpy scalars": [np.float64(1.5), np.int32(7)],
        "dtype and dtype class": [np.dtype("f8"), type(np.dtype("f4")), np.dtype("<i8")],
        "plain containers": collections.OrderedDict(a=[1, 2.5, "x", None, True, b"raw"], b=({1, 2}, frozenset({3}))),
    }


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_real_data_pickles_load_with_every_protocol(tmp_path, protocol):
    for name, obj in _legit().items():
        path = tmp_path / "data.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        assert _same(obj, load_data_pickle(path)), (name, protocol)


def test_python2_dcrnn_pickle_loads():
    """DCRNN's adj_mx.pkl was written by python 2: py2 str (SHORT_BINSTRING) ids and array bytes, and
    numpy.dtype('f4', 0, 1) with integer flags."""
    raw_b = np.array([0.5, 1.0], dtype="<f4").tobytes()
    pkl = (b"\x80\x02]q\x00(]q\x01(U\x06773869U\x06767541e}q\x02(U\x06773869K\x00U\x06767541K\x01u"
           b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87R"
           b"(K\x01K\x02\x85cnumpy\ndtype\nq\x05U\x02f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
           b"\x89U" + bytes([len(raw_b)]) + raw_b + b"tbe.")
    ids, id_to_ind, adj = loads_data_pickle(pkl)
    assert ids == ["773869", "767541"] and id_to_ind == {"773869": 0, "767541": 1}
    assert adj.dtype == np.float32 and adj.tolist() == [0.5, 1.0]


def test_truncated_and_empty_pickles_are_data_errors(tmp_path):
    good = pickle.dumps(_legit()["dcrnn adj_mx [ids, id_to_ind, adj]"], protocol=4)
    for name, data in {"empty": b"", "truncated": good[: len(good) // 2], "not a pickle": b"hello world\n"}.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        with pytest.raises(DataError, match=f"^{path}: "):
            load_data_pickle(path)


# ------------------------------------------------------------------------------------------------
# through the real loaders and the CLI: hpo validate / hpo run refuse, nothing runs, nothing stored
# ------------------------------------------------------------------------------------------------
IDS = ["717447", "717446", "773869", "767541"]

TRAFFIC_SPACE = """
params:
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
fixed: {embed_dim: 8, num_heads: 2, mlp_ratio: 1.0, fusion_heads: 2, temporal_depth_1: 1, spatial_depth_1: 1,
        temporal_depth_2: 1, spatial_depth_2: 1, input_len: 4, output_len: 3, epochs: 1, batch_size: 16}
"""


def traffic_study(tmp_path: Path, dataset: str, name: str = "bad_traffic") -> Path:
    (tmp_path / "space.yaml").write_text(textwrap.dedent(TRAFFIC_SPACE))
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""
        name: {name}
        task:
          family: traffic
          dataset: {dataset}
        space: space.yaml
        objectives: [val_mae]
        budget: {{n_trials: 1, max_epochs: 1}}
        storage: sqlite:///{tmp_path / 'hpo.db'}
        artifacts: {tmp_path / 'artifacts'}
        """))
    return path


def _frame(T: int = 120):
    import pandas as pd

    v = (np.arange(T)[:, None] + 1 + 1000 * np.arange(len(IDS))[None, :]).astype(np.float64)
    return pd.DataFrame(v, index=pd.date_range("2012-03-01", periods=T, freq="5min"), columns=IDS)


class _Evil:
    """Pickles as a call of os.system that creates the sentinel."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch '{self.sentinel}'",))


def _validate_and_run_refuse(tmp_path: Path, study: Path, needle: str) -> str:
    v = hpo_cli("validate", study, cwd=tmp_path)
    assert v.returncode == 2, v.stdout + v.stderr
    assert needle in v.stderr, v.stderr
    r = hpo_cli("run", study, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert stored_studies(tmp_path / "hpo.db") == []
    return v.stderr


@pytest.mark.slow
def test_cli_refuses_a_crafted_adjacency_pickle_before_any_trial(tmp_path):
    sentinel = tmp_path / "pwned"
    _frame().to_hdf(tmp_path / "metr-la.h5", key="df")
    (tmp_path / "adj_mx.pkl").write_bytes(attacks(4, sentinel)["dotted numpy.dtypes __builtins__.get -> eval"])
    study = traffic_study(tmp_path, "{format: dcrnn_h5, path: metr-la.h5, adj: adj_mx.pkl}")
    err = _validate_and_run_refuse(tmp_path, study, "adj_mx.pkl: global numpy.dtypes.__builtins__.get")
    assert not sentinel.exists(), err
    REFUSED["cli adjacency"] += 1


def _h5_with_object_column(path: Path, sentinel: Path) -> None:
    df = _frame()
    df["717446"] = df["717446"].astype(object)
    df.iloc[0, 1] = _Evil(sentinel)  # pandas stores an object block pickled
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PerformanceWarning: pickling an object block
        df.to_hdf(path, key="df")


def test_h5_object_column_is_refused_by_the_loader_and_runs_nothing(tmp_path):
    from hpo.data.cache import DataCache
    from models.traffic import TrafficDataConfig, TrafficDataset, TrafficTask

    sentinel = tmp_path / "pwned"
    _h5_with_object_column(tmp_path / "m.h5", sentinel)
    spec = TrafficDataset.model_validate({"format": "dcrnn_h5", "path": "m.h5"}, context={"base_dir": str(tmp_path)})
    task = TrafficTask(spec, cache=DataCache(None))
    [p] = task.check()
    assert "object column" in p.message and "never unpickled" in p.message
    with pytest.raises(DataError, match=rf"^{tmp_path / 'm.h5'}: /df/block1_values: must be a plain numeric"):
        task.load(TrafficDataConfig(input_len=4, output_len=3))
    assert not sentinel.exists()
    REFUSED["h5 object column"] += 1


@pytest.mark.slow
def test_cli_refuses_an_h5_object_column_before_any_trial(tmp_path):
    sentinel = tmp_path / "pwned"
    _h5_with_object_column(tmp_path / "metr-la.h5", sentinel)
    study = traffic_study(tmp_path, "{format: dcrnn_h5, path: metr-la.h5}")
    _validate_and_run_refuse(tmp_path, study, "metr-la.h5: /df/block1_values: must be a plain numeric or text array")
    assert not sentinel.exists()


def test_h5_pickled_attribute_is_never_unpickled(tmp_path):
    """PyTables unpickles node attributes as soon as a node is opened (pandas' HDFStore.keys() opens
    them all); the h5py reader never does: the readings load and the planted attribute does nothing."""
    import tables

    from hpo.data.cache import DataCache
    from models.traffic import TrafficDataConfig, TrafficDataset, TrafficTask

    sentinel = tmp_path / "pwned"
    _frame().to_hdf(tmp_path / "m.h5", key="df")
    with tables.open_file(tmp_path / "m.h5", "a") as f:  # writing pickles; nothing runs yet
        f.root.df._v_attrs.note = _Evil(sentinel)
        f.root.df.block0_values._v_attrs.note = _Evil(sentinel)
    assert not sentinel.exists()
    spec = TrafficDataset.model_validate({"format": "dcrnn_h5", "path": "m.h5"}, context={"base_dir": str(tmp_path)})
    task = TrafficTask(spec, cache=DataCache(None))
    assert task.check() == []
    splits = task.load(TrafficDataConfig(input_len=4, output_len=3))
    assert splits.info["sensor_ids"] == IDS and splits.size("train") > 0
    assert not sentinel.exists()
    REFUSED["h5 pickled attribute"] += 1


def test_h5_table_format_names_are_read_with_the_restricted_unpickler(tmp_path):
    """A table-format frame keeps its column names in pickled attributes; they are read by
    hpo.data.safe_pickle, so a planted payload there is refused and runs nothing."""
    import h5py

    from hpo.data.cache import DataCache
    from models.traffic import TrafficDataConfig, TrafficDataset, TrafficTask

    sentinel = tmp_path / "pwned"
    _frame().to_hdf(tmp_path / "m.h5", key="df", format="table")
    with h5py.File(tmp_path / "m.h5", "r+") as f:
        f["df"].attrs["non_index_axes"] = np.bytes_(pickle.dumps(_Evil(sentinel), protocol=0))
    spec = TrafficDataset.model_validate({"format": "dcrnn_h5", "path": "m.h5"}, context={"base_dir": str(tmp_path)})
    with pytest.raises(UnsafePickleError, match=r"m\.h5: /df attribute non_index_axes: global posix\.system"):
        TrafficTask(spec, cache=DataCache(None)).load(TrafficDataConfig(input_len=4, output_len=3))
    assert not sentinel.exists()
    REFUSED["h5 table attribute"] += 1


# ------------------------------------------------------------------------------------------------
# checkpoints: weights_only, COMPLETE trials only, only the artifact the trial recorded
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def trained(toy_study, tmp_path):
    """A toy study whose trials kept their checkpoints."""
    from hpo.store.stored import load_stored_study
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    study = load_study(toy_study(n_trials=2))
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    ostudy = load_stored_study(study.storage_url(), study.name)
    return ostudy, str(tmp_path / "artifacts"), tmp_path


def _checkpoint_attr(db: Path, trial_number: int, artifact_id: str, file: Path | None = None) -> None:
    """Point a finished trial's ``checkpoint`` user attr at another artifact (a store record edit), and
    its ``checkpoint_sha256`` at that of ``file`` (an attacker who edits records edits both)."""
    import hashlib
    import json

    with sqlite3.connect(db) as con:
        [(trial_id,)] = con.execute("select trial_id from trials where number = ?", (trial_number,)).fetchall()
        n = con.execute("update trial_user_attributes set value_json = ? where trial_id = ? and key = 'checkpoint'",
                        (json.dumps(artifact_id), trial_id)).rowcount
        assert n == 1
        if file is not None:
            n = con.execute("update trial_user_attributes set value_json = ? where trial_id = ? and key = 'checkpoint_sha256'",
                            (json.dumps(hashlib.sha256(file.read_bytes()).hexdigest()), trial_id)).rowcount
            assert n == 1


def _attach(db: Path, artifacts: str, trial_number: int, file: Path) -> str:
    """Attach ``file`` to a finished trial as an artifact, the records optuna's upload_artifact (and
    optuna-dashboard's upload API) write: the file in the artifact store, ``artifacts:<id>`` on the trial."""
    import json
    import uuid

    import optuna

    artifact_id = str(uuid.uuid4())
    with open(file, "rb") as f:
        optuna.artifacts.FileSystemArtifactStore(artifacts).write(artifact_id, f)
    meta = {"artifact_id": artifact_id, "filename": file.name, "mimetype": "application/octet-stream", "encoding": None}
    with sqlite3.connect(db) as con:
        [(trial_id,)] = con.execute("select trial_id from trials where number = ?", (trial_number,)).fetchall()
        con.execute("insert into trial_system_attributes (trial_id, key, value_json) values (?, ?, ?)",
                    (trial_id, f"artifacts:{artifact_id}", json.dumps(json.dumps(meta))))
    return artifact_id


def _complete(ostudy):
    from optuna.trial import TrialState

    return [t for t in ostudy.get_trials() if t.state == TrialState.COMPLETE and t.user_attrs.get("checkpoint")]


def _reload(ostudy, db: Path):
    """The study read afresh from the store (a new storage object: no cached trials)."""
    from hpo.store.stored import load_stored_study

    return load_stored_study(f"sqlite:///{db}", ostudy.study_name)


@pytest.mark.slow
def test_trial_checkpoints_load_under_weights_only(trained):
    from hpo.analysis.trained import load_trial_model

    ostudy, artifacts, tmp_path = trained
    trial = _complete(ostudy)[0]
    task, splits, model = load_trial_model(ostudy, trial.number, artifacts, cache_dir=str(tmp_path / "cache"))
    assert not model.training and sum(p.numel() for p in model.parameters()) == trial.user_attrs["n_params"]


@pytest.mark.slow
def test_planted_checkpoint_is_refused_and_runs_nothing(trained):
    """A torch file holding a pickled callable with a side effect, uploaded to a trial as
    optuna-dashboard's API does and named by the trial's record: weights_only refuses it."""
    import optuna
    import torch

    from hpo.analysis.trained import load_trial_model

    ostudy, artifacts, tmp_path = trained
    sentinel = tmp_path / "pwned"
    trial = _complete(ostudy)[0]
    planted = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "task": "toy", "study": ostudy.study_name, "trial": trial.number, "config": {},
                "model_state": _Evil(sentinel)}, planted)
    assert not sentinel.exists()
    artifact = _attach(tmp_path / "hpo.db", artifacts, trial.number, planted)
    _checkpoint_attr(tmp_path / "hpo.db", trial.number, artifact, planted)
    ostudy = _reload(ostudy, tmp_path / "hpo.db")
    with pytest.raises(DataError, match=rf"trial #{trial.number} checkpoint \(artifact {artifact}\): checkpoint: must "
                                        "hold only tensors and plain data .*weights_only=True"):
        load_trial_model(ostudy, trial.number, artifacts, cache_dir=str(tmp_path / "cache"))
    assert not sentinel.exists()
    REFUSED["planted checkpoint"] += 1


@pytest.mark.slow
def test_a_checkpoint_file_replaced_in_the_artifact_folder_is_refused(trained):
    """The trial records its checkpoint's sha256; a file changed in the artifact folder afterwards
    (someone with write access to the share) is refused before it is read."""
    from hpo.analysis.trained import load_trial_model

    ostudy, artifacts, tmp_path = trained
    trial = _complete(ostudy)[0]
    digest = trial.user_attrs["checkpoint_sha256"]
    assert len(digest) == 64
    path = Path(artifacts) / trial.user_attrs["checkpoint"]
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\0")
        with pytest.raises(DataError, match=rf"must be the file the trial wrote \(sha256 {digest}\), but got sha256 .*replaced"):
            load_trial_model(_reload(ostudy, tmp_path / "hpo.db"), trial.number, artifacts, cache_dir=str(tmp_path / "cache"))
    finally:
        path.write_bytes(original)
    REFUSED["replaced checkpoint file"] += 1


@pytest.mark.slow
def test_checkpoint_of_another_trial_or_an_unattached_file_is_refused(trained):
    import optuna

    from hpo.analysis.trained import load_trial_model

    ostudy, artifacts, tmp_path = trained
    a, b = _complete(ostudy)[:2]
    _checkpoint_attr(tmp_path / "hpo.db", b.number, a.user_attrs["checkpoint"])  # b names a's file
    with pytest.raises(DataError, match=rf"trial #{b.number}: user attr checkpoint: must be one of the trial's own artifacts"):
        load_trial_model(_reload(ostudy, tmp_path / "hpo.db"), b.number, artifacts, cache_dir=str(tmp_path / "cache"))
    # a file put into the artifact folder under an id no trial recorded
    store = optuna.artifacts.FileSystemArtifactStore(artifacts)
    with open(tmp_path / "x.pt", "wb") as f:
        f.write(b"not a checkpoint")
    with open(tmp_path / "x.pt", "rb") as f:
        store.write("0123456789abcdef0123456789abcdef", f)
    _checkpoint_attr(tmp_path / "hpo.db", b.number, "0123456789abcdef0123456789abcdef")
    with pytest.raises(DataError, match="must be one of the trial's own artifacts"):
        load_trial_model(_reload(ostudy, tmp_path / "hpo.db"), b.number, artifacts, cache_dir=str(tmp_path / "cache"))
    _checkpoint_attr(tmp_path / "hpo.db", b.number, "../../etc/passwd")
    with pytest.raises(DataError, match="must be an artifact id"):
        load_trial_model(_reload(ostudy, tmp_path / "hpo.db"), b.number, artifacts, cache_dir=str(tmp_path / "cache"))
    REFUSED["foreign checkpoint id"] += 3


@pytest.mark.slow
def test_checkpoint_of_a_trial_that_is_not_complete_is_refused(trained):
    """A FAIL trial whose record names a perfectly good checkpoint file: not loaded (checkpoints are
    results of COMPLETE trials only)."""
    import optuna

    from hpo.analysis.trained import load_trial_model

    ostudy, artifacts, tmp_path = trained
    good = _complete(ostudy)[0]
    path = tmp_path / "copy.pt"
    optuna.artifacts.download_artifact(artifact_store=optuna.artifacts.FileSystemArtifactStore(artifacts),
                                       file_path=str(path), artifact_id=good.user_attrs["checkpoint"])
    t = ostudy.ask()
    artifact = optuna.artifacts.upload_artifact(artifact_store=optuna.artifacts.FileSystemArtifactStore(artifacts),
                                                file_path=str(path), study_or_trial=t)
    t.set_user_attr("checkpoint", artifact)
    ostudy.tell(t, state=optuna.trial.TrialState.FAIL)
    with pytest.raises(UsageError, match=rf"trial #{t.number}: state: must be COMPLETE to load its checkpoint .* but got FAIL"):
        load_trial_model(_reload(ostudy, tmp_path / "hpo.db"), t.number, artifacts, cache_dir=str(tmp_path / "cache"))
    REFUSED["non-complete checkpoint"] += 1


@pytest.mark.slow
@pytest.mark.parametrize("family", ["traffic", "face3d", "drug_target", "crystal_text"])
def test_every_familys_trial_checkpoint_loads_under_weights_only(tmp_path, family):
    """What ``_save_checkpoint`` writes for a trial of each family (config, metrics, weights and the
    task's checkpoint_extras: scalers, vocabularies) loads with weights_only=True."""
    from hpo.analysis.trained import load_trial_model
    from hpo.store.stored import load_stored_study
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    root = Path(__file__).resolve().parents[1]
    sets = [f"storage=sqlite:///{tmp_path / 'hpo.db'}", f"artifacts={tmp_path / 'artifacts'}", "budget.n_trials=1",
            "budget.max_epochs=1", "training.epochs=1"]
    study = load_study(root / "studies" / "smoke" / f"{family}.yaml", sets)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    ostudy = load_stored_study(study.storage_url(), study.name)
    [trial] = _complete(ostudy)
    _, _, model = load_trial_model(ostudy, trial.number, str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"))
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["n_params"]


def test_load_checkpoint_refuses_non_checkpoints(tmp_path):
    import torch

    from hpo.store.checkpoint import load_checkpoint

    sentinel = tmp_path / "pwned"
    torch.save([_Evil(sentinel)], tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"evil\.pt: checkpoint: must hold only tensors and plain data"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"other\.pt: checkpoint: must be a format-1 checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:40])
    with pytest.raises(DataError, match=r"cut\.pt: checkpoint: must be a complete torch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    assert not sentinel.exists()


def test_zz_attack_figures(report_figures):
    """The figure of this file: every attack refused (runs last in file order)."""
    if REFUSED:
        report_figures("data safety: attacks refused, nothing ran", {"total": sum(REFUSED.values()), **REFUSED})
