"""crystal_text's ``split: alignn``: ALIGNN's get_id_train_val_test reproduced exactly, and the explicit
split files (a JARVIS-leaderboard-shaped file, ``split_field``) read through the task's data path."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from hpo.data.split import alignn_split
from hpo.errors import DataError


def _alignn_reference(total_size, split_seed=123, train_ratio=None, val_ratio=0.1, test_ratio=0.1):
    """alignn/data.py get_id_train_val_test (usnistgov/alignn a8be0be), n_* None, keep_data_order False."""
    if train_ratio is None and val_ratio is not None and test_ratio is not None:
        assert val_ratio + test_ratio < 1
        train_ratio = 1 - val_ratio - test_ratio
    n_train = int(train_ratio * total_size)
    n_test = int(test_ratio * total_size)
    n_val = int(val_ratio * total_size)
    ids = list(np.arange(total_size))
    random.seed(split_seed)
    random.shuffle(ids)
    if n_train + n_val + n_test > total_size:
        raise ValueError("Check total number of samples.")
    id_train = ids[:n_train]
    id_val = ids[-(n_val + n_test):-n_test] if n_test > 0 else ids[-(n_val + n_test):]
    id_test = ids[-n_test:] if n_test > 0 else []
    return id_train, id_val, id_test


def test_a_hand_computed_case():
    # random.seed(0); random.shuffle(list(range(15))) -> [1, 10, 9, 5, 11, 2, 3, 7, 8, 4, 0, 14, 12, 6, 13]
    # n_train = int(0.8 * 15) = 12, n_val = int(0.1 * 15) = 1, n_test = 1: train = the first 12, val = order[-2:-1],
    # test = order[-1:], and 12 (between train and val) is in no split, as in ALIGNN
    parts = alignn_split(15, 0)
    assert parts["train"].tolist() == sorted([1, 10, 9, 5, 11, 2, 3, 7, 8, 4, 0, 14])
    assert parts["val"].tolist() == [6] and parts["test"].tolist() == [13]
    # random.seed(123) (ALIGNN's default); 10 records: [8, 7, 5, 9, 2, 3, 6, 1, 4, 0] -> train 8, val [4], test [0]
    parts = alignn_split(10)
    assert parts["train"].tolist() == [1, 2, 3, 5, 6, 7, 8, 9] and parts["val"].tolist() == [4] and parts["test"].tolist() == [0]


@pytest.mark.parametrize("n", [10, 15, 37, 101, 1000])
@pytest.mark.parametrize("seed, ratios", [(123, (None, 0.1, 0.1)), (0, (None, 0.2, 0.1)), (7, (0.6, 0.2, 0.2)),
                                          (42, (0.5, 0.05, 0.15))])
def test_the_same_parts_as_alignn_and_the_global_random_state_is_untouched(n, seed, ratios):
    train_ratio, val_ratio, test_ratio = ratios
    ref = _alignn_reference(n, seed, train_ratio, val_ratio, test_ratio)
    if not all(ref):  # ALIGNN leaves a part empty (int(0.05 * 15) = 0): refused here
        with pytest.raises(DataError, match="must leave no split empty"):
            alignn_split(n, seed, train_ratio, val_ratio, test_ratio)
        return
    random.seed(99)
    before = random.random()
    random.seed(99)
    ours = alignn_split(n, seed, train_ratio, val_ratio, test_ratio)
    assert random.random() == before
    for name, ids in zip(("train", "val", "test"), ref):
        assert ours[name].tolist() == sorted(int(i) for i in ids), name


def test_an_empty_part_is_refused():
    with pytest.raises(DataError, match=r"task\.dataset\.split: alignn must leave no split empty .* an empty val, test split"):
        alignn_split(5)  # int(0.1 * 5) = 0


def test_the_section_takes_alignn_settings_only_with_split_alignn():
    from pydantic import ValidationError

    from models.crystal_text.data import CrystalTextDataset

    spec = CrystalTextDataset.model_validate({"format": "dcdft", "split": "alignn", "train_fraction": 0.7})
    assert (spec.split, spec.train_fraction) == ("alignn", 0.7)
    with pytest.raises(ValidationError, match="is read by split: alignn only"):
        CrystalTextDataset.model_validate({"format": "dcdft", "train_fraction": 0.7})
    with pytest.raises(ValidationError, match="must not be set with split: alignn"):
        CrystalTextDataset.model_validate({"format": "dcdft", "split": "alignn", "max_samples": 10})
    with pytest.raises(ValidationError, match=r"train_fraction \+ val_fraction \+ test_fraction <= 1"):
        CrystalTextDataset.model_validate({"format": "dcdft", "split": "alignn", "train_fraction": 0.9})


# ------------------------------------------------------------------------------- through the task's data path
def _records(n: int) -> list[dict]:
    from ase.build import bulk

    out = []
    for k in range(n):
        atoms = bulk("Si", "diamond", a=5.3 + 0.02 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.5 + 0.02 * k)
        out.append({"jid": f"JVASP-{k}", "atoms": {"lattice_mat": np.asarray(atoms.cell).tolist(),
                                                   "coords": atoms.get_scaled_positions().tolist(),
                                                   "elements": atoms.get_chemical_symbols(), "cartesian": False},
                    "y": "na" if k == 3 else 1.0 + 0.1 * k, "fold": ["train", "val", "test"][k % 3] if k > 2 else "train"})
    return out


def _ids(tmp_path, dataset: dict) -> dict:
    pytest.importorskip("torch_geometric")
    from hpo.data.cache import DataCache
    from models.crystal_text import CrystalTextTask

    spec = CrystalTextTask.DatasetSpec.model_validate(dataset, context={"base_dir": tmp_path})
    task = CrystalTextTask(spec, "y", DataCache(tmp_path / "cache"))
    assert task.check() == []
    return task.load(CrystalTextTask.DataConfig(cutoff=5.0, max_neighbors=4)).info["ids"]


def test_jarvis_json_with_split_alignn_a_leaderboard_file_or_a_field(tmp_path):
    (tmp_path / "dft.json").write_text(json.dumps(_records(21)))
    usable = [f"JVASP-{k}" for k in range(21) if k != 3]  # JVASP-3 is "na": skipped before splitting, as ALIGNN does
    ids = _ids(tmp_path, {"format": "jarvis_json", "path": "dft.json", "split": "alignn", "split_seed": 5})
    ref = _alignn_reference(len(usable), 5)
    for name, idx in zip(("train", "val", "test"), ref):
        assert ids[name] == [usable[i] for i in sorted(int(i) for i in idx)], name

    leaderboard = {"train": {f"JVASP-{k}": 1.0 for k in (0, 1, 2, 4, 5, 6)}, "val": {"JVASP-7": 1.0}, "test": {"JVASP-8": 1.0}}
    (tmp_path / "split.json").write_text(json.dumps(leaderboard))
    ids = _ids(tmp_path, {"format": "jarvis_json", "path": "dft.json", "split_file": "split.json"})
    assert ids == {"train": ["JVASP-0", "JVASP-1", "JVASP-2", "JVASP-4", "JVASP-5", "JVASP-6"], "val": ["JVASP-7"], "test": ["JVASP-8"]}
    (tmp_path / "split.json").write_text(json.dumps({**leaderboard, "test": {"JVASP-9": 1.0}}))  # a new file, a new split
    assert _ids(tmp_path, {"format": "jarvis_json", "path": "dft.json", "split_file": "split.json"})["test"] == ["JVASP-9"]
    (tmp_path / "split.json").write_text(json.dumps({**leaderboard, "test": {"JVASP-3": 1.0}}))  # the "na" record is not usable
    with pytest.raises(DataError, match=r"split_file: must name ids of the usable records .*but got 1 unknown: 'JVASP-3' \(test\)"):
        _ids(tmp_path, {"format": "jarvis_json", "path": "dft.json", "split_file": "split.json"})

    ids = _ids(tmp_path, {"format": "jarvis_json", "path": "dft.json", "split_field": "fold"})
    assert ids["val"] == [f"JVASP-{k}" for k in range(4, 21, 3)] and ids["test"] == [f"JVASP-{k}" for k in range(5, 21, 3)]


# ---------------------------------------------------------------- every format takes an explicit split (#16)
def _structure_files(folder, n: int) -> list[str]:
    """n small crystals as POSCAR files (Si and NaCl, slightly strained), named s0.vasp ..."""
    from ase.build import bulk
    from ase.io import write

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        atoms = bulk("Si", "diamond", a=5.3 + 0.02 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.5 + 0.02 * k)
        write(folder / f"s{k}.vasp", atoms, format="vasp")
        names.append(f"s{k}.vasp")
    return names


FOLDS = ["train", "train", "val", "test", "train", "Valid", "TEST", "train", "train"]  # aliases and any case, as split files


def test_alignn_folder_takes_a_split_column_or_a_leaderboard_file(tmp_path):
    names = _structure_files(tmp_path / "data", len(FOLDS))
    rows = [f"{name},{1.0 + 0.1 * k},{fold}" for k, (name, fold) in enumerate(zip(names, FOLDS))]
    (tmp_path / "data" / "id_prop.csv").write_text("\n".join(rows) + "\n")
    ids = _ids(tmp_path, {"format": "alignn_folder", "path": "data", "split_field": 2})  # rows file,target,split
    assert ids == {"train": ["s0.vasp", "s1.vasp", "s4.vasp", "s7.vasp", "s8.vasp"], "val": ["s2.vasp", "s5.vasp"],
                   "test": ["s3.vasp", "s6.vasp"]}
    leaderboard = {"train": {"s0.vasp": 1.0, "s1.vasp": 1.1, "s2.vasp": 1.2}, "val": {"s4.vasp": 1.4}, "test": {"s8.vasp": 1.8}}
    (tmp_path / "lb.json").write_text(json.dumps(leaderboard))  # a JARVIS-leaderboard-shaped file of train/val/test ids
    ids = _ids(tmp_path, {"format": "alignn_folder", "path": "data", "split_file": "lb.json"})
    assert ids == {"train": ["s0.vasp", "s1.vasp", "s2.vasp"], "val": ["s4.vasp"], "test": ["s8.vasp"]}


def test_ase_files_take_a_split_column_of_the_targets_csv_or_a_csv_split_file(tmp_path):
    _structure_files(tmp_path / "cifs", len(FOLDS))
    rows = ["id,y,fold"] + [f"s{k},{1.0 + 0.1 * k},{fold}" for k, fold in enumerate(FOLDS)]
    (tmp_path / "y.csv").write_text("\n".join(rows) + "\n")
    base = {"format": "ase_files", "files": "cifs/*.vasp", "targets": "y.csv"}
    ids = _ids(tmp_path, {**base, "split_field": "fold"})
    assert ids == {"train": ["s0", "s1", "s4", "s7", "s8"], "val": ["s2", "s5"], "test": ["s3", "s6"]}
    (tmp_path / "split.csv").write_text("id,split\ns1,train\ns2,train\ns3,train\ns0,val\ns4,test\n")
    ids = _ids(tmp_path, {**base, "split_file": "split.csv"})
    assert ids == {"train": ["s1", "s2", "s3"], "val": ["s0"], "test": ["s4"]}


def test_a_bad_split_cell_is_refused_naming_its_row(tmp_path):
    pytest.importorskip("torch_geometric")
    from hpo.data.cache import DataCache
    from models.crystal_text import CrystalTextTask

    names = _structure_files(tmp_path / "data", 4)
    (tmp_path / "data" / "id_prop.csv").write_text(f"{names[0]},1,train\n{names[1]},2,holdout\n{names[2]},3,val\n{names[3]},4,test\n")
    (tmp_path / "y.csv").write_text("id,y,fold\ns0,1,train\ns1,2,val\ns2,3,\ns3,4,test\n")
    cases = [({"format": "alignn_folder", "path": "data", "split_field": 2},
              rf"^{tmp_path}/data/id_prop\.csv: row 2 \(id s1\.vasp\): task\.dataset\.split_field: must be train, val or test, "
              r"but got 'holdout'$"),
             ({"format": "ase_files", "files": "data/*.vasp", "targets": "y.csv", "split_field": "fold"},
              rf"^{tmp_path}/y\.csv: row 4 \(id s2\): task\.dataset\.split_field: must be train, val or test, but got ''$")]
    for dataset, message in cases:
        spec = CrystalTextTask.DatasetSpec.model_validate(dataset, context={"base_dir": tmp_path})
        task = CrystalTextTask(spec, "y", DataCache(tmp_path / "cache"))
        with pytest.raises(DataError, match=message):
            task.load(CrystalTextTask.DataConfig(cutoff=5.0, max_neighbors=4))


def test_the_check_refuses_a_split_column_the_file_does_not_have(tmp_path):
    from models.crystal_text.data import CrystalTextDataset

    names = _structure_files(tmp_path / "data", 2)
    (tmp_path / "data" / "id_prop.csv").write_text(f"{names[0]},1\n{names[1]},2\n")
    (tmp_path / "y.csv").write_text("id,y,fold\ns0,1,train\n")
    (tmp_path / "bare.csv").write_text("s0,1\ns1,2\n")

    def problems(dataset):
        spec = CrystalTextDataset.model_validate(dataset, context={"base_dir": tmp_path})
        return [p.render("s.yaml") for p in spec.check("y")]

    assert problems({"format": "alignn_folder", "path": "data", "split_field": 2}) == [
        "s.yaml: split_field: must be a 0-based column of id_prop.csv (its rows have 2), but got 2"]
    assert problems({"format": "ase_files", "files": "data/*.vasp", "targets": "y.csv", "split_field": "folds"}) == [
        "s.yaml: split_field: must name a column of the header of y.csv (train, val or test per row; header: id, y, fold) "
        "(did you mean 'fold'?), but got 'folds'"]
    assert problems({"format": "ase_files", "files": "data/*.vasp", "targets": "bare.csv", "split_field": "fold"}) == [
        "s.yaml: split_field: must name a column of the header of bare.csv (train, val or test per row; it has none, rows "
        "are 'id,target'), but got 'fold'"]
    assert problems({"format": "ase_files", "files": "data/*.vasp", "targets": "y.csv", "split_field": "fold"}) == []


def test_formats_without_per_record_fields_take_a_split_file_only():
    from pydantic import ValidationError

    from models.crystal_text.data import CrystalTextDataset

    for fmt in ("dcdft", "synthetic"):
        with pytest.raises(ValidationError, match="split_field\n  Extra inputs are not permitted"):
            CrystalTextDataset.model_validate({"format": fmt, "split_field": "fold"})
    with pytest.raises(ValidationError, match="must be a column other than the target_column"):
        CrystalTextDataset.model_validate({"format": "alignn_folder", "path": "d", "split_field": 1})
