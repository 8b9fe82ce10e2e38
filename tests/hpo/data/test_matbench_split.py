"""Matbench v0.1 folds (``split: matbench``, ``fold: 0 .. 4``): sklearn's ``KFold(n_splits=5, shuffle=True,
random_state=18012019)`` reproduced without sklearn, the validation part carved from the fold's training rows,
and bad settings refused before any trial as ``file: task.dataset.KEY: what must hold, but got X``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo.data.split import MATBENCH_SEED, kfold_test_indices, matbench_split
from hpo.errors import DataError

#: printed by scikit-learn 1.9.1: [t.tolist() for _, t in KFold(5, shuffle=True, random_state=18012019).split(np.arange(n))]
SKLEARN_FOLDS = {10: [[1, 9], [2, 3], [4, 8], [5, 7], [0, 6]],
                 13: [[1, 4, 11], [2, 3, 10], [7, 8, 12], [0, 5], [6, 9]]}


@pytest.mark.parametrize("n", sorted(SKLEARN_FOLDS))
def test_the_folds_are_the_ones_sklearn_printed(n):
    assert [fold.tolist() for fold in kfold_test_indices(n)] == SKLEARN_FOLDS[n]


@pytest.mark.parametrize("n", [5, 10, 13, 99, 636, 4764])  # 636 and 4764: matbench_jdft2d's and matbench_dielectric's sizes
def test_the_folds_equal_sklearns_kfold(n):
    model_selection = pytest.importorskip("sklearn.model_selection", reason="scikit-learn is not a dependency; the "
                                          "hard-coded folds above were printed by it")
    want = [test for _, test in model_selection.KFold(n_splits=5, shuffle=True, random_state=MATBENCH_SEED).split(np.arange(n))]
    assert [fold.tolist() for fold in kfold_test_indices(n)] == [w.tolist() for w in want]


@pytest.mark.parametrize("n", [10, 11, 12, 13, 14, 101])
def test_the_folds_partition_the_rows_in_sizes_that_differ_by_at_most_one(n):
    folds = kfold_test_indices(n)
    assert sorted(np.concatenate(folds).tolist()) == list(range(n))
    assert [len(f) for f in folds] == [n // 5 + (k < n % 5) for k in range(5)]
    assert all(f.dtype == np.int64 and np.all(np.diff(f) > 0) for f in folds)


def test_a_fold_is_the_test_split_and_val_comes_from_its_training_rows():
    n = 101
    for fold in range(5):
        parts = matbench_split(n, fold, 0.1, 123)
        assert parts["test"].tolist() == kfold_test_indices(n)[fold].tolist()
        rest = n - len(parts["test"])
        assert len(parts["val"]) == int(0.1 * rest)  # floor(val_fraction x the fold's training rows)
        together = np.concatenate([parts[k] for k in ("train", "val", "test")])
        assert sorted(together.tolist()) == list(range(n))  # disjoint, and every row is used
    a, b = matbench_split(n, 2, 0.1, 123), matbench_split(n, 2, 0.1, 7)
    assert a["test"].tolist() == b["test"].tolist() and a["val"].tolist() != b["val"].tolist()  # split_seed draws val only
    assert matbench_split(n, 2, 0.1, 123)["val"].tolist() == a["val"].tolist()  # and the same seed draws the same


@pytest.mark.parametrize("fold", [-1, 5, True, 1.0, "2"])
def test_a_bad_fold_is_refused(fold):
    with pytest.raises(DataError, match=r"^d\.json: task\.dataset\.fold: must be an integer 0 \.\. 4 \(a matbench fold\), but got "):
        matbench_split(20, fold, 0.1, 0, label="d.json")


def test_too_few_records_are_refused_and_a_large_val_fraction_still_leaves_a_training_row():
    with pytest.raises(DataError, match=r"split: matbench must split at least 10 usable records .*but got 9$"):
        matbench_split(9, 0, 0.1, 0)
    parts = matbench_split(10, 0, 0.99, 0)  # floor(0.99 x 8) = 7 val rows, 1 train row
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (1, 7, 2)
    assert len(matbench_split(10, 0, 0.0, 0)["val"]) == 0  # val_fraction 0: no validation rows, as the random split


# ----------------------------------------------------------------------------------------- the section
def _problems(data: dict) -> list[str]:
    from pydantic import ValidationError

    from hpo.spec.pydantic_errors import problems_from_validation
    from models.crystal_text.data import CrystalTextDataset

    with pytest.raises(ValidationError) as info:
        CrystalTextDataset.model_validate(data)
    return [p.render("s.yaml") for p in problems_from_validation(info.value, CrystalTextDataset, data, prefix="task.dataset")]


@pytest.mark.parametrize("extra, line", [
    ({"fold": 5}, "s.yaml: task.dataset.fold: must be less than or equal to 4, but got 5"),
    ({"fold": -1}, "s.yaml: task.dataset.fold: must be greater than or equal to 0, but got -1"),
    ({"fold": True}, "s.yaml: task.dataset.fold: must be an integer, but got true"),
    ({"fold": "2"}, "s.yaml: task.dataset.fold: must be an integer, but got '2'"),
    ({"fold": 1.5}, "s.yaml: task.dataset.fold: must be an integer, but got 1.5"),
    ({}, "s.yaml: task.dataset.split: matbench needs fold: 0 .. 4 beside it (the Matbench fold whose test part is the test "
         "split), but got 'matbench'"),
    ({"fold": 1, "test_fraction": 0.2}, "s.yaml: task.dataset.test_fraction: must not be set with split: matbench"),
    ({"fold": 1, "max_samples": 20}, "s.yaml: task.dataset.max_samples: must not be set with split: matbench"),
    ({"fold": 1, "split_file": "s.json"}, "s.yaml: task.dataset.split: must not be set beside split_file"),
])
def test_the_section_refuses_bad_matbench_settings(extra, line):
    problems = _problems({"format": "dcdft", "split": "matbench", **extra})
    assert any(p.startswith(line) for p in problems), problems


def test_fold_is_read_by_split_matbench_only_and_is_left_out_of_old_keys():
    from models.crystal_text.data import CrystalTextDataset

    assert _problems({"format": "dcdft", "fold": 1}) == [
        "s.yaml: task.dataset.fold: is read by split: matbench only (split is 'random'), but got 1"]
    assert "fold" not in CrystalTextDataset.model_validate({"format": "dcdft"}).settings()  # cache keys as before
    spec = CrystalTextDataset.model_validate({"format": "dcdft", "split": "matbench", "fold": 3, "split_seed": 5})
    assert (spec.split, spec.fold, spec.settings()["fold"]) == ("matbench", 3, 3)


def test_the_spec_gives_the_fold_of_its_usable_records(caplog):
    from models.crystal_text.data import CrystalTextDataset

    spec = CrystalTextDataset.model_validate({"format": "dcdft", "split": "matbench", "fold": 4, "val_fraction": 0.25})
    structures = {"ids": [f"x{k}" for k in range(13)], "stats": {"skipped_missing_target": 0}}
    parts = spec.split_parts(structures)
    assert parts["test"].tolist() == SKLEARN_FOLDS[13][4]
    assert len(parts["val"]) == 2 and len(parts["train"]) == 9  # floor(0.25 x 11)
    with caplog.at_level("WARNING"):
        spec.split_parts({**structures, "stats": {"skipped_missing_target": 2}})
    assert "2 records without the target were skipped first" in caplog.text


# ------------------------------------------------------------------------------- through the task's data path
def _records(n: int) -> list[dict]:
    from ase.build import bulk

    out = []
    for k in range(n):
        atoms = bulk("Si", "diamond", a=5.3 + 0.02 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.5 + 0.02 * k)
        out.append({"jid": f"mb-{k:04d}", "atoms": {"lattice_mat": np.asarray(atoms.cell).tolist(),
                                                    "coords": atoms.get_scaled_positions().tolist(),
                                                    "elements": atoms.get_chemical_symbols(), "cartesian": False},
                    "y": 1.0 + 0.1 * k})
    return out


def test_every_fold_through_the_task_is_matbenchs(tmp_path, monkeypatch):
    pytest.importorskip("torch_geometric")
    from hpo.data.cache import DataCache
    from models.crystal_text import CrystalTextTask
    from models.crystal_text import processing

    if "split_parts" not in processing.split_parts.__code__.co_names:
        # until processing.split_parts calls the dataset's split_parts (the one definition), as proposed for #16;
        # without it task.load refuses split: matbench (models.crystal_text.task._require_the_specs_split)
        monkeypatch.setattr(processing, "split_parts", lambda structures, spec: spec.split_parts(structures))
    (tmp_path / "mb.json").write_text(json.dumps(_records(13)))
    seen = []
    for fold in range(5):
        spec = CrystalTextTask.DatasetSpec.model_validate({"format": "jarvis_json", "path": "mb.json", "split": "matbench",
                                                           "fold": fold}, context={"base_dir": tmp_path})
        task = CrystalTextTask(spec, "y", DataCache(tmp_path / "cache"))
        assert task.check() == []
        ids = task.load(CrystalTextTask.DataConfig(cutoff=5.0, max_neighbors=4)).info["ids"]
        assert ids["test"] == [f"mb-{k:04d}" for k in SKLEARN_FOLDS[13][fold]]
        assert len(ids["val"]) == 1 and len(ids["train"]) == 13 - len(ids["test"]) - 1
        seen += ids["test"]
    assert sorted(seen) == [f"mb-{k:04d}" for k in range(13)]  # five folds, each entry keyed apart


def test_a_split_entry_without_the_folds_parts_is_refused_never_used(tmp_path, monkeypatch):
    pytest.importorskip("torch_geometric")
    from hpo.data.cache import DataCache
    from models.crystal_text import CrystalTextTask
    from models.crystal_text import processing

    def random_parts(structures, spec):  # a builder that does not know split: matbench
        from hpo.data.split import random_split

        return random_split(len(structures["ids"]), 0.1, 0.1, 0, rule="floor")

    monkeypatch.setattr(processing, "split_parts", random_parts)
    (tmp_path / "mb.json").write_text(json.dumps(_records(13)))
    spec = CrystalTextTask.DatasetSpec.model_validate({"format": "jarvis_json", "path": "mb.json", "split": "matbench", "fold": 0},
                                                      context={"base_dir": tmp_path})
    task = CrystalTextTask(spec, "y", DataCache(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"mb\.json: task\.dataset\.split: matbench must give the fold's parts, but got other parts"):
        task.load(CrystalTextTask.DataConfig(cutoff=5.0, max_neighbors=4))
