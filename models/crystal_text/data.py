"""Datasets of the crystal_text task: the ``task.dataset`` section of a study and its readers.

``task.dataset`` is a tagged union on ``format``::

    {format: jarvis_json,   path: dft_3d.json}                   # JARVIS-DFT records (list of dicts)
    {format: alignn_folder, path: my_data/}                       # POSCAR/CIF/xyz files + id_prop.csv (ALIGNN)
    {format: ase_files,     files: "cifs/*.cif", targets: y.csv}  # any ASE-readable files + a CSV of id,target
    {format: dcdft}                                               # ASE's 71 elemental crystals (no download)
    {format: synthetic,     n_samples: 64}                        # random small crystals, a learnable target

Every format also takes the split: ``val_fraction`` / ``test_fraction`` (ALIGNN's 0.1 / 0.1) and
``split_seed``, the same for every trial of a study, and ``max_samples`` (a random subset, for quick
looks); ``split: alignn`` gives ALIGNN's exact random split instead (:func:`hpo.data.split.alignn_split`,
with ``train_fraction`` as ALIGNN's ``train_ratio``); ``split: matbench`` with ``fold: 0 .. 4`` gives a
Matbench v0.1 fold (:func:`hpo.data.split.matbench_split`: sklearn's ``KFold(5, shuffle=True,
random_state=18012019)`` over the usable records in the order the format reads them: a JSON list's order,
``id_prop.csv``'s rows, ase_files' sorted paths; the fold's test part is the test split, and
``val_fraction`` of the fold's training rows, drawn with ``split_seed``, validate). An explicit split
replaces the random one: ``split_file`` in every format (ids per part, e.g. a JARVIS leaderboard file;
ids are the records' ids: ``jid``, the file names, dcdft's and synthetic's names) or ``split_field`` where
records have fields: a record field (``jarvis_json``), a 0-based column of ``id_prop.csv``
(``alignn_folder``) or a column of the targets CSV (``ase_files``), holding train / val / test. Paths
are relative to the study file.

Data files come from strangers, so every record is checked as it is read, and a malformed one is an
error naming the file, the record (index and id) or row (line number) and what must hold — never a
silent drop, a truncation or a NaN loss. The one documented exception: a target written as ``"na"``
(JARVIS's missing value; also JSON ``null``) marks a record without that property, which is skipped
and counted in the log. A target that is missing from a record, not a number, NaN or inf is an error.
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
from typing import Any, ClassVar, Iterator, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from hpo.data.split import MATBENCH_FOLDS, SPLIT_NAMES
from hpo.data.validate import MAX_LISTED, require_finite, where
from hpo.errors import DataError, Problem, closest, show
from hpo.data.dataset import SplitField, SplitFile, key_error
from hpo.tasks import DataPath, DatasetSpec

logger = logging.getLogger(__name__)

#: JARVIS marks a missing value with the string "na"
MISSING_STRINGS = ("na", "nan", "none", "null", "")
#: the only target values that mark a record as skippable (JARVIS's "na", any case; JSON null is None)
SKIPPABLE_STRINGS = ("na",)
#: targets are trained in float32: larger magnitudes overflow its range once standardised and scaled back
MAX_TARGET = 1e30


@dataclass
class RawStructure:
    id: str
    numbers: np.ndarray  # (N,) atomic numbers
    positions: np.ndarray  # (N, 3) Cartesian, Å
    cell: np.ndarray  # (3, 3) rows = lattice vectors, Å
    pbc: np.ndarray  # (3,) bool
    target: Any  # raw value; target_value decides whether it is usable, skippable or an error
    description: Optional[str] = None
    where: str = ""  # how messages name the structure: "file: record 3 (id JVASP-1)"
    target_where: str = ""  # how messages name the target, when not `where` (an id_prop.csv row)
    split: Any = None  # the record's split_field value (train / val / test), when the study names one


def target_value(rec: RawStructure, name: Optional[str]) -> Optional[float]:
    """The target of a record as a finite float; ``None`` for a documented missing value (``"na"``, JSON
    null): the record is skipped and counted. Anything else is a :class:`DataError`."""
    value = rec.target
    if value is None or (isinstance(value, str) and value.strip().lower() in SKIPPABLE_STRINGS):
        return None
    v: Optional[float] = None
    if isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            v = None
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        try:
            v = float(value)
        except OverflowError:  # an integer beyond any float (JSON allows one)
            v = math.inf
    at = rec.target_where or rec.where or f"record {rec.id!r}"
    if v is None or not math.isfinite(v):
        raise DataError(f"{at}: the target {name!r} must be a finite number (or \"na\" where it is missing), but got {show(value)}")
    if abs(v) > MAX_TARGET:
        raise DataError(f"{at}: the target {name!r} must be at most {MAX_TARGET:g} in magnitude (it is trained in float32), but got {show(value)}")
    return v


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
    in file order with its raw target) and ``check`` (cheap checks for ``Task.check``).
    """

    def label(self) -> str:
        """How messages name the dataset as a whole: its file, folder or glob."""
        for key in ("path", "files"):
            value = getattr(self, key, None)
            if value is not None:
                return str(value)
        return f"task.dataset ({getattr(self, 'format', '?')})"

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        raise NotImplementedError



class _SplitSettings(CrystalTextDataset, SplitFile):
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of samples in the validation split")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of samples in the held-out test split")
    split_seed: int = Field(123, description="seed of the random split (ALIGNN's default random_seed)")
    max_samples: Optional[int] = Field(None, ge=3,
                                       description="use a random subset of this many samples (after filtering); null: all")
    split: Literal["random", "alignn", "matbench"] = Field(
        "random", description="random: this service's seeded split (numpy); alignn: ALIGNN's get_id_train_val_test exactly "
                              "(Python's random.shuffle with split_seed, int(fraction x n) per part), the same test set as "
                              "an ALIGNN run with that random_seed and these ratios; matbench: Matbench v0.1's fold `fold` "
                              "(KFold(5, shuffle=True, random_state=18012019) over the usable records in the order the format "
                              "reads them) is the test split, val_fraction of the fold's other rows (drawn with split_seed) "
                              "validate")
    train_fraction: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="split: alignn only: ALIGNN's train_ratio (null: 1 - val_fraction - test_fraction)")
    fold: Optional[int] = Field(
        None, ge=0, le=MATBENCH_FOLDS - 1, strict=True,
        description="split: matbench only (and required there): the Matbench v0.1 fold whose test part is the test split, 0 .. 4")

    split_fractions: ClassVar[tuple[str, ...]] = ("val_fraction", "test_fraction")
    split_file_ids: ClassVar[str] = ("record ids (jarvis_json: the id_field, jid; alignn_folder: the id_prop.csv file names; "
                                     "ase_files: the targets CSV ids; dcdft: the names; synthetic: synthetic-0 ...)")
    random_split_settings: ClassVar[tuple[str, ...]] = ("split_seed", "max_samples", "split", "train_fraction", "fold")
    keyed_when_set: ClassVar[tuple[str, ...]] = (*DatasetSpec.keyed_when_set, "fold")

    @model_validator(mode="after")
    def _alignn_split_settings(self):
        if self.train_fraction is not None and self.split != "alignn":
            raise key_error(self, "train_fraction", f"is read by split: alignn only (split is {self.split!r})")
        if self.fold is not None and self.split != "matbench":
            raise key_error(self, "fold", f"is read by split: matbench only (split is {self.split!r})")
        if self.split == "matbench":
            if self.fold is None:
                raise key_error(self, "split", f"matbench needs fold: 0 .. {MATBENCH_FOLDS - 1} beside it (the Matbench fold "
                                               f"whose test part is the test split)")
            for key, why in (("test_fraction", "the fold's test part, a fifth of the records, is the test split"),
                             ("max_samples", "matbench's folds split every usable record")):
                if key in self.model_fields_set:
                    raise key_error(self, key, f"must not be set with split: matbench ({why})")
        if self.split == "alignn":
            if self.max_samples is not None:
                raise key_error(self, "max_samples", "must not be set with split: alignn (it splits every usable record, as ALIGNN does)")
            if self.train_fraction is not None and self.train_fraction + self.val_fraction + self.test_fraction > 1:
                raise key_error(self, "train_fraction", f"must leave train_fraction + val_fraction + test_fraction <= 1 (ALIGNN's "
                                f"rule; val {self.val_fraction:g}, test {self.test_fraction:g})")
        return self

    def split_parts(self, structures: dict) -> dict[str, np.ndarray]:
        """Sorted indices of train / val / test over the usable records (``structures``: the cached entry,
        with ``ids``, ``stats`` and, with ``split_field``, ``split_labels``): the explicit split
        (``split_file``, ``split_field``), ALIGNN's (``split: alignn``), a Matbench fold (``split:
        matbench``) or this service's seeded random split (``rule="floor"``, after ``max_samples``)."""
        from hpo.data.split import alignn_split, labels_split, matbench_split, random_split

        ids, label = structures["ids"], self.label()
        n = len(ids)
        if self.split_file is not None:
            return self.read_split(n, ids, label, what="usable records")
        if getattr(self, "split_field", None) is not None:
            if "split_labels" not in structures:
                raise DataError(f"{label}: task.dataset.split_field: the records must carry their split, but got an entry "
                                "built without it (rebuild the cache)")
            return labels_split(structures["split_labels"], label, ids=ids)
        if self.split == "alignn":
            return alignn_split(n, self.split_seed, self.train_fraction, self.val_fraction, self.test_fraction, label=label)
        if self.split == "matbench":
            skipped = int(structures.get("stats", {}).get("skipped_missing_target", 0))
            if skipped:
                logger.warning("%s: split: matbench folds the %d usable records; %d records without the target were skipped "
                               "first, so the folds are matbench's only if its dataset skipped them too", label, n, skipped)
            return matbench_split(n, self.fold, self.val_fraction, self.split_seed, label=label)
        return random_split(n, self.val_fraction, self.test_fraction, self.split_seed, rule="floor",
                            max_items=self.max_samples, what="usable records", label=label)


class JarvisJsonDataset(_SplitSettings, SplitField):
    """JARVIS-DFT records, e.g. ``dft_3d.json``: a JSON list (optionally .gz) of dicts with ``atoms``
    = {lattice_mat, coords, elements, cartesian} and one field per property."""

    format: Literal["jarvis_json"] = Field(description="selects this format: JARVIS-DFT records in a JSON file")
    path: DataPath = Field(description="the .json / .json.gz file")
    id_field: str = Field("jid", description="record field used as the sample id")
    atoms_field: str = Field("atoms", description="record field holding the structure")
    description_field: str = Field("description",
                                   description="record field holding a text description, if the records have one")
    target_field: Optional[str] = Field(
        None, description="record field of the target when it differs from the study's target name")

    def source_files(self) -> list[Path]:
        return _existing([self.path])  # a missing one is reported by records()

    def records(self, target: Optional[str]) -> Iterator[RawStructure | DataError]:
        """Every record in file order; a malformed record is yielded as its :class:`DataError` (so that
        the caller reports them all), a malformed file raises."""
        field = self.target_field or target
        records = read_json_list(self.path)
        for k, rec in enumerate(records):
            ident = rec.get(self.id_field) if isinstance(rec, dict) else None
            at = f"{self.path}: {where(k, 'record', ident if isinstance(ident, (str, int)) else None)}"
            try:
                structure = self._structure(rec, k, at, field)
            except DataError as e:
                yield e
                continue
            yield structure

    def _structure(self, rec: Any, k: int, at: str, field: Optional[str]) -> RawStructure:
        af = self.atoms_field
        if not isinstance(rec, dict):
            raise DataError(f"{at}: must be a JSON object with an {af!r} structure, but got {_json_kind(rec)}")
        atoms = rec.get(af)
        if not isinstance(atoms, dict):
            got = f"no {af!r} field (fields: {_keys(rec)})" if af not in rec else _json_kind(atoms)
            raise DataError(f"{at}: {af} must be a mapping with lattice_mat, coords and elements, but got {got}")
        missing = [key for key in ("lattice_mat", "coords", "elements") if key not in atoms]
        if missing:
            raise DataError(f"{at}: {af} must have lattice_mat, coords and elements, but got no {' and no '.join(missing)} "
                            f"(keys: {_keys(atoms)})")
        cell = _float_matrix(atoms["lattice_mat"], 3, at, f"{af}.lattice_mat", "a 3x3 matrix of numbers (lattice vectors as rows, Å)", "row")
        coords = _float_matrix(atoms["coords"], None, at, f"{af}.coords", "a list of [x, y, z] per atom", "atom")
        elements = atoms["elements"]
        if not isinstance(elements, list):
            raise DataError(f"{at}: {af}.elements must be a list of chemical symbols, but got {_json_kind(elements)} {show(elements)}")
        if len(elements) != len(coords):
            raise DataError(f"{at}: {af}.coords and {af}.elements must have one entry per atom, but got "
                            f"{len(coords)} coords and {len(elements)} elements")
        if not elements:
            raise DataError(f"{at}: {af} must hold at least one atom, but got none")
        cartesian = atoms.get("cartesian", False)
        if not isinstance(cartesian, bool):
            raise DataError(f"{at}: {af}.cartesian must be true or false, but got {show(cartesian)}")
        numbers = _numbers(elements, f"{at}: {af}.elements")
        if field is not None and field not in rec:
            raise DataError(f"{at}: must have the target field {field!r} (\"na\" where the value is missing), but got "
                            f"no such field (fields: {_keys(rec)})")
        if self.split_field is not None and self.split_field not in rec:
            raise DataError(f"{at}: task.dataset.split_field: every record must have the field {self.split_field!r} "
                            f"(train, val or test), but got no such field (fields: {_keys(rec)})")
        desc = rec.get(self.description_field)
        return RawStructure(
            id=str(rec.get(self.id_field, k)),
            numbers=numbers,
            positions=coords if cartesian else coords @ cell,
            cell=cell,
            pbc=np.ones(3, bool),
            target=rec.get(field) if field else None,
            description=desc if isinstance(desc, str) and desc.strip() else None,
            where=at,
            split=split_label(rec[self.split_field], at) if self.split_field is not None else None,
        )

    def check(self, target: Optional[str] = None) -> list[Problem]:
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
        if self.split_field is not None and self.split_field not in first:
            return [Problem("split_field", f"must name a field of the JARVIS records (fields: {', '.join(sorted(first))})",
                            self.split_field)]
        field = self.target_field or target
        if field in first:
            return []
        problem = _unknown_target(field, _numeric_fields(first), f"field of the JARVIS records in {self.path.name}")
        return [problem if not self.target_field else Problem("target_field", problem.message, field)]


class AlignnFolderDataset(_SplitSettings, SplitField):
    """ALIGNN's layout: a folder of structure files and ``id_prop.csv`` rows ``file,target`` (no header);
    ``split_field`` is a column of those rows holding train / val / test (e.g. ``file,target,split``)."""

    format: Literal["alignn_folder"] = Field(description="selects this format: an ALIGNN folder with id_prop.csv")
    path: DataPath = Field(description="the folder of structure files and id_prop.csv")
    id_prop: str = Field("id_prop.csv", description="the CSV inside the folder: rows file,target (no header)")
    target_column: int = Field(1, ge=1, description="0-based column of id_prop.csv holding the target")
    file_format: Optional[str] = Field(
        None, description="ASE format name (vasp, cif, xyz, ...; ALIGNN's poscar too); default: from the file name")
    descriptions: Optional[DataPath] = Field(None, description="optional CSV of rows file,description (no header)")
    split_field: Optional[int] = Field(
        None, ge=1, description="an explicit split instead of the random one: the 0-based column of id_prop.csv whose "
                                "cells are train, val or test (rows file,target,split: 2)")

    @model_validator(mode="after")
    def _split_column_is_not_the_target(self):
        if self.split_field is not None and self.split_field == self.target_column:
            raise key_error(self, "split_field", f"must be a column other than the target_column ({self.target_column})")
        return self

    def source_files(self) -> list[Path]:
        return _existing([self.path] + ([self.descriptions] if self.descriptions else []))  # a missing one is reported by records()

    def records(self, target: Optional[str]) -> Iterator[RawStructure | DataError]:
        """Every row of id_prop.csv in file order (rows named by their line); a malformed row or structure
        file is yielded as its :class:`DataError`, a malformed table raises."""
        if not self.path.is_dir():
            raise DataError(f"{self.path}: must be an existing folder with structure files and {self.id_prop}, but got no such folder")
        table = self.path / self.id_prop
        rows = read_csv_rows(table, f"a CSV of 'file,target' rows (ALIGNN's {self.id_prop})")
        if not rows:
            raise DataError(f"{table}: must list at least one 'file,target' row, but got none")
        descriptions = _read_pairs(self.descriptions) if self.descriptions else {}
        width = len(rows[0][1])
        folder = self.path.resolve()
        for line, row in rows:
            name = row[0].strip()
            at = f"{table}: {where(line, 'row', name or None)}"
            if len(row) != width:
                yield DataError(f"{at}: must have {width} columns like the first row, but got {len(row)}")
                continue
            if len(row) <= self.target_column:
                yield DataError(f"{at}: must have the target_column {self.target_column} (0-based), but got {len(row)} columns")
                continue
            if self.split_field is not None and len(row) <= self.split_field:
                yield DataError(f"{at}: task.dataset.split_field: must have the split column {self.split_field} (0-based), "
                                f"but got {len(row)} columns")
                continue
            if not name:
                yield DataError(f"{at}: column 0 must name a structure file, but got an empty cell")
                continue
            path = self.path / name
            if folder not in path.resolve().parents:
                yield DataError(f"{at}: must name a file inside {self.path}, but got {name!r}")
                continue
            if not path.is_file():
                yield DataError(f"{at}: must name an existing structure file in {self.path}, but got {name!r} (no such file)")
                continue
            desc = descriptions.get(name) or descriptions.get(Path(name).stem)
            try:
                split = split_label(row[self.split_field], at) if self.split_field is not None else None
                structure = _read_structure(path, self.file_format, name, row[self.target_column].strip(), desc)
            except DataError as e:
                yield e
                continue
            structure.target_where, structure.split = at, split
            yield structure

    def check(self, target: Optional[str] = None) -> list[Problem]:
        table = self.path / self.id_prop
        if not self.path.is_dir():
            return [Problem("path", "must be an existing folder with structure files and id_prop.csv", str(self.path))]
        if not table.is_file():
            return [Problem("id_prop", f"must name a CSV file inside {self.path}", self.id_prop)]
        problems = []
        try:
            row = next((r for _, r in read_csv_rows(table, "a CSV of 'file,target' rows")), None)
        except DataError as e:
            return [Problem("id_prop", str(e).split(": ", 1)[-1], self.id_prop)]
        if row is None:
            problems.append(Problem("id_prop", "must list at least one 'file,target' row", self.id_prop))
        else:
            if len(row) <= self.target_column:
                problems.append(Problem("target_column", f"must be a column of {self.id_prop} (its rows have {len(row)})", self.target_column))
            if self.split_field is not None and len(row) <= self.split_field:
                problems.append(Problem("split_field", f"must be a 0-based column of {self.id_prop} (its rows have {len(row)})",
                                        self.split_field))
            if not (self.path / row[0].strip()).is_file():
                problems.append(Problem("path", f"must hold the files {self.id_prop} names; the first, {row[0].strip()!r}, is missing", str(self.path)))
        if self.descriptions and not self.descriptions.is_file():
            problems.append(Problem("descriptions", "must be an existing CSV file", str(self.descriptions)))
        return problems


class AseFilesDataset(_SplitSettings, SplitField):
    """Any ASE-readable structure files matched by a glob, and a CSV of targets by id (file name or stem);
    ``split_field`` is a column of that CSV (it then needs a header) holding train / val / test."""

    format: Literal["ase_files"] = Field(description="selects this format: ASE-readable files and a CSV of targets")
    files: DataPath = Field(description="glob pattern of the structure files, e.g. structures/*.cif (** recurses)")
    targets: DataPath = Field(
        description="CSV of targets: a header naming id_column and the target, or headerless rows id,target")
    id_column: str = Field("id", description="targets CSV with a header: the column holding the id (file name or stem)")
    file_format: Optional[str] = Field(None, description="ASE format name; default: from the file name")
    descriptions: Optional[DataPath] = Field(None, description="optional CSV of rows id,description (no header)")

    def source_files(self) -> list[Path]:
        return _existing([*_glob(self.files), self.targets] + ([self.descriptions] if self.descriptions else []))

    def records(self, target: Optional[str]) -> Iterator[RawStructure | DataError]:
        """Every matched structure file with a row in the targets CSV (sorted by path); a malformed table
        raises, an unreadable structure file is yielded as its :class:`DataError`."""
        rows = read_target_table(self.targets, target, self.id_column, with_lines=True, split_column=self.split_field)
        descriptions = _read_pairs(self.descriptions) if self.descriptions else {}
        files = _glob(self.files)
        if not files:
            raise DataError(f"{self.files}: must match at least one structure file, but got none")
        unmatched, used = 0, set()
        for path in files:
            key = path.name if path.name in rows else path.stem
            if key not in rows:
                unmatched += 1
                continue
            used.add(key)
            line, raw, *split = rows[key]
            desc = descriptions.get(path.name) or descriptions.get(path.stem)
            at = f"{self.targets}: {where(line, 'row', key)}"
            try:
                label = split_label(split[0], at) if split else None
                structure = _read_structure(path, self.file_format, key, raw, desc)
            except DataError as e:
                yield e
                continue
            structure.target_where, structure.split = at, label
            yield structure
        if unmatched:
            logger.warning("%s: %d of %d structure files have no row in %s and are not used", self.files, unmatched, len(files), self.targets)
        if len(used) < len(rows):
            logger.warning("%s: %d of %d rows name no structure file matched by %s and are not used",
                           self.targets, len(rows) - len(used), len(rows), self.files)

    def check(self, target: Optional[str] = None) -> list[Problem]:
        problems = []
        if not _glob(self.files):
            problems.append(Problem("files", "must match at least one structure file", str(self.files)))
        if not self.targets.is_file():
            problems.append(Problem("targets", "must be an existing CSV file", str(self.targets)))
        else:
            try:  # the header only: the rows are checked, each with its line, when the data are read
                head = read_csv_rows(self.targets, "a CSV of targets")[:1]
                header, _, _, body, _ = _target_columns(self.targets, head, target, self.id_column)
            except DataError as e:
                problems.append(Problem("targets", str(e).split(": ", 1)[-1], str(self.targets)))
            else:
                if self.split_field is not None and (body is head or self.split_field not in header):
                    near = closest(self.split_field, header) if body is not head else None
                    problems.append(Problem("split_field", f"must name a column of the header of {self.targets.name} (train, val "
                                            f"or test per row; " + (f"header: {', '.join(header)}" if body is not head else
                                                                    "it has none, rows are 'id,target'") + ")"
                                            + (f" (did you mean {near!r}?)" if near else ""), self.split_field))
        if self.descriptions and not self.descriptions.is_file():
            problems.append(Problem("descriptions", "must be an existing CSV file", str(self.descriptions)))
        return problems


DCDFT_TARGETS = ("wien2k_B", "wien2k_Bp", "wien2k_volume", "exp_B", "exp_Bp", "exp_volume")


class DcdftDataset(_SplitSettings):
    """ASE's ``dcdft`` collection: 71 elemental crystals with WIEN2k and experimental equation-of-state
    data (targets wien2k_B, wien2k_Bp, wien2k_volume, exp_B, exp_Bp, exp_volume). Shipped with ASE."""

    format: Literal["dcdft"] = Field(description="selects this format: ASE's bundled dcdft collection")

    def source_files(self) -> list[Path]:
        from ase.collections import dcdft

        return [Path(dcdft.filename)]

    def records(self, target: Optional[str]) -> Iterator[RawStructure]:
        from ase.collections import dcdft

        for k, name in enumerate(dcdft.names):
            atoms = dcdft[name]
            yield RawStructure(name, atoms.numbers.copy(), atoms.positions.copy(), np.asarray(atoms.cell), atoms.pbc.copy(),
                               dcdft.data[name].get(target) if target else None, where=f"dcdft: {where(k, 'record', name)}")

    def check(self, target: Optional[str] = None) -> list[Problem]:
        return [] if target in DCDFT_TARGETS else [_unknown_target(target, DCDFT_TARGETS, "dcdft target")]


#: elements of synthetic crystals
_SYNTHETIC_ELEMENTS = (3, 6, 8, 11, 12, 13, 14, 17, 26, 29)


class SyntheticDataset(_SplitSettings):
    """Random periodic crystals: 1..max_atoms atoms (>= 1.6 Å apart) in a slightly sheared cell.
    Target (any name): ``2 / mean nearest-neighbour distance + mean Z / 20 + noise``, learnable from
    both the graph (bond lengths) and the text (formula)."""

    format: Literal["synthetic"] = Field(description="selects this format: generated crystals")
    n_samples: int = Field(64, ge=4, description="number of crystals")
    max_atoms: int = Field(4, ge=1, description="atoms per cell: 1..max_atoms")
    noise: float = Field(0.02, ge=0.0, allow_inf_nan=False, description="std of the target noise")
    seed: int = Field(0, description="generation seed")

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
            yield RawStructure(f"synthetic-{k}", numbers.astype(np.int64), positions, cell, pbc, y,
                               where=f"synthetic: {where(k, 'record', f'synthetic-{k}')}")


CrystalTextDataset.model_rebuild(force=True)


# ---------------------------------------------------------------------------------------------- readers
def _glob(pattern: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _numbers(elements: list, what: str) -> np.ndarray:
    """Atomic numbers of chemical symbols ("Si") or of integers 1..118; anything else names the atoms."""
    from ase.data import atomic_numbers

    out, bad = [], []
    for a, e in enumerate(elements):
        z = None
        if isinstance(e, str):
            z = atomic_numbers.get(e.strip())
        elif isinstance(e, (int, np.integer)) and not isinstance(e, bool):
            z = int(e)
        if z is None or not 1 <= z <= 118:  # ASE's "X" (Z = 0) is a dummy atom, not an element
            bad.append(f"atom {a} = {show(e)}")
        out.append(z or 0)
    if bad:
        raise DataError(f"{what} must be chemical symbols H .. Og (or atomic numbers 1..118), but got {', '.join(bad[:MAX_LISTED])}"
                        + (f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""))
    return np.asarray(out, dtype=np.int64)


def _float_matrix(value: Any, rows: Optional[int], at: str, what: str, must: str, kind: str) -> np.ndarray:
    """``value`` as a float array of shape (rows or any, 3), every entry finite."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{at}: {what} must be {must}, but got {show(value)}") from None
    if rows is None and arr.shape == (0,):
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3 or (rows is not None and arr.shape[0] != rows):
        raise DataError(f"{at}: {what} must be {must}, but got shape {arr.shape} ({show(value)})")
    if arr.size:
        require_finite(arr, at, what, kind=kind)
    return arr


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _keys(mapping: dict, limit: int = 12) -> str:
    keys = sorted(map(str, mapping))
    return (", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")) if keys else "none"


def read_json_list(path: Path) -> list:
    """A JSON file (optionally .gz) holding a non-empty list, or a :class:`DataError` saying what is wrong."""
    try:
        with _open_text(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: must be an existing JSON file, but got no such file") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: must be a readable UTF-8 JSON file{' (gzip)' if path.suffix == '.gz' else ''}, "
                        f"but got {type(e).__name__}: {e}") from None
    if not text.strip():
        raise DataError(f"{path}: must hold a JSON list of records, but got an empty file")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: must be valid JSON, but got {e.msg} at line {e.lineno} column {e.colno} "
                        "(a truncated or corrupt file?)") from None
    except RecursionError:
        raise DataError(f"{path}: must be valid JSON of records, but got values nested too deep to read") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise DataError(f"{path}: must be valid JSON of records, but got {str(e)[:200]}") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: must hold a JSON list of records, but got {_json_kind(records)}")
    if not records:
        raise DataError(f"{path}: must hold at least one record, but got an empty list")
    return records


def read_csv_rows(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row of a CSV file; a missing or unreadable file is a DataError."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            rows = []
            for row in reader:
                if any(c.strip() for c in row):
                    rows.append((reader.line_num, row))
    except FileNotFoundError:
        raise DataError(f"{path}: must be {what}, but got no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: must be {what} in UTF-8, but got {type(e).__name__}: {e}") from None
    return rows


#: ALIGNN's file_format names that differ from ASE's
_ASE_FORMATS = {"poscar": "vasp"}
#: ASE formats read from strangers' files: plain-text structure formats only. Others (ASE's traj and
#: bundletrajectory, whose readers can unpickle, database and calculator-output formats) are refused.
TEXT_FORMATS = ("aims", "castep-cell", "cfg", "cif", "espresso-in", "extxyz", "gen", "lammps-data", "proteindatabank",
                "res", "vasp", "xsf", "xyz")


def _read_structure(path: Path, file_format: Optional[str], id_: str, target: Any, description: Optional[str]) -> RawStructure:
    import warnings

    import ase.io
    from ase import Atoms

    fmt = _ASE_FORMATS.get(file_format, file_format)
    must = f"a structure file ASE can read{f' as {fmt}' if fmt else ''}"
    if fmt is None:
        from ase.io.formats import filetype

        try:
            fmt = filetype(str(path), guess=False)
        except Exception:  # unknown or unreadable: ASE's read says why below  # noqa: BLE001
            fmt = None
    if fmt is not None and fmt not in TEXT_FORMATS:
        raise DataError(f"{path}: file_format: must be a plain-text structure format ({', '.join(TEXT_FORMATS)}; ALIGNN's "
                        f"poscar too), but got {show(fmt)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ASE warns about odd files; an unreadable one is an error below
            atoms = ase.io.read(str(path), format=fmt)
    except KeyError as e:  # ASE's symbol lookup: an unknown element
        raise DataError(f"{path}: must be {must} with chemical symbols H .. Og, but got the unknown element {show(e.args[0] if e.args else '?')}") from None
    except Exception as e:  # ASE raises many types for unreadable files  # noqa: BLE001
        raise DataError(f"{path}: must be {must}, but got {type(e).__name__}: {str(e)[:200] or 'no detail'}") from None
    if not isinstance(atoms, Atoms):
        raise DataError(f"{path}: must be {must} holding one structure, but got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise DataError(f"{path}: must hold at least one atom, but got none")
    return RawStructure(id_, atoms.numbers.copy(), atoms.positions.copy(), np.asarray(atoms.cell), atoms.pbc.copy(), target, description,
                        where=str(path))


def _existing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


def _read_pairs(path: Path) -> dict[str, str]:
    """A headerless two-column CSV "key,value" (a header "id,description" is skipped)."""
    out: dict[str, str] = {}
    for line, row in read_csv_rows(path, "a CSV of 'id,description' rows"):
        if len(row) < 2 or not row[0].strip():
            raise DataError(f"{path}: {where(line, 'row')}: must be 'id,description', but got {show(','.join(row))}")
        out[row[0].strip()] = ",".join(row[1:]).strip()
    out.pop("id", None)
    return out


def _target_columns(path: Path, rows: list, target: Optional[str], id_column: str,
                    split_column: Optional[str] = None) -> tuple[list[str], int, int, list, Optional[int]]:
    """(header, id column, target column, data rows, split column or None) of a targets CSV; a DataError
    when it names no target, or ``split_column`` is given and the header does not name it."""
    if not rows:
        raise DataError(f"{path}: must hold a header row or 'id,target' rows, but got an empty file")
    header = [c.strip() for c in rows[0][1]]
    if target and target in header:
        if split_column is not None and split_column not in header:
            near = closest(split_column, header)
            raise DataError(f"{path}: task.dataset.split_field: must name a column of the header (train, val or test per row), "
                            f"but got {split_column!r} (header: {', '.join(header)})" + (f" (did you mean {near!r}?)" if near else ""))
        s = header.index(split_column) if split_column is not None else None
        return header, header.index(id_column) if id_column in header else 0, header.index(target), rows[1:], s
    if len(header) == 2 and parse_target(header[1]) is not None:
        if split_column is not None:
            raise DataError(f"{path}: task.dataset.split_field: must name a column of a header row (a headerless 'id,target' CSV "
                            f"has no split column), but got {split_column!r}")
        return header, 0, 1, rows, None
    near = closest(target, header) if target else None
    raise DataError(
        f"{path}: must have a header row naming {id_column!r} and the target {target!r}, or be headerless rows "
        f"'id,target', but got the header {', '.join(header)}" + (f" (did you mean {near!r}?)" if near else "")
    )


def read_target_table(path: Path, target: Optional[str], id_column: str, with_lines: bool = False,
                      split_column: Optional[str] = None) -> dict[str, Any]:
    """id -> raw target (``with_lines``: id -> (line, raw target), and with ``split_column`` (line, raw target,
    raw split)) from a CSV with a header (``id_column`` + ``target``) or headerless rows "id,target". Every
    row must have the header's columns and an id of its own: a ragged row or a repeated id is an error,
    never dropped."""
    rows = read_csv_rows(path, "a CSV of targets")
    header, i, t, body, s = _target_columns(path, rows, target, id_column, split_column)
    out: dict[str, Any] = {}
    problems = []
    for line, row in body:
        at = f"{path}: {where(line, 'row')}"
        ident = row[i].strip() if len(row) > i else ""
        if len(row) != len(header):
            problems.append(f"{at}: must have {len(header)} columns like the {'header' if body is not rows else 'first row'}, but got {len(row)}")
        elif not ident:
            problems.append(f"{at}: the id column must name a structure, but got an empty cell")
        elif ident in out:
            problems.append(f"{at}: ids must be unique, but got {ident!r} again (first on line {out[ident][0]})")
        else:
            out[ident] = (line, row[t].strip()) if s is None else (line, row[t].strip(), row[s].strip())
        if len(problems) > MAX_LISTED:
            break
    if problems:
        raise DataError("\n".join(problems))
    return out if with_lines else {k: v[1] for k, v in out.items()}


def split_label(value: Any, at: str) -> str:
    """A record's ``split_field`` value as train / val / test (aliases as in split files: valid,
    validation, id_train ...); anything else is a :class:`DataError` naming the record."""
    name = SPLIT_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
    if name is None:
        raise DataError(f"{at}: task.dataset.split_field: must be train, val or test, but got {show(value)}")
    return name


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
