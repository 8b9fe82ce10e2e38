"""The malformed-data corpus of the crystal_text family: every bad file is refused by ``task.load``.

Each case starts from a small valid dataset the test writes (JARVIS JSON, an ALIGNN folder, ASE files +
a CSV), breaks one thing, and checks that loading raises :class:`DataError` whose every line reads
``file: where: what must hold, but got X`` — the file named, the record (index and id) or the row
(line number) where there is one, and the expected fragment — and that nothing was cached. The one
documented exception, a target written as ``"na"``, is skipped and counted. The graph builder is
checked on its own for the structures that used to give NaN/inf features (coincident atoms, non-finite
coordinates, degenerate cells).
"""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")
pytest.importorskip("spglib")

from ase.build import bulk  # noqa: E402

from hpo.data.cache import DataCache  # noqa: E402
from hpo.data.validate import check_task_data  # noqa: E402
from hpo.errors import DataError  # noqa: E402
from models.crystal_text import CrystalTextTask  # noqa: E402
from models.crystal_text.graphs import build_crystal_graph  # noqa: E402

DATA_CFG = CrystalTextTask.DataConfig(cutoff=5.0, max_neighbors=4)
#: a line of a DataError: the file, then what must hold, then what was found
LINE = re.compile(r"^(?P<file>[^:]+): .*must .*, but got .+$")

_REFUSED: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    from tests.conftest import _FIGURES

    if _REFUSED:
        _FIGURES.append(("crystal_text malformed data files refused by task.load",
                         {**_REFUSED, "total": sum(_REFUSED.values())}))


def _task(spec: dict, target: str, cache: DataCache) -> CrystalTextTask:
    return CrystalTextTask(CrystalTextTask.DatasetSpec.model_validate(spec), target, cache)


def _refused(spec: dict, target: str, tmp_path: Path, fragment: str, file: Path, at: str | None, kind: str) -> str:
    """Load ``spec``; assert the DataError's lines, the fragment, the place named, and an empty cache."""
    cache = DataCache(tmp_path / "cache")
    with pytest.raises(DataError) as info:
        _task(spec, target, cache).load(DATA_CFG)
    text = str(info.value)
    lines = text.splitlines()
    assert lines, text
    for line in lines:
        m = LINE.match(line)
        assert m, f"not 'file: where: what must hold, but got X': {line!r}"
        assert Path(m["file"]) == file or m["file"].startswith(str(file)), (line, file)
    assert fragment in text, text
    if at is not None:
        assert f"{file}: {at}" in text, text
    assert "Traceback" not in text
    assert not list((tmp_path / "cache").rglob("*.pkl")), "a refused dataset must not be cached"
    _REFUSED[kind] = _REFUSED.get(kind, 0) + 1
    return text


# ------------------------------------------------------------------------------------- JARVIS JSON
def _jarvis_records(n: int = 8) -> list[dict]:
    records = []
    for k in range(n):
        atoms = bulk("Si", "diamond", a=5.3 + 0.05 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.5 + 0.05 * k)
        records.append({
            "jid": f"JVASP-{k}",
            "atoms": {"lattice_mat": np.asarray(atoms.cell).tolist(), "coords": atoms.get_scaled_positions().tolist(),
                      "elements": atoms.get_chemical_symbols(), "cartesian": False},
            "y": 1.0 + 0.1 * k,
        })
    return records


def _set_atoms(key, value):
    def mutate(records):
        records[3]["atoms"][key] = value
    return mutate


def _del_atoms(key):
    def mutate(records):
        del records[3]["atoms"][key]
    return mutate


def _set(key, value):
    def mutate(records):
        records[3][key] = value
    return mutate


def _del(key):
    def mutate(records):
        del records[3][key]
    return mutate


def _coincident(records):
    atoms = records[3]["atoms"]
    atoms["coords"][1] = list(atoms["coords"][0])


def _near_coincident(records):
    atoms = records[3]["atoms"]
    atoms["coords"][1] = [c + 1e-3 for c in atoms["coords"][0]]


def _whole(value):
    def mutate(records):
        records[:] = value
    return mutate


AT3 = "record 3 (id JVASP-3)"

#: (case, mutation of the 8 valid records, expected fragment, where the message must point)
JARVIS_RECORD_CASES = [
    ("record not an object", lambda r: r.__setitem__(3, [1, 2]), "must be a JSON object with an 'atoms' structure, but got a list", "record 3"),
    ("record without atoms", _del("atoms"), "atoms must be a mapping with lattice_mat, coords and elements, but got no 'atoms' field", AT3),
    ("atoms not a mapping", _set("atoms", "Si2"), "atoms must be a mapping with lattice_mat, coords and elements, but got a string", AT3),
    ("atoms without lattice_mat", _del_atoms("lattice_mat"), "but got no lattice_mat", AT3),
    ("atoms without coords", _del_atoms("coords"), "but got no coords", AT3),
    ("atoms without elements", _del_atoms("elements"), "but got no elements", AT3),
    ("lattice_mat not 3x3", _set_atoms("lattice_mat", [[5.0, 0, 0], [0, 5.0, 0]]), "atoms.lattice_mat must be a 3x3 matrix of numbers", AT3),
    ("lattice_mat not numbers", _set_atoms("lattice_mat", [["a", 0, 0], [0, 5, 0], [0, 0, 5]]), "atoms.lattice_mat must be a 3x3 matrix of numbers", AT3),
    ("lattice_mat inf", _set_atoms("lattice_mat", [[5.0, 0, 0], [0, float("inf"), 0], [0, 0, 5.0]]),
     "atoms.lattice_mat must be finite numbers, but got row 1 = inf", AT3),
    ("coords NaN", lambda r: r[3]["atoms"]["coords"].__setitem__(1, [float("nan"), 0.5, 0.5]),
     "atoms.coords must be finite numbers, but got atom 1 = nan", AT3),
    ("coords ragged", lambda r: r[3]["atoms"]["coords"].__setitem__(1, [0.5, 0.5]), "atoms.coords must be a list of [x, y, z] per atom", AT3),
    ("coords/elements length mismatch", lambda r: r[3]["atoms"]["elements"].pop(),
     "atoms.coords and atoms.elements must have one entry per atom, but got 2 coords and 1 elements", AT3),
    ("no atoms", lambda r: r[3]["atoms"].update(coords=[], elements=[]), "atoms must hold at least one atom, but got none", AT3),
    ("elements not a list", _set_atoms("elements", "Si"), "atoms.elements must be a list of chemical symbols, but got a string", AT3),
    ("unknown element", lambda r: r[3]["atoms"]["elements"].__setitem__(1, "Xx"), "must be chemical symbols H .. Og (or atomic numbers 1..118), but got atom 1 = 'Xx'", AT3),
    ("dummy element X", lambda r: r[3]["atoms"]["elements"].__setitem__(0, "X"), "but got atom 0 = 'X'", AT3),
    ("atomic number 0", lambda r: r[3]["atoms"]["elements"].__setitem__(0, 0), "but got atom 0 = 0", AT3),
    ("atomic number 200", lambda r: r[3]["atoms"]["elements"].__setitem__(0, 200), "but got atom 0 = 200", AT3),
    ("cartesian not a boolean", _set_atoms("cartesian", "yes"), "atoms.cartesian must be true or false, but got 'yes'", AT3),
    ("singular cell (zero vector)", _set_atoms("lattice_mat", [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 0]]),
     "a periodic cell must span a volume (lattice planes at least 0.5 Å apart), but got a volume of 0", AT3),
    ("degenerate cell (coplanar vectors)", _set_atoms("lattice_mat", [[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]]),
     "a periodic cell must span a volume", AT3),
    ("flat cell (0.01 Å thick)", _set_atoms("lattice_mat", [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 0.01]]),
     "a periodic cell must span a volume", AT3),
    ("two atoms on one site", _coincident, "atoms must sit at distinct sites (at least 0.1 Å apart), but got atoms 0 and 1 0 Å apart", AT3),
    ("two atoms 0.005 Å apart", _near_coincident, "atoms must sit at distinct sites", AT3),
    ("isolated atom in a 1 km cell", lambda r: r[3]["atoms"].update(lattice_mat=[[1e4, 0, 0], [0, 1e4, 0], [0, 0, 1e4]],
                                                                     coords=[[0, 0, 0]], elements=["Si"]),
     "every atom must have 4 neighbours within 100 x the cutoff (500 Å), but got atom 0 with", AT3),
    ("target missing", _del("y"), "must have the target field 'y' (\"na\" where the value is missing), but got no such field", AT3),
    ("target non-numeric", _set("y", "abc"), "the target 'y' must be a finite number (or \"na\" where it is missing), but got 'abc'", AT3),
    ("target NaN", _set("y", float("nan")), "the target 'y' must be a finite number (or \"na\" where it is missing), but got nan", AT3),
    ("target inf", _set("y", float("inf")), "the target 'y' must be a finite number (or \"na\" where it is missing), but got inf", AT3),
    ("target '-inf' string", _set("y", "-inf"), "but got '-inf'", AT3),
    ("target 'nan' string", _set("y", "nan"), "but got 'nan'", AT3),
    ("target boolean", _set("y", True), "but got true", AT3),
    ("target a list", _set("y", [1.0]), "but got [1.0]", AT3),
    ("target an object", _set("y", {"value": 1.0}), "but got {'value': 1.0}", AT3),
    ("target an integer beyond any float", _set("y", 10 ** 400), "the target 'y' must be a finite number", AT3),
    ("target beyond float32", _set("y", 1e300), "the target 'y' must be at most 1e+30 in magnitude (it is trained in float32), but got 1e+300", AT3),
    ("coordinate 1e20 Å", _set_atoms("coords", [[0, 0, 0], [1e20, 0, 0]]), "atom positions must be within 1e+06 Å of the origin, but got atom 1", AT3),
    ("lattice vector 1e9 Å", _set_atoms("lattice_mat", [[1e9, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]), "lattice vectors must be shorter than 1e+06 Å", AT3),
]


@pytest.mark.parametrize("case,mutate,fragment,at", JARVIS_RECORD_CASES, ids=[c[0] for c in JARVIS_RECORD_CASES])
def test_jarvis_malformed_record_is_refused_naming_it(tmp_path, case, mutate, fragment, at):
    records = _jarvis_records()
    mutate(records)
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(records))
    _refused({"format": "jarvis_json", "path": str(path)}, "y", tmp_path, fragment, path, at, "jarvis_json")


JARVIS_FILE_CASES = [
    ("empty file", "", "must hold a JSON list of records, but got an empty file"),
    ("blank file", "  \n\n", "must hold a JSON list of records, but got an empty file"),
    ("truncated JSON", "CUT", "must be valid JSON, but got"),
    ("not a list", json.dumps({"JVASP-1": {"atoms": {}}}), "must hold a JSON list of records, but got an object"),
    ("a string", json.dumps("records"), "must hold a JSON list of records, but got a string"),
    ("empty list", "[]", "must hold at least one record, but got an empty list"),
    ("nested too deep", "[" * 200_000 + "]" * 200_000, "must be valid JSON of records, but got values nested too deep"),
    ("a 5000-digit number", '[{"jid": "a", "y": ' + "9" * 5000 + "}]", "must be valid JSON of records, but got Exceeds the limit"),
]


@pytest.mark.parametrize("case,text,fragment", JARVIS_FILE_CASES, ids=[c[0] for c in JARVIS_FILE_CASES])
def test_jarvis_malformed_file_is_refused(tmp_path, case, text, fragment):
    if text == "CUT":
        full = json.dumps(_jarvis_records())
        text = full[: len(full) // 2]
    path = tmp_path / "dft_3d.json"
    path.write_text(text)
    _refused({"format": "jarvis_json", "path": str(path)}, "y", tmp_path, fragment, path, None, "jarvis_json")


@pytest.mark.parametrize("name,content,fragment", [
    ("dft_3d.json.gz", b"this is not gzip data", "must be a readable UTF-8 JSON file (gzip), but got BadGzipFile"),
    ("dft_3d.json", b"\xff\xfe\x00[garbage", "must be a readable UTF-8 JSON file, but got UnicodeDecodeError"),
], ids=["corrupt gzip", "not UTF-8"])
def test_jarvis_unreadable_file_is_refused(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    _refused({"format": "jarvis_json", "path": str(path)}, "y", tmp_path, fragment, path, None, "jarvis_json")


def test_every_malformed_record_is_reported_not_only_the_first(tmp_path):
    records = _jarvis_records()
    _coincident(records)  # record 3
    records[5]["y"] = float("inf")
    records[6]["atoms"]["elements"][0] = "Qq"
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(records))
    text = _refused({"format": "jarvis_json", "path": str(path)}, "y", tmp_path, "distinct sites", path, AT3, "jarvis_json")
    lines = text.splitlines()
    assert len(lines) == 3, lines
    assert f"{path}: record 5 (id JVASP-5): the target 'y'" in lines[1] and "but got inf" in lines[1]
    assert f"{path}: record 6 (id JVASP-6): atoms.elements" in lines[2] and "'Qq'" in lines[2]


def test_jarvis_na_target_is_skipped_and_counted(tmp_path, caplog):
    records = _jarvis_records(10)
    for k in (2, 7):
        records[k]["y"] = "na"
    records[4]["y"] = None  # JSON null: also a missing value
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(records))
    with caplog.at_level("WARNING"):
        splits = _task({"format": "jarvis_json", "path": str(path)}, "y", DataCache(None)).load(DATA_CFG)
    assert splits.info["stats"]["skipped_missing_target"] == 3
    assert sum(splits.info["sizes"].values()) == 7
    assert "JVASP-2" not in sum(splits.info["ids"].values(), []) and "JVASP-3" in sum(splits.info["ids"].values(), [])
    assert f"{path}: skipped 3 of 10 records whose target 'y' is missing" in caplog.text
    # every feature of what was kept is finite
    for part in ("train", "val", "test"):
        for d in splits[part]:
            assert torch_finite(d.edge_vec) and torch_finite(d.lg_cos) and torch_finite(d.y)


def torch_finite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())


def test_all_na_and_too_few_records(tmp_path):
    records = _jarvis_records(4)
    for r in records:
        r["y"] = "na"
    path = tmp_path / "all_na.json"
    path.write_text(json.dumps(records))
    _refused({"format": "jarvis_json", "path": str(path)}, "y", tmp_path, "must hold at least one record with a value of the target 'y', "
             "but got none (4 read, 4 skipped as \"na\")", path, None, "jarvis_json")
    path = tmp_path / "two.json"
    path.write_text(json.dumps(_jarvis_records(2)))
    cache = DataCache(tmp_path / "cache2")
    with pytest.raises(DataError) as info:
        _task({"format": "jarvis_json", "path": str(path)}, "y", cache).load(DATA_CFG)
    assert str(info.value) == (f"{path}: must hold at least 3 usable records so that no split is empty (val_fraction 0.1, "
                               "test_fraction 0.1), but got 2")
    _REFUSED["jarvis_json"] += 1


def test_empty_val_split_is_refused_by_the_shared_check(tmp_path):
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(_jarvis_records()))
    task = _task({"format": "jarvis_json", "path": str(path), "val_fraction": 0.0}, "y", DataCache(None))
    problems = check_task_data(task, [DATA_CFG])
    assert problems == [f"{path}: the val split must hold at least one record, but got 0 (the dataset is too small for its "
                        "split fractions, or a split file lists none)"]
    assert check_task_data(_task({"format": "jarvis_json", "path": str(path)}, "y", DataCache(None)), [DATA_CFG]) == []


# ----------------------------------------------------------------------------------- ALIGNN folder
POSCAR = """{name}
1.0
{cell}
{symbols}
{counts}
direct
{coords}
"""


def _poscar(cell, symbols, coords) -> str:
    return POSCAR.format(name="test", cell="\n".join(" ".join(map(str, v)) for v in cell), symbols=" ".join(symbols),
                         counts=" ".join("1" for _ in symbols), coords="\n".join(" ".join(map(str, c)) for c in coords))


def _alignn_folder(folder: Path, n: int = 8) -> list[list[str]]:
    import ase.io

    folder.mkdir(exist_ok=True)
    rows = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.5 + 0.05 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.4 + 0.05 * k)
        name = f"POSCAR-{k}.vasp"
        ase.io.write(folder / name, atoms, format="vasp")
        rows.append([name, f"{0.5 + 0.1 * k:.3f}"])
    return rows


def _write_id_prop(folder: Path, rows) -> Path:
    path = folder / "id_prop.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


CELL5 = [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]
R4 = "row 4 (id POSCAR-3.vasp)"

#: (case, how to break the folder (rows, folder) -> file the message names, fragment, where in that file)
ALIGNN_CASES = [
    ("ragged row (extra column)", lambda rows, d: rows[3].append("7"), "id_prop.csv",
     "must have 2 columns like the first row, but got 3", R4),
    ("ragged row (missing target)", lambda rows, d: rows[3].pop(), "id_prop.csv",
     "must have 2 columns like the first row, but got 1", R4),
    ("missing structure file", lambda rows, d: (d / "POSCAR-3.vasp").unlink(), "id_prop.csv",
     "must name an existing structure file in", R4),
    ("file outside the folder", lambda rows, d: rows[3].__setitem__(0, "../outside.vasp"), "id_prop.csv",
     "must name a file inside", "row 4 (id ../outside.vasp)"),
    ("empty file name", lambda rows, d: rows[3].__setitem__(0, " "), "id_prop.csv",
     "column 0 must name a structure file, but got an empty cell", "row 4"),
    ("target non-numeric", lambda rows, d: rows[3].__setitem__(1, "abc"), "id_prop.csv",
     "the target 'band_gap' must be a finite number (or \"na\" where it is missing), but got 'abc'", R4),
    ("target inf", lambda rows, d: rows[3].__setitem__(1, "inf"), "id_prop.csv", "but got 'inf'", R4),
    ("target NaN", lambda rows, d: rows[3].__setitem__(1, "NaN"), "id_prop.csv", "but got 'NaN'", R4),
    ("target empty", lambda rows, d: rows[3].__setitem__(1, ""), "id_prop.csv", "but got ''", R4),
    ("unreadable structure file", lambda rows, d: (d / "POSCAR-3.vasp").write_text("garbage\n"), "POSCAR-3.vasp",
     "must be a structure file ASE can read, but got", None),
    ("empty structure file", lambda rows, d: (d / "POSCAR-3.vasp").write_text(""), "POSCAR-3.vasp",
     "must be a structure file ASE can read, but got", None),
    ("unknown element in POSCAR", lambda rows, d: (d / "POSCAR-3.vasp").write_text(_poscar(CELL5, ["Si", "Xx"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
     "POSCAR-3.vasp", "with chemical symbols H .. Og, but got the unknown element 'Xx'", None),
    ("two atoms on one site in POSCAR", lambda rows, d: (d / "POSCAR-3.vasp").write_text(_poscar(CELL5, ["Si", "Si"], [[0.25, 0.25, 0.25]] * 2)),
     "POSCAR-3.vasp", "atoms must sit at distinct sites (at least 0.1 Å apart), but got atoms 0 and 1 0 Å apart", None),
    ("singular cell in POSCAR", lambda rows, d: (d / "POSCAR-3.vasp").write_text(_poscar([[5, 0, 0], [0, 5, 0], [5, 5, 0]], ["Si", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
     "POSCAR-3.vasp", "a periodic cell must span a volume", None),
    ("NaN coordinate in POSCAR", lambda rows, d: (d / "POSCAR-3.vasp").write_text(_poscar(CELL5, ["Si", "O"], [[0, 0, 0], ["nan", 0.5, 0.5]])),
     "POSCAR-3.vasp", "atom positions must be finite numbers, but got atom 1 = [nan, nan, nan]", None),
]


@pytest.mark.parametrize("case,breaker,file,fragment,at", ALIGNN_CASES, ids=[c[0] for c in ALIGNN_CASES])
def test_alignn_folder_malformed_is_refused(tmp_path, case, breaker, file, fragment, at):
    folder = tmp_path / "data"
    rows = _alignn_folder(folder)
    breaker(rows, folder)
    _write_id_prop(folder, rows)
    (tmp_path / "outside.vasp").write_text((folder / "POSCAR-0.vasp").read_text())
    _refused({"format": "alignn_folder", "path": str(folder)}, "band_gap", tmp_path, fragment, folder / file, at, "alignn_folder")


def test_alignn_folder_broken_tables(tmp_path):
    folder = tmp_path / "data"
    _alignn_folder(folder)
    spec = {"format": "alignn_folder", "path": str(folder)}
    table = folder / "id_prop.csv"
    _refused(spec, "band_gap", tmp_path, "must be a CSV of 'file,target' rows (ALIGNN's id_prop.csv), but got no such file", table, None, "alignn_folder")
    table.write_text("\n\n")
    _refused(spec, "band_gap", tmp_path, "must list at least one 'file,target' row, but got none", table, None, "alignn_folder")
    table.write_bytes(b"POSCAR-0.vasp,\xff\xfe1.0\n")
    _refused(spec, "band_gap", tmp_path, "in UTF-8, but got UnicodeDecodeError", table, None, "alignn_folder")
    _refused({"format": "alignn_folder", "path": str(tmp_path / "nope")}, "band_gap", tmp_path, "must be an existing folder",
             tmp_path / "nope", None, "alignn_folder")


def test_alignn_na_target_is_skipped_and_counted(tmp_path, caplog):
    folder = tmp_path / "data"
    rows = _alignn_folder(folder, 9)
    rows[4][1] = "na"
    _write_id_prop(folder, rows)
    with caplog.at_level("WARNING"):
        splits = _task({"format": "alignn_folder", "path": str(folder)}, "band_gap", DataCache(None)).load(DATA_CFG)
    assert splits.info["stats"]["skipped_missing_target"] == 1 and sum(splits.info["sizes"].values()) == 8
    assert "skipped 1 of 9 records" in caplog.text


# ------------------------------------------------------------------------------ ASE files + targets
def _ase_files(tmp_path: Path, n: int = 8) -> list[list[str]]:
    import ase.io

    (tmp_path / "cifs").mkdir()
    rows = [["id", "formation_energy", "other"]]
    for k in range(n):
        ase.io.write(tmp_path / "cifs" / f"s{k}.cif", bulk("Al", "fcc", a=3.9 + 0.05 * k))
        rows.append([f"s{k}", f"{-0.1 * k:.2f}", "0"])
    return rows


S3 = "row 5 (id s3)"
ASE_CASES = [
    ("ragged row", lambda rows, d: rows[4].pop(), "targets.csv", "must have 3 columns like the header, but got 2", "row 5"),
    ("repeated id", lambda rows, d: rows[4].__setitem__(0, "s1"), "targets.csv",
     "ids must be unique, but got 's1' again (first on line 3)", "row 5"),
    ("empty id", lambda rows, d: rows[4].__setitem__(0, ""), "targets.csv", "the id column must name a structure, but got an empty cell", "row 5"),
    ("no target column", lambda rows, d: rows[0].__setitem__(1, "formation_enrgy"), "targets.csv",
     "must have a header row naming 'id' and the target 'formation_energy'", None),
    ("target non-numeric", lambda rows, d: rows[4].__setitem__(1, "abc"), "targets.csv",
     "the target 'formation_energy' must be a finite number (or \"na\" where it is missing), but got 'abc'", S3),
    ("target inf", lambda rows, d: rows[4].__setitem__(1, "-Infinity"), "targets.csv", "but got '-Infinity'", S3),
    ("unreadable structure file", lambda rows, d: (d / "cifs" / "s3.cif").write_text("data_x\n_cell_length_a oops\n"),
     "cifs/s3.cif", "must be a structure file ASE can read, but got", None),
    ("empty targets file", lambda rows, d: rows.clear(), "targets.csv", "must hold a header row or 'id,target' rows, but got an empty file", None),
]


@pytest.mark.parametrize("case,breaker,file,fragment,at", ASE_CASES, ids=[c[0] for c in ASE_CASES])
def test_ase_files_malformed_is_refused(tmp_path, case, breaker, file, fragment, at):
    rows = _ase_files(tmp_path)
    breaker(rows, tmp_path)
    with open(tmp_path / "targets.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    spec = {"format": "ase_files", "files": str(tmp_path / "cifs" / "*.cif"), "targets": str(tmp_path / "targets.csv")}
    _refused(spec, "formation_energy", tmp_path, fragment, tmp_path / file, at, "ase_files")


@pytest.mark.parametrize("suffix,fmt", [("traj", None), ("traj", "traj"), ("json", None), ("cif", "bundletrajectory")])
def test_ase_files_in_formats_whose_readers_can_unpickle_are_refused_unread(tmp_path, suffix, fmt):
    import ase.io

    rows = _ase_files(tmp_path)
    (tmp_path / "trajs").mkdir()
    for k in range(len(rows) - 1):
        if suffix == "cif":
            ase.io.write(tmp_path / "trajs" / f"s{k}.cif", bulk("Al", "fcc", a=3.9))
        else:
            ase.io.write(tmp_path / "trajs" / f"s{k}.{suffix}", bulk("Al", "fcc", a=3.9 + 0.05 * k))
    with open(tmp_path / "targets.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    spec = {"format": "ase_files", "files": str(tmp_path / "trajs" / f"*.{suffix}"), "targets": str(tmp_path / "targets.csv"),
            **({"file_format": fmt} if fmt else {})}
    text = _refused(spec, "formation_energy", tmp_path, "file_format: must be a plain-text structure format", tmp_path / "trajs",
                    None, "ase_files")
    assert f"but got '{fmt or suffix}'" in text


def test_ase_files_glob_matching_nothing(tmp_path):
    rows = _ase_files(tmp_path)
    with open(tmp_path / "targets.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    pattern = tmp_path / "cifs" / "*.vasp"
    spec = {"format": "ase_files", "files": str(pattern), "targets": str(tmp_path / "targets.csv")}
    _refused(spec, "formation_energy", tmp_path, "must match at least one structure file, but got none", pattern, None, "ase_files")


# ------------------------------------------------------------------------------------ graph builder
def _si():
    return bulk("Si", "diamond", a=5.43)


@pytest.mark.parametrize("case,numbers,positions,cell,pbc,fragment", [
    ("coincident atoms", [14, 14], [[0, 0, 0], [0, 0, 0]], np.eye(3) * 5, True, "atoms must sit at distinct sites"),
    ("coincident atoms, no cell", [8, 1, 1], [[0, 0, 0], [0.9, 0, 0], [0.9, 0, 0]], np.zeros((3, 3)), False, "but got atoms 1 and 2 0 Å apart"),
    ("NaN position", [14, 14], [[0, 0, 0], [np.nan, 1, 1]], np.eye(3) * 5, True, "atom positions must be finite numbers, but got atom 1"),
    ("inf in the cell", [14], [[0, 0, 0]], [[5, 0, 0], [0, np.inf, 0], [0, 0, 5]], True, "the cell must be finite numbers"),
    ("zero-volume cell", [14], [[0, 0, 0]], [[5, 0, 0], [0, 5, 0], [0, 0, 0]], True, "a periodic cell must span a volume"),
    ("slab with a zero vector", [14], [[0, 0, 0]], [[5, 0, 0], [0, 0, 0], [0, 0, 0]], [True, False, False], "a periodic cell must span a volume"),
    ("atomic number 0", [0, 14], [[0, 0, 0], [1.3, 1.3, 1.3]], np.eye(3) * 5, True, "atomic numbers must be 1..118 (H .. Og), but got atom 0 = 0"),
    ("no atoms", [], np.zeros((0, 3)), np.eye(3) * 5, True, "must hold at least one atom"),
])
def test_graph_builder_refuses_structures_with_undefined_features(case, numbers, positions, cell, pbc, fragment):
    with pytest.raises(ValueError) as info:
        build_crystal_graph(np.asarray(numbers, dtype=np.int64), np.asarray(positions, float), np.asarray(cell, float), pbc,
                            cutoff=5.0, max_neighbors=4)
    assert fragment in str(info.value) and ", but got " in str(info.value)


def test_graph_builder_keeps_close_but_distinct_atoms_finite():
    atoms = _si()
    g = build_crystal_graph(atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc, cutoff=5.0, max_neighbors=4)
    assert np.isfinite(g.edge_vec).all() and np.isfinite(g.lg_cos).all() and g.distances.min() > 2.0
    # an H2-like pair 0.74 Å apart is a real bond, not a coincidence
    g = build_crystal_graph(np.array([1, 1]), np.array([[0, 0, 0], [0.74, 0, 0]]), np.eye(3) * 6, True, cutoff=5.0, max_neighbors=4)
    assert np.isclose(g.distances.min(), 0.74, atol=1e-4) and np.isfinite(g.lg_cos).all()


def test_corpus_is_a_copy_of_valid_data_that_loads(tmp_path):
    """The unbroken datasets the corpus starts from load, so each refusal above is due to its one change."""
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(copy.deepcopy(_jarvis_records())))
    assert sum(_task({"format": "jarvis_json", "path": str(path)}, "y", DataCache(None)).load(DATA_CFG).info["sizes"].values()) == 8
    folder = tmp_path / "data"
    _write_id_prop(folder, _alignn_folder(folder))
    assert sum(_task({"format": "alignn_folder", "path": str(folder)}, "band_gap", DataCache(None)).load(DATA_CFG).info["sizes"].values()) == 8
    rows = _ase_files(tmp_path)
    with open(tmp_path / "targets.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    spec = {"format": "ase_files", "files": str(tmp_path / "cifs" / "*.cif"), "targets": str(tmp_path / "targets.csv")}
    assert sum(_task(spec, "formation_energy", DataCache(None)).load(DATA_CFG).info["sizes"].values()) == 8


def test_many_malformed_records_are_listed_up_to_a_bound_and_counted(tmp_path):
    from models.crystal_text.processing import MAX_PROBLEMS

    records = _jarvis_records(MAX_PROBLEMS + 12)
    for k in range(3, MAX_PROBLEMS + 10):  # MAX_PROBLEMS + 7 bad records, the rest valid
        records[k]["y"] = "abc"
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(records))
    lines = _refused({"format": "jarvis_json", "path": str(path)}, "y", tmp_path, "but got 'abc'", path, AT3, "jarvis_json").splitlines()
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[-1] == f"{path}: every record must be well-formed, but got 7 more malformed records than the {MAX_PROBLEMS} listed above"


def test_missing_description_with_description_source_data(tmp_path):
    records = _jarvis_records()
    for r in records[:6]:
        r["description"] = "a crystal ."
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(records))
    task = _task({"format": "jarvis_json", "path": str(path)}, "y", DataCache(None))
    with pytest.raises(DataError) as info:
        task.load(CrystalTextTask.DataConfig(cutoff=5.0, max_neighbors=4, description_source="data"))
    assert str(info.value).splitlines() == [
        f"{path}: record {k} (id JVASP-{k}): must have a text description, as description_source is 'data', but got none" for k in (6, 7)]


def test_malformed_descriptions_csv(tmp_path):
    folder = tmp_path / "data"
    _write_id_prop(folder, _alignn_folder(folder))
    desc = tmp_path / "descriptions.csv"
    spec = {"format": "alignn_folder", "path": str(folder), "descriptions": str(desc)}
    _refused(spec, "band_gap", tmp_path, "must be a CSV of 'id,description' rows, but got no such file", desc, None, "alignn_folder")
    desc.write_text("POSCAR-0.vasp,a metal .\nPOSCAR-1.vasp\n")
    _refused(spec, "band_gap", tmp_path, "must be 'id,description', but got 'POSCAR-1.vasp'", desc, "row 2", "alignn_folder")
