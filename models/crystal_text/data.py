"""Datasets of the crystal_text task: the ``task.dataset`` section of a study and its readers.

``task.dataset`` is a tagged union on ``format``::

    {format: jarvis_json,   path: dft_3d.json}                   # JARVIS-DFT records (list of dicts)
    {format: alignn_folder, path: my_data/}                       # POSCAR/CIF/xyz files + id_prop.csv (ALIGNN)
    {format: ase_files,     files: "cifs/*.cif", targets: y.csv}  # any ASE-readable files + a CSV of id,target
    {format: dcdft}                                               # ASE's 71 elemental crystals (no download)
    {format: synthetic,     n_samples: 64}                        # random small crystals, a learnable target

Every format also takes the split: ``val_fraction`` / ``test_fraction`` (ALIGNN's 0.1 / 0.1) and
``split_seed``, the same for every trial of a study, and ``max_samples`` (a random subset, for quick
looks). Paths are relative to the study file. Records whose target is "na", null or NaN are skipped,
counted and logged.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from hpo.errors import DataError, Problem, closest
from hpo.tasks import DataPath, DatasetSpec

logger = logging.getLogger(__name__)

#: JARVIS marks a missing value with the string "na"
MISSING_STRINGS = ("na", "nan", "none", "null", "")


@dataclass
class RawStructure:
    id: str
    numbers: np.ndarray  # (N,) atomic numbers
    positions: np.ndarray  # (N, 3) Cartesian, Å
    cell: np.ndarray  # (3, 3) rows = lattice vectors, Å
    pbc: np.ndarray  # (3,) bool
    target: Any  # raw value; parse_target decides whether it is usable
    description: Optional[str] = None


def parse_target(value: Any) -> Optional[float]:
    """A finite float, or None for JARVIS's "na", null, NaN, inf and anything non-numeric."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if value.strip().lower() in MISSING_STRINGS:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return None


class CrystalTextDataset(DatasetSpec):
    """The ``task.dataset`` section: validating it picks the format's model by its ``format`` key.

    Each format implements ``source_files`` (what the cache key digests), ``records`` (every record
    in file order with its raw target) and ``problems`` (cheap checks for ``Task.check``).
    """

    def source_files(self) -> list[Path]:
        """The input files whose content the processed dataset depends on (none: the spec says it all)."""
        return []

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        raise NotImplementedError

    def problems(self, target: Optional[str]) -> list[Problem]:
        """Cheap checks: files exist, the target is there (reads one record, not the whole file)."""
        return []


class _SplitSettings(CrystalTextDataset):
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # share of samples in the validation split
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # share of samples in the held-out test split
    split_seed: int = 123  # seed of the random split (ALIGNN's default random_seed)
    max_samples: Optional[int] = Field(None, ge=3)  # use a random subset of this many samples (after filtering)

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 to leave training samples, but got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self


class JarvisJsonDataset(_SplitSettings):
    """JARVIS-DFT records, e.g. ``dft_3d.json``: a JSON list (optionally .gz) of dicts with ``atoms``
    = {lattice_mat, coords, elements, cartesian} and one field per property."""

    format: Literal["jarvis_json"]
    path: DataPath  # the .json / .json.gz file
    id_field: str = "jid"  # record field used as the sample id
    atoms_field: str = "atoms"  # record field holding the structure
    description_field: str = "description"  # record field holding a text description, if the records have one
    target_field: Optional[str] = None  # record field of the target when it differs from the study's target name

    def source_files(self) -> list[Path]:
        return [self.path]

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        field = self.target_field or target
        with _open_text(self.path) as f:
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{self.path}: not valid JSON ({e})") from None
        if not isinstance(records, list):
            raise DataError(f"{self.path}: must hold a JSON list of records, but holds a {type(records).__name__}")
        for k, rec in enumerate(records):
            atoms = rec.get(self.atoms_field) if isinstance(rec, dict) else None
            if not isinstance(atoms, dict):
                raise DataError(f"{self.path}: record {k} has no {self.atoms_field!r} mapping")
            try:
                cell = np.asarray(atoms["lattice_mat"], dtype=float).reshape(3, 3)
                coords = np.asarray(atoms["coords"], dtype=float).reshape(-1, 3)
                elements = list(atoms["elements"])
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{self.path}: record {k}: {self.atoms_field} must have lattice_mat, coords and elements ({e})") from None
            desc = rec.get(self.description_field)
            yield RawStructure(
                id=str(rec.get(self.id_field, k)),
                numbers=_numbers(elements, f"{self.path}: record {k}"),
                positions=coords if atoms.get("cartesian", False) else coords @ cell,
                cell=cell,
                pbc=np.ones(3, bool),
                target=rec.get(field) if field else None,
                description=desc if isinstance(desc, str) and desc.strip() else None,
            )

    def problems(self, target: Optional[str]) -> list[Problem]:
        if not self.path.is_file():
            return [Problem("path", "must be an existing JARVIS JSON file", str(self.path))]
        try:
            first = first_json_record(self.path)
        except (DataError, OSError, UnicodeDecodeError) as e:
            return [Problem("path", f"must be a JSON list of records ({e})", str(self.path))]
        if first is None:
            return [Problem("path", "must hold at least one record", str(self.path))]
        if not isinstance(first, dict) or not isinstance(first.get(self.atoms_field), dict):
            keys = sorted(first) if isinstance(first, dict) else []
            return [Problem("atoms_field", f"must name the structure field of the records (fields: {', '.join(keys)})", self.atoms_field)]
        field = self.target_field or target
        if field in first:
            return []
        problem = _unknown_target(field, _numeric_fields(first), f"field of the JARVIS records in {self.path.name}")
        return [problem if not self.target_field else Problem("target_field", problem.message, field)]


class AlignnFolderDataset(_SplitSettings):
    """ALIGNN's layout: a folder of structure files and ``id_prop.csv`` rows ``file,target`` (no header)."""

    format: Literal["alignn_folder"]
    path: DataPath  # the folder
    id_prop: str = "id_prop.csv"  # the CSV inside the folder
    target_column: int = Field(1, ge=1)  # 0-based column of id_prop.csv holding the target
    file_format: Optional[str] = None  # ASE format name (vasp, cif, xyz, ...; ALIGNN's "poscar" too); default: from the file name
    descriptions: Optional[DataPath] = None  # optional CSV "file,description" (no header)

    def source_files(self) -> list[Path]:
        return [self.path] + ([self.descriptions] if self.descriptions else [])

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        table = self.path / self.id_prop
        descriptions = _read_pairs(self.descriptions) if self.descriptions else {}
        with open(table, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and r[0].strip()]
        for k, row in enumerate(rows):
            if len(row) <= self.target_column:
                raise DataError(f"{table}: row {k + 1} has {len(row)} columns, but target_column is {self.target_column}")
            name = row[0].strip()
            desc = descriptions.get(name) or descriptions.get(Path(name).stem)
            yield _read_structure(self.path / name, self.file_format, name, row[self.target_column].strip(), desc)

    def problems(self, target: Optional[str]) -> list[Problem]:
        table = self.path / self.id_prop
        if not self.path.is_dir():
            return [Problem("path", "must be an existing folder with structure files and id_prop.csv", str(self.path))]
        if not table.is_file():
            return [Problem("id_prop", f"must name a CSV file inside {self.path}", self.id_prop)]
        problems = []
        with open(table, newline="", encoding="utf-8") as f:
            row = next((r for r in csv.reader(f) if r and r[0].strip()), None)
        if row is None:
            problems.append(Problem("id_prop", "must list at least one 'file,target' row", self.id_prop))
        else:
            if len(row) <= self.target_column:
                problems.append(Problem("target_column", f"must be a column of {self.id_prop} (its rows have {len(row)})", self.target_column))
            if not (self.path / row[0].strip()).is_file():
                problems.append(Problem("path", f"must hold the files {self.id_prop} names; the first, {row[0].strip()!r}, is missing", str(self.path)))
        if self.descriptions and not self.descriptions.is_file():
            problems.append(Problem("descriptions", "must be an existing CSV file", str(self.descriptions)))
        return problems


class AseFilesDataset(_SplitSettings):
    """Any ASE-readable structure files matched by a glob, and a CSV of targets by id (file name or stem)."""

    format: Literal["ase_files"]
    files: DataPath  # glob pattern, e.g. structures/*.cif ("**" recurses)
    targets: DataPath  # CSV: a header naming `id_column` and the target, or headerless rows "id,target"
    id_column: str = "id"  # header mode: the id column
    file_format: Optional[str] = None  # ASE format name; default: from the file name
    descriptions: Optional[DataPath] = None  # optional CSV "id,description" (no header)

    def source_files(self) -> list[Path]:
        return [*_glob(self.files), self.targets] + ([self.descriptions] if self.descriptions else [])

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        table = read_target_table(self.targets, target, self.id_column)
        descriptions = _read_pairs(self.descriptions) if self.descriptions else {}
        files = _glob(self.files)
        unmatched = 0
        for path in files:
            key = path.name if path.name in table else path.stem
            if key not in table:
                unmatched += 1
                continue
            desc = descriptions.get(path.name) or descriptions.get(path.stem)
            yield _read_structure(path, self.file_format, key, table[key], desc)
        if unmatched:
            logger.warning("%s: %d of %d structure files have no row in %s and are not used", self.files, unmatched, len(files), self.targets)

    def problems(self, target: Optional[str]) -> list[Problem]:
        problems = []
        if not _glob(self.files):
            problems.append(Problem("files", "must match at least one structure file", str(self.files)))
        if not self.targets.is_file():
            problems.append(Problem("targets", "must be an existing CSV file", str(self.targets)))
        else:
            try:
                read_target_table(self.targets, target, self.id_column)
            except DataError as e:
                problems.append(Problem("targets", str(e).split(": ", 1)[-1], str(self.targets)))
        if self.descriptions and not self.descriptions.is_file():
            problems.append(Problem("descriptions", "must be an existing CSV file", str(self.descriptions)))
        return problems


DCDFT_TARGETS = ("wien2k_B", "wien2k_Bp", "wien2k_volume", "exp_B", "exp_Bp", "exp_volume")


class DcdftDataset(_SplitSettings):
    """ASE's ``dcdft`` collection: 71 elemental crystals with WIEN2k and experimental equation-of-state
    data (targets wien2k_B, wien2k_Bp, wien2k_volume, exp_B, exp_Bp, exp_volume). Shipped with ASE."""

    format: Literal["dcdft"]

    def source_files(self) -> list[Path]:
        from ase.collections import dcdft

        return [Path(dcdft.filename)]

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        from ase.collections import dcdft

        for name in dcdft.names:
            atoms = dcdft[name]
            yield RawStructure(name, atoms.numbers.copy(), atoms.positions.copy(), np.asarray(atoms.cell), atoms.pbc.copy(),
                               dcdft.data[name].get(target) if target else None)

    def problems(self, target: Optional[str]) -> list[Problem]:
        return [] if target in DCDFT_TARGETS else [_unknown_target(target, DCDFT_TARGETS, "dcdft target")]


#: elements of synthetic crystals
_SYNTHETIC_ELEMENTS = (3, 6, 8, 11, 12, 13, 14, 17, 26, 29)


class SyntheticDataset(_SplitSettings):
    """Random periodic crystals: 1..max_atoms atoms (>= 1.6 Å apart) in a slightly sheared cell.
    Target (any name): ``2 / mean nearest-neighbour distance + mean Z / 20 + noise``, learnable from
    both the graph (bond lengths) and the text (formula)."""

    format: Literal["synthetic"]
    n_samples: int = Field(64, ge=4)  # number of crystals
    max_atoms: int = Field(4, ge=1)  # atoms per cell: 1..max_atoms
    noise: float = Field(0.02, ge=0.0)  # std of the target noise
    seed: int = 0  # generation seed

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        from models.crystal_text.graphs import periodic_pairs

        rng = np.random.default_rng(self.seed)
        pbc = np.ones(3, bool)
        for k in range(self.n_samples):
            n = int(rng.integers(1, self.max_atoms + 1))
            numbers = rng.choice(_SYNTHETIC_ELEMENTS, size=n)
            for _ in range(100):
                scale = rng.uniform(2.4, 3.6) * n ** (1 / 3)
                cell = scale * (np.eye(3) + 0.05 * rng.normal(size=(3, 3)))
                positions = rng.random((n, 3)) @ cell
                if len(periodic_pairs(positions, cell, pbc, 1.6)[0]) == 0:
                    break
            nearest = np.full(n, np.inf)
            i, _, d, _, _ = periodic_pairs(positions, cell, pbc, 2.0 * scale)
            np.minimum.at(nearest, i, d)
            y = 2.0 / float(np.mean(nearest)) + float(np.mean(numbers)) / 20.0 + self.noise * float(rng.normal())
            yield RawStructure(f"synthetic-{k}", numbers.astype(np.int64), positions, cell, pbc, y)


CrystalTextDataset.model_rebuild(force=True)


# ---------------------------------------------------------------------------------------------- readers
def _glob(pattern: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _numbers(elements: list, where: str) -> np.ndarray:
    from ase.data import atomic_numbers

    try:
        return np.asarray([atomic_numbers[str(e).strip()] if not isinstance(e, int) else e for e in elements], dtype=np.int64)
    except KeyError as e:
        raise DataError(f"{where}: unknown element {e.args[0]!r}") from None


#: ALIGNN's file_format names that differ from ASE's
_ASE_FORMATS = {"poscar": "vasp"}


def _read_structure(path: Path, file_format: Optional[str], id_: str, target: Any, description: Optional[str]) -> RawStructure:
    import ase.io

    try:
        atoms = ase.io.read(str(path), format=_ASE_FORMATS.get(file_format, file_format))
    except Exception as e:  # ASE raises many types for unreadable files  # noqa: BLE001
        raise DataError(f"{path}: cannot be read as a structure ({type(e).__name__}: {e})") from None
    return RawStructure(id_, atoms.numbers.copy(), atoms.positions.copy(), np.asarray(atoms.cell), atoms.pbc.copy(), target, description)


def _read_pairs(path: Path) -> dict[str, str]:
    """A headerless two-column CSV "key,value" (a header "id,description" is skipped)."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0].strip():
                out[row[0].strip()] = ",".join(row[1:]).strip()
    out.pop("id", None)
    return out


def read_target_table(path: Path, target: Optional[str], id_column: str) -> dict[str, str]:
    """id -> raw target from a CSV with a header (``id_column`` + ``target``) or headerless rows "id,target"."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: is empty")
    header = [c.strip() for c in rows[0]]
    if target and target in header:
        t = header.index(target)
        i = header.index(id_column) if id_column in header else 0
        return {r[i].strip(): r[t].strip() for r in rows[1:] if len(r) > max(i, t)}
    if len(header) == 2 and parse_target(header[1]) is not None:
        return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
    near = closest(target, header) if target else None
    raise DataError(
        f"{path}: must have a header row naming {id_column!r} and the target {target!r}, or be headerless rows "
        f"'id,target'; the header has {', '.join(header)}" + (f" (did you mean {near!r}?)" if near else "")
    )


def _unknown_target(target: Optional[str], choices, kind: str) -> Problem:
    choices = sorted(choices)
    near = closest(str(target), choices)
    hint = f" (did you mean {near!r}?)" if near else ""
    return Problem("task.target", f"must name a {kind}: {', '.join(choices)}{hint}", target)


def _numeric_fields(record: dict) -> list[str]:
    return [k for k, v in record.items() if parse_target(v) is not None or (isinstance(v, str) and v.strip().lower() == "na")]


def first_json_record(path: Path, max_bytes: int = 64 << 20) -> Optional[Any]:
    """The first element of a JSON list, read incrementally (a 1 GB file is not loaded)."""
    decoder = json.JSONDecoder()
    buf = ""
    with _open_text(path) as f:
        while True:
            chunk = f.read(1 << 16)
            buf += chunk
            text = buf.lstrip()
            if text and not text.startswith("["):
                raise DataError("the file does not start with a JSON list '['")
            body = text[1:].lstrip()
            if body.startswith("]"):
                return None
            if body:
                try:
                    return decoder.raw_decode(body)[0]
                except json.JSONDecodeError:
                    if not chunk or len(buf) > max_bytes:
                        raise DataError("the first record is not valid JSON") from None
            elif not chunk:
                return None
