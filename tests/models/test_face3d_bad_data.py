"""face3d: a corpus of malformed .npz files, each refused before the first trial.

A face3d dataset is one ``.npz`` (``inputs`` (N, T, F), ``targets`` (N, D), optional ``identity``
(N, E) and ``ids`` (N,)). The corpus breaks it every way a stranger's file can: empty, truncated
(cut archive, a header promising more data than the file holds), corrupt members, not an archive at
all, object arrays (which only unpickling could load: refused before numpy reads them), missing
arrays, non-numeric / NaN / infinite values, shapes that disagree, zero-norm targets, too few samples
or ids for the split, splits left empty. ``task.load`` must refuse each with a :class:`DataError`
whose every line reads ``file: where: what must hold, but got X``; ``hpo validate`` / ``hpo run`` exit
2 on them before any trial with nothing stored.
"""

from __future__ import annotations

import io
import json
import textwrap
import zipfile

import numpy as np
import pytest

from hpo.cli import main
from hpo.errors import DataError
from hpo.tasks import get_task
from models.face3d.data import Face3DDataset
from tests.conftest import stored_studies

Task = get_task("face3d")
N, T, F, D, E = 40, 5, 3, 4, 6


def good_arrays(**change):
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.normal(size=(N, T, F)), "targets": rng.normal(size=(N, D)),
              "identity": rng.normal(size=(N, E)), "ids": np.arange(N) // 4}  # 10 people, 4 samples each
    arrays.update(change)
    return {k: v for k, v in arrays.items() if v is not None}


def with_value(name, index, value):
    arr = good_arrays()[name].astype(np.float64)
    arr[index] = value
    return arr


def npz(**change):
    """Content: the valid arrays with some replaced (``None`` drops one)."""
    def write(path):
        np.savez(path, **good_arrays(**change))
    return write


def raw(content: bytes):
    return lambda path: path.write_bytes(content)


def cut_npz(keep_fraction):
    def write(path):
        np.savez(path, **good_arrays())
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep_fraction)])
    return write


def corrupt_member(path):
    """Flip bytes inside the stored ``targets`` data: the archive is whole but the member fails its CRC."""
    np.savez(path, **good_arrays())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("targets.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200  # inside the array data
    data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def lying_header(path):
    """A member whose .npy header declares (10^9, 5, 3) float64 but holds 64 bytes: never allocated."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9, T, F)})
    buf.write(b"\0" * 64)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inputs.npy", buf.getvalue())
        tb = io.BytesIO()
        np.save(tb, good_arrays()["targets"])
        zf.writestr("targets.npy", tb.getvalue())


def npy_not_npz(path):
    with open(path, "wb") as f:
        np.save(f, good_arrays()["inputs"])


def object_inputs(path):
    arrays = good_arrays()
    arrays["inputs"] = np.array([row for row in arrays["inputs"]] + [None], dtype=object)[:-1]
    np.savez(path, **arrays)  # numpy writes object arrays as pickles


#: (case, writer of faces.npz, dataset overrides, message fragment); each line must name the file
NPZ_CORPUS = [
    ("empty file", raw(b""), {}, "must be a .npz archive of arrays (numpy.savez), but got an empty file"),
    ("text file", raw(b"inputs,targets\n1,2\n"), {}, "must be a .npz archive of arrays (numpy.savez), but got a file starting with b'inputs'"),
    ("cut archive (half)", cut_npz(0.5), {}, "but got a truncated or corrupt zip archive"),
    ("cut archive (last bytes)", cut_npz(0.98), {}, "but got a truncated or corrupt zip archive"),
    ("corrupt member (bad CRC)", corrupt_member, {}, "targets: must be a complete, readable array (the file is truncated or corrupt), but got BadZipFile: Bad CRC-32"),
    ("header promises more than the file holds", lying_header, {}, "inputs: must hold the 120000000000 bytes its header declares"),
    ("a .npy, not a .npz", npy_not_npz, {}, "but got a single .npy array (numpy.save), not an archive of named arrays"),
    ("a pickle", raw(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."), {}, "but got a pickle (refused: loading it could run code)"),
    ("empty archive", lambda p: zipfile.ZipFile(p, "w").close(), {}, "must hold the arrays inputs and targets, but got no inputs and no targets (arrays: none)"),
    ("no targets", npz(targets=None), {}, "must hold the arrays inputs and targets, but got no targets (arrays: identity, ids, inputs)"),
    ("no inputs", npz(inputs=None), {}, "but got no inputs"),
    ("object inputs", object_inputs, {}, "inputs: must be an array of numbers, but got an object array (refused: loading it would unpickle)"),
    ("object ids", npz(ids=np.array(["a"] * N, dtype=object)), {}, "ids: must be an array of numbers, but got an object array"),
    ("string targets", npz(targets=np.full((N, D), "0.5")), {}, "targets: must hold real numbers (int or float), but got dtype <U3"),
    ("bool targets", npz(targets=np.ones((N, D), dtype=bool)), {}, "but got dtype bool"),
    ("complex inputs", npz(inputs=np.ones((N, T, F), dtype=complex)), {}, "inputs: must hold real numbers (int or float), but got dtype complex128"),
    ("structured inputs", npz(inputs=np.zeros(N, dtype=[("x", "f8"), ("y", "f8")])), {}, "inputs: must hold real numbers"),
    ("NaN in inputs", npz(inputs=with_value("inputs", (7, 2, 1), np.nan)), {}, "inputs must be finite numbers, but got sample 7 (id 1) = nan"),
    ("inf in targets", npz(targets=with_value("targets", (13, 0), np.inf)), {}, "targets must be finite numbers, but got sample 13 (id 3) = inf"),
    ("-inf in identity", npz(identity=with_value("identity", (0, 5), -np.inf)), {}, "identity must be finite numbers, but got sample 0 (id 0) = -inf"),
    ("NaN float id", npz(ids=with_value("ids", 3, np.nan)), {}, "ids must be finite numbers, but got sample 3 = nan"),
    ("1-D targets", npz(targets=np.ones(N)), {}, "targets: must have shape (N, D), but got (40,)"),
    ("1-D inputs", npz(inputs=np.ones(N)), {}, "inputs: must have shape (N, T, F) or (N, F), but got (40,)"),
    ("4-D inputs", npz(inputs=np.ones((N, T, F, 2))), {}, "but got (40, 5, 3, 2)"),
    ("targets with fewer rows", npz(targets=np.ones((N - 1, D))), {}, "targets: must have 40 rows (one per sample) and 2 dimensions, but got shape (39, 4)"),
    ("identity with more rows", npz(identity=np.ones((N + 2, E))), {}, "identity: must have 40 rows (one per sample) and 2 dimensions, but got shape (42, 6)"),
    ("1-D identity", npz(identity=np.ones(N)), {}, "identity: must have 40 rows (one per sample) and 2 dimensions, but got shape (40,)"),
    ("ids of the wrong length", npz(ids=np.arange(N - 5)), {}, "ids: must have 40 rows (one per sample) and 1 dimensions, but got shape (35,)"),
    ("2-D ids", npz(ids=np.arange(N).reshape(N, 1)), {}, "but got shape (40, 1)"),
    ("no samples", npz(inputs=np.ones((0, T, F)), targets=np.ones((0, D)), identity=None, ids=None), {}, "inputs: must hold at least one sample, but got shape (0, 5, 3)"),
    ("no tokens", npz(inputs=np.ones((N, 0, F))), {}, "inputs: must have at least one token (T) of at least one feature (F), but got shape (40, 0, 3)"),
    ("no target dimensions", npz(targets=np.ones((N, 0))), {}, "targets: must have at least one dimension (D), but got shape (40, 0)"),
    ("zero-norm target", npz(targets=with_value("targets", 21, 0.0)), {},
     "targets: must have a non-zero norm (the cosine similarity of a zero vector is undefined), but got all zeros at sample 21 (id 5)"),
    ("too few samples for the split", npz(inputs=np.ones((2, T, F)), targets=np.ones((2, D)), identity=None, ids=None), {},
     "must hold enough samples for val_fraction 0.1 and test_fraction 0.1 to leave no split empty (at least 6 samples), but got 2 samples"),
    ("one id for all samples", npz(ids=np.zeros(N, dtype=int)), {}, "to leave no split empty (at least 6 ids), but got 1 ids"),
    ("test split left empty", npz(), {"test_fraction": 0.04}, "but got 10 ids (the test split would be empty)"),
    ("test_fraction 0", npz(), {"test_fraction": 0.0, "group_by_ids": False}, "but got 40 samples (the test split would be empty)"),
]


def assert_lines_name_file_and_value(message: str):
    lines = [line for line in message.splitlines() if line.strip()]
    assert lines, message
    for line in lines:
        assert line.split(": ", 1)[0].endswith("faces.npz") and ", but got " in line, line


def refusal(tmp_path, write, overrides) -> str:
    path = tmp_path / "faces.npz"
    write(path)
    spec = Face3DDataset.model_validate({"format": "npz", "path": str(path), **overrides})
    with pytest.raises(DataError) as e:
        Task(spec).load(Task.DataConfig())
    return str(e.value)


def test_the_valid_file_loads(tmp_path):
    np.savez(tmp_path / "faces.npz", **good_arrays())
    splits = Task(Face3DDataset.model_validate({"format": "npz", "path": str(tmp_path / "faces.npz")})).load(Task.DataConfig())
    assert splits.info["n_samples"] == N and all(splits.size(k) > 0 for k in ("train", "val", "test"))
    assert splits.info["identity_dim"] == E


def test_string_ids_and_int_inputs_are_valid(tmp_path):
    np.savez(tmp_path / "faces.npz", **good_arrays(ids=np.array([f"person{i // 4}" for i in range(N)]),
                                                   inputs=np.arange(N * T * F).reshape(N, T, F)))
    splits = Task(Face3DDataset.model_validate({"format": "npz", "path": str(tmp_path / "faces.npz")})).load(Task.DataConfig())
    assert splits.info["grouped_by_ids"] and splits.size("test") == 4  # one of 10 people


@pytest.mark.parametrize("case, write, overrides, fragment", NPZ_CORPUS, ids=[c[0] for c in NPZ_CORPUS])
def test_malformed_npz_is_refused(tmp_path, case, write, overrides, fragment):
    msg = refusal(tmp_path, write, overrides)
    assert fragment in msg, msg
    assert_lines_name_file_and_value(msg)


def test_every_problem_of_a_file_is_listed(tmp_path):
    msg = refusal(tmp_path, npz(inputs=with_value("inputs", (1, 0, 0), np.nan), targets=with_value("targets", (2, 1), np.inf)), {})
    lines = msg.splitlines()
    assert len(lines) == 2 and "inputs must be finite" in lines[0] and "targets must be finite" in lines[1]


def test_the_check_of_the_spec_refuses_broken_archives_without_a_traceback(tmp_path):
    """``hpo validate`` first runs the cheap ``check``: a cut or empty archive is a problem there too."""
    for write in (raw(b""), cut_npz(0.5), npy_not_npz):
        path = tmp_path / "faces.npz"
        write(path)
        problems = Task(Face3DDataset.model_validate({"format": "npz", "path": str(path)})).check()
        assert [p.path for p in problems] == ["task.dataset.path"] and "must be a complete .npz archive" in problems[0].message


def test_the_corpus_is_refused_before_training(tmp_path, report_figures):
    refused = 0
    for k, (_, write, overrides, fragment) in enumerate(NPZ_CORPUS):
        (tmp_path / str(k)).mkdir()
        refused += fragment in refusal(tmp_path / str(k), write, overrides)
    report_figures("face3d malformed data files refused before training", {"npz": f"{refused}/{len(NPZ_CORPUS)}"})
    assert refused == len(NPZ_CORPUS)


# ---- through the command line -----------------------------------------------------------------------------
STUDY = """
name: bad-faces
task:
  family: face3d
  dataset: {dataset}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
  fixed: {{d_model: 8, nhead: 2, num_layers: 1, dim_feedforward: 16}}
objectives: [val_cosine]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 1}}
training: {{epochs: 1, batch_size: 8}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


def write_study(tmp_path, **overrides):
    path = tmp_path / "study.yaml"
    dataset = json.dumps({"format": "npz", "path": "faces.npz", **overrides})
    path.write_text(textwrap.dedent(STUDY).format(dataset=dataset, db=tmp_path / "hpo.db", artifacts=tmp_path / "artifacts"))
    return path


CLI_CASES = ["empty file", "cut archive (half)", "object inputs", "NaN in inputs", "inf in targets", "targets with fewer rows",
             "zero-norm target", "test split left empty"]


def test_validate_accepts_the_valid_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "faces.npz", **good_arrays())
    assert main(["validate", str(write_study(tmp_path))]) == 0


@pytest.mark.parametrize("case", CLI_CASES)
def test_validate_refuses_a_malformed_npz_with_exit_2(tmp_path, monkeypatch, capsys, case):
    _, write, overrides, fragment = next(c for c in NPZ_CORPUS if c[0] == case)
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "faces.npz")
    assert main(["validate", str(write_study(tmp_path, **overrides))]) == 2
    err = capsys.readouterr().err
    # the cheap spec check words container problems as a problem of task.dataset.path
    assert (fragment in err or fragment.split("but got ", 1)[-1] in err) and "Traceback" not in err, err


def test_run_on_a_malformed_npz_exits_2_and_stores_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    npz(targets=with_value("targets", (13, 0), np.inf))(tmp_path / "faces.npz")
    assert main(["run", str(write_study(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "targets must be finite numbers, but got sample 13 (id 3) = inf" in err and "Traceback" not in err, err
    assert stored_studies(tmp_path / "hpo.db") == []
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*"))
