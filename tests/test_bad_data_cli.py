"""Malformed crystal data files through the real command line: refused before the first trial.

Tiny crystal_text studies in tmp_path point at data files the tests write and break. ``hpo validate``
and ``hpo run`` must exit 2 printing the data file's line (``error: file: where: what must hold, but
got X``), with no traceback, no study in the store (the SQLite file is never created), no checkpoint
and nothing cached. A valid file validates, the validation builds the data cache, and the first
trial's data load is a cache hit.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import hpo_cli

pytest.importorskip("torch_geometric")

STUDY = """
name: {name}
task:
  family: crystal_text
  target: y
  dataset: {dataset}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
  fixed:
    alignn_layers: 1
    gcn_layers: 1
    hidden_features: 8
    embedding_features: 8
    edge_rbf_bins: 8
    angle_rbf_bins: 8
    text_hidden_features: 8
    text_layers: 1
    text_num_heads: 2
    cross_modal_hidden_dim: 8
    cross_modal_num_heads: 2
    fine_grained_hidden_dim: 8
    fine_grained_num_heads: 2
    use_middle_fusion: false
    cutoff: 5.0
    max_neighbors: 4
    max_text_tokens: 32
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 1, max_epochs: 1}}
training: {{batch_size: 4, epochs: 1, scheduler: none}}
storage: sqlite:///{db}
artifacts: {artifacts}
seed: 0
"""


def _records(n: int = 10) -> list[dict]:
    from ase.build import bulk

    out = []
    for k in range(n):
        atoms = bulk("Si", "diamond", a=5.3 + 0.05 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.5 + 0.05 * k)
        out.append({"jid": f"JVASP-{k}", "y": 1.0 + 0.1 * k,
                    "atoms": {"lattice_mat": np.asarray(atoms.cell).tolist(), "coords": atoms.get_scaled_positions().tolist(),
                              "elements": atoms.get_chemical_symbols(), "cartesian": False}})
    return out


def _study(tmp_path: Path, dataset: str, name: str = "bad") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name=name, dataset=dataset, db=tmp_path / "hpo.db", artifacts=tmp_path / "artifacts")))
    return path


def _coincident(tmp_path: Path) -> tuple[str, Path, str]:
    records = _records()
    records[3]["atoms"]["coords"][1] = list(records[3]["atoms"]["coords"][0])
    (tmp_path / "dft_3d.json").write_text(json.dumps(records))
    return ("{format: jarvis_json, path: dft_3d.json}", tmp_path / "dft_3d.json",
            "record 3 (id JVASP-3): atoms must sit at distinct sites (at least 0.1 Å apart), but got atoms 0 and 1 0 Å apart")


def _nan_target(tmp_path: Path):
    records = _records()
    records[6]["y"] = float("nan")
    (tmp_path / "dft_3d.json").write_text(json.dumps(records))
    return ("{format: jarvis_json, path: dft_3d.json}", tmp_path / "dft_3d.json",
            "record 6 (id JVASP-6): the target 'y' must be a finite number (or \"na\" where it is missing), but got nan")


def _singular_cell(tmp_path: Path):
    records = _records()
    records[2]["atoms"]["lattice_mat"][2] = [0.0, 0.0, 0.0]
    (tmp_path / "dft_3d.json").write_text(json.dumps(records))
    return ("{format: jarvis_json, path: dft_3d.json}", tmp_path / "dft_3d.json",
            "record 2 (id JVASP-2): a periodic cell must span a volume (lattice planes at least 0.5 Å apart), but got a volume of 0")


def _unknown_element(tmp_path: Path):
    records = _records()
    records[9]["atoms"]["elements"][0] = "Qq"
    (tmp_path / "dft_3d.json").write_text(json.dumps(records))
    return ("{format: jarvis_json, path: dft_3d.json}", tmp_path / "dft_3d.json",
            "record 9 (id JVASP-9): atoms.elements must be chemical symbols H .. Og (or atomic numbers 1..118), but got atom 0 = 'Qq'")


def _alignn(tmp_path: Path, breaker):
    from ase.build import bulk
    import ase.io

    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for k in range(10):
        ase.io.write(folder / f"POSCAR-{k}.vasp", bulk("Cu", "fcc", a=3.5 + 0.05 * k), format="vasp")
        rows.append([f"POSCAR-{k}.vasp", f"{0.1 * k:.2f}"])
    fragment = breaker(rows, folder)
    with open(folder / "id_prop.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return "{format: alignn_folder, path: data}", folder / "id_prop.csv", fragment


def _ragged_row(tmp_path: Path):
    def breaker(rows, folder):
        rows[4].append("3.0")
        return "row 5 (id POSCAR-4.vasp): must have 2 columns like the first row, but got 3"
    return _alignn(tmp_path, breaker)


def _missing_file(tmp_path: Path):
    def breaker(rows, folder):
        (folder / "POSCAR-7.vasp").unlink()
        return "row 8 (id POSCAR-7.vasp): must name an existing structure file in"
    return _alignn(tmp_path, breaker)


def _unreadable_structure(tmp_path: Path):
    def breaker(rows, folder):
        (folder / "POSCAR-1.vasp").write_text("not a POSCAR\n")
        return ""
    dataset, _, _ = _alignn(tmp_path, breaker)
    return dataset, tmp_path / "data" / "POSCAR-1.vasp", "must be a structure file ASE can read, but got"


CASES = {
    "two atoms on one site": _coincident,
    "NaN target": _nan_target,
    "singular cell": _singular_cell,
    "unknown element": _unknown_element,
    "ragged id_prop row": _ragged_row,
    "missing structure file": _missing_file,
    "unreadable structure file": _unreadable_structure,
}


@pytest.mark.slow
def test_malformed_crystal_files_are_refused_before_any_trial(tmp_path, report_figures):
    refused = 0
    for case, make in CASES.items():
        work = tmp_path / case.replace(" ", "_")
        work.mkdir()
        dataset, file, fragment = make(work)
        study = _study(work, dataset)
        expected = f"error: {file}: {fragment}"
        for verb in ("validate", "run"):
            r = hpo_cli(verb, study, cwd=work)
            assert r.returncode == 2, (case, verb, r.stdout, r.stderr)
            assert any(line.startswith(expected) for line in r.stderr.splitlines()), (case, verb, expected, r.stderr)
            assert "Traceback" not in r.stderr and "valid" not in r.stdout, (case, verb, r.stdout, r.stderr)
        assert not (work / "hpo.db").exists(), f"{case}: the store must not be created"
        assert not (work / "artifacts").exists(), f"{case}: nothing may be trained"
        assert not list(work.rglob("*.pkl")), f"{case}: a refused dataset must not be cached"
        refused += 1
    report_figures("malformed crystal files refused before training (hpo validate and hpo run, exit 2)",
                   {"files": refused, "of": len(CASES)})
    assert refused == len(CASES)


@pytest.mark.slow
def test_valid_file_validates_and_the_first_trial_hits_the_cache_it_built(tmp_path):
    records = _records()
    records[4]["y"] = "na"  # skipped and counted, not an error
    (tmp_path / "dft_3d.json").write_text(json.dumps(records))
    study = _study(tmp_path, "{format: jarvis_json, path: dft_3d.json}", name="good")
    r = hpo_cli("validate", study, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{study}: valid" in r.stdout
    assert "skipped 1 of 10 records whose target 'y' is missing" in r.stderr, r.stderr
    built = sorted(p.name for p in (tmp_path / "runs" / "cache").rglob("*.pkl"))
    assert len(built) == 2, built  # the structures and the split, built by the validation
    assert not (tmp_path / "hpo.db").exists()  # validate stores nothing
    r = hpo_cli("run", study, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data cache: 0 built" in r.stdout and "loaded from disk" in r.stdout, r.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "cache").rglob("*.pkl")) == built  # nothing rebuilt
    with sqlite3.connect(tmp_path / "hpo.db") as db:
        states = [s for (s,) in db.execute("select state from trials")]
    assert states == ["COMPLETE"], states


@pytest.mark.parametrize("dataset,key,fragment", [
    ("{n_samples: 160, noise: .inf}", "task.dataset.noise", "but got inf"),
    ("{n_samples: 160, noise: .nan}", "task.dataset.noise", "but got nan"),
    ("{n_samples: 3}", "task.dataset.n_samples", "but got 3"),
], ids=["toy noise inf", "toy noise NaN", "toy too few samples for three splits"])
def test_toy_synthetic_data_that_cannot_train_is_refused_by_the_spec(toy_study, tmp_path, dataset, key, fragment):
    from hpo.errors import SpecError
    from hpo.spec import load_study

    path = toy_study()
    path.write_text(path.read_text().replace("dataset: {n_samples: 160}", f"dataset: {dataset}"))
    with pytest.raises(SpecError) as info:
        load_study(path)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{path}: {key}: ") and fragment in line for line in lines), lines
    assert not (tmp_path / "hpo.db").exists()
