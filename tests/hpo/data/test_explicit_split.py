"""Explicit splits (``task.dataset.split_file`` / ``split_field``), defined once in hpo.data, read by every family.

A split file is a JARVIS-leaderboard-shaped JSON ({"train": {id: target}, "val": ..., "test": ...}), a JSON of
id lists (ALIGNN's ids_train_val_test.json too) or a CSV of ``id,split`` rows. Every malformed file is refused
before the first trial as ``file: task.dataset.split_file: what must hold, but got X`` with exit 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from hpo.data.split import NAMES, explicit_split, labels_split, read_split_file
from hpo.errors import DataError

LINE = re.compile(r"^(?P<file>[^:]+): task\.dataset\.split_(file|field): .*must .*, but got .+$")


def _write(tmp_path: Path, content, name: str = "split.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _refused(path: Path, fragment: str) -> str:
    with pytest.raises(DataError) as info:
        read_split_file(path)
    text = str(info.value)
    assert LINE.match(text), text
    assert text.startswith(f"{path}: "), text
    assert fragment in text, text
    return text


# ------------------------------------------------------------------------------------ the file shapes
LEADERBOARD = {"train": {"JVASP-0": 1.0, "JVASP-2": 1.2, "JVASP-3": 1.3, "JVASP-5": 1.5},
               "val": {"JVASP-1": 1.1}, "test": {"JVASP-4": 1.4, "JVASP-6": 1.6}}


def test_a_leaderboard_shaped_file_gives_its_ids_per_split(tmp_path):
    parts = read_split_file(_write(tmp_path, LEADERBOARD))
    assert parts == {"train": ["JVASP-0", "JVASP-2", "JVASP-3", "JVASP-5"], "val": ["JVASP-1"], "test": ["JVASP-4", "JVASP-6"]}


def test_lists_alignn_names_and_csv_read_the_same(tmp_path):
    want = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert read_split_file(_write(tmp_path, want)) == want
    alignn = {"id_train": ["a", "b"], "id_val": ["c"], "id_test": ["d"]}  # ALIGNN's ids_train_val_test.json
    assert read_split_file(_write(tmp_path, alignn, "ids_train_val_test.json")) == want
    assert read_split_file(_write(tmp_path, "id,split\na,train\nb,train\nc,val\nd,test\n", "s.csv")) == want
    assert read_split_file(_write(tmp_path, "a,train\nb,TRAIN\nc,valid\n\nd,test\n", "t.csv")) == want  # no header


@pytest.mark.parametrize("content, name, fragment", [
    ("{not json", "s.json", "invalid JSON"),
    ([["a"], ["b"]], "s.json", "but got a JSON list"),
    ({"train": ["a"], "val": ["b"], "test": ["c"], "holdout": ["d"]}, "s.json", "must have only the keys train, val, test"),
    ({"train": ["a"], "val": [], "test": ["c"]}, "s.json", "but got an empty val split"),
    ({"train": ["a"], "val": ["b"]}, "s.json", "but got no test split"),
    ({"train": ["a", "b"], "val": ["b"], "test": ["c"]}, "s.json", "'b' in train and val"),
    ({"train": ["a", "a"], "val": ["b"], "test": ["c"]}, "s.json", "'a' in train again"),
    ({"train": "a", "val": ["b"], "test": ["c"]}, "s.json", "train must be a list of ids or row indices"),
    ({"train": [["a"]], "val": ["b"], "test": ["c"]}, "s.json", "train must be a list"),
    ({"train": ["a"], "val": ["b"], "test": ["c"], "id_test": ["d"]}, "s.json", "but got test twice"),
    ("id,split\na,train\nb,holdout\n", "s.csv", "row 3 = 'b,holdout'"),
    ("a,train,extra\n", "s.csv", "must be 'id,split' rows"),
])
def test_a_malformed_split_file_is_refused_naming_the_file_and_the_key(tmp_path, content, name, fragment):
    _refused(_write(tmp_path, content, name), fragment)


def test_a_missing_split_file_is_refused(tmp_path):
    _refused(tmp_path / "nope.json", "(no such file)")


# ----------------------------------------------------------------------------------- matching to records
def test_ids_are_matched_to_the_records_and_unlisted_records_are_unused(tmp_path, caplog):
    parts = read_split_file(_write(tmp_path, LEADERBOARD))
    ids = [f"JVASP-{k}" for k in range(8)]  # JVASP-7 is in no split
    with caplog.at_level("INFO"):
        out = explicit_split(parts, 8, ids, "dft.json", file=tmp_path / "split.json")
    assert {k: v.tolist() for k, v in out.items()} == {"train": [0, 2, 3, 5], "val": [1], "test": [4, 6]}
    assert all(v.dtype == np.int64 for v in out.values())
    assert "1 of 8 records of dft.json are in no split" in caplog.text


def test_unknown_ids_are_refused_naming_them(tmp_path):
    parts = read_split_file(_write(tmp_path, {**LEADERBOARD, "test": {"JVASP-4": 1.4, "JVASP-99": 2.0}}))
    with pytest.raises(DataError) as info:
        explicit_split(parts, 8, [f"JVASP-{k}" for k in range(8)], "dft.json", file=tmp_path / "split.json")
    text = str(info.value)
    assert LINE.match(text) and text.startswith(f"{tmp_path / 'split.json'}: "), text
    assert "but got 1 unknown: 'JVASP-99' (test)" in text


def test_an_id_that_several_records_carry_is_refused():
    with pytest.raises(DataError, match="ids shared by several records: 'a'"):
        explicit_split({"train": ["a"], "val": ["b"], "test": ["c"]}, 4, ["a", "a", "b", "c"], "d.csv")


def test_without_ids_entries_are_row_indices_in_range():
    out = explicit_split({"train": [0, "2"], "val": [1], "test": [3]}, 5, None, "d.csv")
    assert {k: v.tolist() for k, v in out.items()} == {"train": [0, 2], "val": [1], "test": [3]}
    with pytest.raises(DataError, match=r"row indices 0 \.\. 4 .*but got 2 out of range or not integers: 5 \(val\), 'x' \(test\)"):
        explicit_split({"train": [0], "val": [5], "test": ["x"]}, 5, None, "d.csv")


def test_labels_give_the_parts_and_a_bad_or_missing_part_is_refused():
    out = labels_split(["train", "val", "Test", "train", "validation"], "d.csv")
    assert {k: v.tolist() for k, v in out.items()} == {"train": [0, 3], "val": [1, 4], "test": [2]}
    with pytest.raises(DataError, match=r"^d\.csv: task\.dataset\.split_field: every record's value must be train, val "
                                        r"or test, but got record 1 \(id b\) = 'holdout'"):
        labels_split(["train", "holdout", "test"], "d.csv", ids=["a", "b", "c"])
    with pytest.raises(DataError, match="but got none in test"):
        labels_split(["train", "val"], "d.csv")


# ----------------------------------------------------------------------------------- the dataset section
def _crystal_spec(data: dict, base: Path):
    from models.crystal_text.data import CrystalTextDataset

    return CrystalTextDataset.model_validate(data, context={"base_dir": base})


def _problems(data: dict, base: Path) -> list:
    from pydantic import ValidationError

    from hpo.spec.pydantic_errors import problems_from_validation
    from models.crystal_text.data import CrystalTextDataset

    with pytest.raises(ValidationError) as info:
        _crystal_spec(data, base)
    return [p.render("s.yaml") for p in problems_from_validation(info.value, CrystalTextDataset, data, prefix="task.dataset")]


@pytest.mark.parametrize("data, line", [
    ({"format": "dcdft", "split_file": "s.json", "val_fraction": 0.2},
     "s.yaml: task.dataset.val_fraction: must not be set beside split_file: an explicit split replaces the random one, but got 0.2"),
    ({"format": "dcdft", "split_file": "s.json", "split_seed": 7}, "s.yaml: task.dataset.split_seed: must not be set beside split_file"),
    ({"format": "dcdft", "split_field": "fold"},  # only formats whose records have fields take one
     "s.yaml: task.dataset.split_field: is not a known key; valid keys here:"),
    ({"format": "jarvis_json", "path": "d.json", "split_file": "s.json", "split_field": "fold"},
     "s.yaml: task.dataset.split_field: must not be set beside split_file (one explicit split), but got 'fold'"),
])
def test_the_section_refuses_an_explicit_split_beside_the_random_settings(tmp_path, data, line):
    assert any(p.startswith(line) for p in _problems(data, tmp_path)), _problems(data, tmp_path)


def test_every_format_check_reads_the_split_file_before_any_trial(tmp_path):
    _write(tmp_path, {"train": ["a"], "val": ["b"], "test": ["b"]})
    problems = _crystal_spec({"format": "dcdft", "split_file": "split.json"}, tmp_path).check("wien2k_B")
    assert [p.render("s.yaml") for p in problems] == [  # the study loader prefixes task.dataset
        "s.yaml: split_file: must list each entry once, in one split (splits must not overlap), but got 'b' in val and test"]
    # a format with a check of its own (jarvis_json) and one without (synthetic) both run it
    synthetic = _crystal_spec({"format": "synthetic", "split_file": "split.json"}, tmp_path)
    assert [p.path for p in synthetic.check("y")] == ["split_file"]
    _write(tmp_path, {"train": ["a"], "val": ["b"], "test": ["c"]})
    assert synthetic.check("y") == []


def test_settings_without_an_explicit_split_keep_their_old_keys(tmp_path):
    spec = _crystal_spec({"format": "synthetic"}, tmp_path)
    assert "split_file" not in spec.settings() and "split_field" not in spec.settings()
    assert spec.split_file_digest is None
    _write(tmp_path, LEADERBOARD)
    with_file = _crystal_spec({"format": "synthetic", "split_file": "split.json"}, tmp_path)
    digest = with_file.split_file_digest
    _write(tmp_path, {**LEADERBOARD, "val": {"JVASP-7": 0.0}})
    assert with_file.split_file_digest != digest  # the split entry's key follows the file's content


def test_traffic_keeps_its_chronological_split_and_refuses_a_split_file(tmp_path):
    from pydantic import ValidationError

    from models.traffic.datasets import TrafficDataset

    with pytest.raises(ValidationError, match=r"split_file\n  Extra inputs are not permitted"):
        TrafficDataset.model_validate({"format": "synthetic", "split_file": "s.json"}, context={"base_dir": tmp_path})


# --------------------------------------------------------------------------------------- the families
def test_drug_target_csv_splits_by_row_index_id_column_or_split_field(tmp_path):
    from models.drug_target.data import DTADataset

    rows = ["smiles,sequence,affinity,pair,fold"] + [f"C{'C' * k}O,MKV{'A' * k},{5 + 0.1 * k},p{k},{f}"
                                                     for k, f in enumerate(["train", "train", "val", "test", "train", "test"])]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    _write(tmp_path, {"train": [0, 1, 4], "val": [2], "test": [3]}, "idx.json")
    _write(tmp_path, {"train": ["p0", "p1"], "val": ["p2"], "test": ["p5"]}, "ids.json")

    def split(**extra):
        spec = DTADataset.model_validate({"format": "csv", "path": "pairs.csv", **extra}, context={"base_dir": tmp_path})
        assert spec.check() == []
        return {k: v.tolist() for k, v in spec.read().split.items()}

    assert split(split_file="idx.json") == {"train": [0, 1, 4], "val": [2], "test": [3]}
    assert split(split_file="ids.json", id_column="pair") == {"train": [0, 1], "val": [2], "test": [5]}
    assert split(split_field="fold") == {"train": [0, 1, 4], "val": [2], "test": [3, 5]}
    spec = DTADataset.model_validate({"format": "csv", "path": "pairs.csv", "split_field": "folds"}, context={"base_dir": tmp_path})
    assert [p.path for p in spec.check()] == ["task.dataset.split_field"]


def test_face3d_splits_by_sample_index(tmp_path):
    from models.face3d.config import Face3DDataConfig
    from models.face3d.data import Face3DDataset, build

    _write(tmp_path, {"train": list(range(0, 30)), "val": [30, 31, 32], "test": [33, 34]})
    spec = Face3DDataset.model_validate({"format": "synthetic", "n_samples": 40, "n_identities": 8, "split_file": "split.json"},
                                        context={"base_dir": tmp_path})
    data = build(spec, Face3DDataConfig())
    assert data.info["split_sizes"] == {"train": 30, "val": 3, "test": 2}
    _write(tmp_path, {"train": [0], "val": [1], "test": [40]})
    with pytest.raises(DataError, match=r"split_file: must name row indices 0 \.\. 39 of the samples"):
        build(spec, Face3DDataConfig())


@pytest.mark.slow  # imports torch and builds the crystals' graphs: ~15 s on a shared 2-core machine
def test_validate_refuses_a_bad_split_file_with_exit_2_and_the_key(tmp_path, monkeypatch, capsys):
    from hpo.cli import main

    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).parents[3] / "studies" / "smoke" / "crystal_text.yaml").read_text()
    text = text.replace("dataset: {format: synthetic, n_samples: 24, max_atoms: 3, seed: 0}",
                        "dataset: {format: synthetic, n_samples: 8, max_atoms: 2, seed: 0, split_file: split.json}")
    assert "split_file: split.json" in text
    (tmp_path / "s.yaml").write_text(text)
    assert main(["validate", "s.yaml"]) == 2  # no split file
    assert "s.yaml: task.dataset.split_file: must be an existing file" in capsys.readouterr().err
    _write(tmp_path, {"train": [f"synthetic-{k}" for k in range(5)], "val": ["synthetic-5"], "test": ["synthetic-6", "JVASP-1"]})
    assert main(["validate", "s.yaml"]) == 2  # an id the data does not hold: found when the data are read, before any trial
    err = capsys.readouterr().err
    assert f"{tmp_path / 'split.json'}: task.dataset.split_file: must name ids of the usable records" in err, err
    assert "but got 1 unknown: 'JVASP-1' (test)" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "hpo.db").exists()
    _write(tmp_path, {"train": [f"synthetic-{k}" for k in range(5)], "val": ["synthetic-5"], "test": ["synthetic-6"]})
    assert main(["validate", "s.yaml"]) == 0, capsys.readouterr().err


def test_names_are_the_three_parts():
    assert NAMES == ("train", "val", "test")


# ------------------------------------------------------------------------- face3d: a split array in the npz
def _face_npz(tmp_path: Path, split=None, name: str = "faces.npz", key: str = "split") -> Path:
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.normal(size=(9, 4, 3)), "targets": rng.normal(size=(9, 5)), "ids": np.arange(9) % 3}
    if split is not None:
        arrays[key] = split
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _face_spec(tmp_path: Path, **extra):
    from models.face3d.data import Face3DDataset

    return Face3DDataset.model_validate({"format": "npz", "path": "faces.npz", **extra}, context={"base_dir": tmp_path})


WANT = {"train": [0, 1, 4, 7, 8], "val": [2, 5], "test": [3, 6]}


@pytest.mark.parametrize("split", [
    np.array(["train", "train", "val", "test", "train", "valid", "TEST", "train", "train"]),  # strings, aliases, any case
    np.array([b"train", b"train", b"val", b"test", b"train", b"val", b"test", b"train", b"train"]),  # bytes
    np.array([0, 0, 1, 2, 0, 1, 2, 0, 0], dtype=np.int16),  # codes 0 train, 1 val, 2 test
])
def test_face3d_npz_takes_a_split_array_of_names_or_codes(tmp_path, split):
    from models.face3d.config import Face3DDataConfig
    from models.face3d.data import build

    _face_npz(tmp_path, split)
    spec = _face_spec(tmp_path, split_field="split")
    assert spec.check() == []
    data = build(spec, Face3DDataConfig())
    assert data.info["split_sizes"] == {k: len(v) for k, v in WANT.items()}
    raw = spec.read()
    assert [raw.split[i] for i in WANT["val"]] == ["val", "val"] and raw.split.count("train") == 5
    assert spec.settings()["split_field"] == "split"  # the cache keys on it


def test_face3d_npz_takes_a_leaderboard_split_file_of_sample_indices(tmp_path):
    from models.face3d.config import Face3DDataConfig
    from models.face3d.data import build

    _face_npz(tmp_path)
    _write(tmp_path, {"train": {"0": 1, "1": 1, "4": 1}, "val": {"2": 1}, "test": {"3": 1}})
    data = build(_face_spec(tmp_path, split_file="split.json"), Face3DDataConfig())
    assert data.info["split_sizes"] == {"train": 3, "val": 1, "test": 1}


@pytest.mark.parametrize("split, fragment", [
    (np.array([0, 0, 1, 2, 0, 3, 2, 0, 0]), "but got sample 5 (id 2) = 3"),
    (np.array(["train"] * 8 + ["holdout"]), "but got sample 8 (id 2) = 'holdout'"),
    (np.array([0.0, 0, 1, 2, 0, 1, 2, 0, 0]), "but got dtype float64"),
    (np.array([True] * 9), "but got dtype bool"),
    (np.array([[0, 1, 2]] * 3), "must have shape (9,) (one part per sample), but got (3, 3)"),
    (np.array([0, 1, 2]), "must have shape (9,) (one part per sample), but got (3,)"),
])
def test_face3d_refuses_a_bad_split_array_naming_the_samples(tmp_path, split, fragment):
    path = _face_npz(tmp_path, split)
    with pytest.raises(DataError) as info:
        _face_spec(tmp_path, split_field="split").read()
    text = str(info.value)
    assert text.startswith(f"{path}: task.dataset.split_field: array 'split': must "), text
    assert fragment in text, text


def test_face3d_refuses_an_object_split_array_without_unpickling_it(tmp_path):
    path = _face_npz(tmp_path, np.array(["train", 1, None] * 3, dtype=object))
    with pytest.raises(DataError, match=r"split: must be an array of numbers, but got an object array \(refused: loading it would unpickle\)"):
        _face_spec(tmp_path, split_field="split").read()
    assert path.is_file()


def test_face3d_split_array_must_exist_fill_every_part_and_replace_the_random_split(tmp_path):
    from pydantic import ValidationError

    from models.face3d.config import Face3DDataConfig
    from models.face3d.data import build

    _face_npz(tmp_path, np.zeros(9, dtype=np.int8), key="fold")
    assert [p.render("s.yaml") for p in _face_spec(tmp_path, split_field="split").check()] == [
        "s.yaml: task.dataset.split_field: must name an array of faces.npz (arrays: fold, ids, inputs, targets), but got 'split'"]
    with pytest.raises(DataError, match=r"task\.dataset\.split_field: must name an array of the \.npz, but got 'split'"):
        _face_spec(tmp_path, split_field="split").read()
    with pytest.raises(DataError, match=r"split_field: must give at least one record to each of train, val and test, but got none in val, test"):
        build(_face_spec(tmp_path, split_field="fold"), Face3DDataConfig())
    with pytest.raises(ValidationError, match="group_by_ids\n  Value error, must not be set beside split_field"):
        _face_spec(tmp_path, split_field="fold", group_by_ids=False)
    with pytest.raises(ValidationError, match="split_field\n  Extra inputs are not permitted"):  # synthetic faces have no arrays
        from models.face3d.data import Face3DDataset

        Face3DDataset.model_validate({"format": "synthetic", "split_field": "split"})
