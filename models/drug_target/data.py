"""Drug–target affinity data: dataset sections of a study, readers, tokenisation, splits, batching.

Three formats, chosen by ``task.dataset.format`` (paths resolve against the study file's folder):

``deepdta``
    The folder layout of DeepDTA (Öztürk et al. 2018; ``data/davis``, ``data/kiba``): ``ligands_can.txt``
    (JSON object id -> SMILES, rows of ``Y``), ``proteins.txt`` (JSON object name -> sequence, columns of
    ``Y``), the affinity matrix ``Y`` (a pickle, read with :func:`hpo.data.safe_pickle.load_data_pickle`, or
    whitespace-separated text; NaN marks unmeasured pairs) and ``folds/``. Fold indices index the
    flattened measured pairs ``rows, cols = np.where(~np.isnan(Y))``. **Splits**: the official test
    fold is the test split; DeepDTA picked hyperparameters by cross-validation over the five training
    folds, so the validation split here is one training fold (``val_fold``, default 0) and the other
    four train. Davis holds Kd in nM: set ``pkd: true`` for DeepDTA's ``pKd = -log10(Kd / 1e9)``.
``csv``
    One row per pair with columns ``smiles``, ``sequence`` and the target (the study's ``task.target``,
    default ``affinity``), e.g. the seed's ``data/KIBA.csv``. Split at random (the seed's
    ``preprocess.py``: test 0.2, validation 0.1 of all rows) or cold by drug / protein, or explicitly:
    ``split_file`` (row indices, 0-based after the header, or the ids of ``id_column``) or ``split_field``
    (a column whose values are train / val / test).
``synthetic``
    Random SMILES-like and protein-like strings whose affinity is a smooth function of their character
    composition plus noise: learnable, for smoke studies and tests.

**What must hold** (checked by the readers, so ``hpo validate`` / ``hpo run`` refuse a malformed file
before any trial, each problem as ``file: where: what must hold, but got X``): JSON files parse, hold
the documented object or list, name each id once; every SMILES is a non-empty string of printable
ASCII without spaces, every sequence one-letter amino-acid codes ``A-Z`` (characters outside DeepDTA's
alphabets, e.g. ``J`` or ``*``, encode as ``<unk>`` and are counted in the log and ``info``); ``Y`` has
shape (ligands, proteins), holds numbers only, and NaN is the one "not measured" marker (``inf`` and
non-numbers are errors); folds are non-empty lists of integer indices of measured pairs, none in two
folds; CSV rows have as many fields as the header and a finite target (no row is skipped); with
``pkd: true`` every Kd is > 0; and the split leaves no part empty.

Preprocessing (reading, pKd, tokenising, splitting, the target scaler) runs once per study and is cached
by the content digest of the input files and the settings (:class:`DTADataConfig`). The target scaler
is fitted on the training split only. Splits, the scaler and the batch order come from :mod:`hpo.data`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from hpo.data.loader import IndexBatcher
from hpo.data.dataset import SplitField, SplitFile
from hpo.data.scaling import Standardizer
from hpo.data.split import grouped_split, labels_split, random_split
from hpo.data.validate import MAX_LISTED, more_suffix, require_finite
from hpo.data.validate import where as _where
from hpo.errors import DataError, Problem, show
from hpo.tasks import DataPath, DatasetSpec

from models.drug_target.config import DTADataConfig

logger = logging.getLogger(__name__)

PAD, UNK = 0, 1  # token ids shared by both vocabularies
#: DeepDTA's CHARISOSMISET (64 characters of isomeric SMILES)
SMILES_CHARS = "#%)(+-/.1032547698=A@CBEDGFIHKMLONPSRUTWVY[Z]\\acbedgfihmlonsruty"
#: DeepDTA's CHARPROTSET (25 letters: the amino acids plus B, O, U, X, Z)
PROTEIN_CHARS = "ACBEDGFIHKMLONQPSRUTWVYXZ"
#: atom-level SMILES tokens (Schwaller et al., ACS Cent. Sci. 2019) and any other single character
SMILES_REGEX = re.compile(r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9]|.)")
TARGET_NAME = "affinity"  # the default target (CSV column) name


# ---- dataset sections ------------------------------------------------------------------------------
class DTADataset(DatasetSpec):
    """``task.dataset`` of the drug_target task: a tagged union on ``format`` (csv | deepdta | synthetic).

    Validating this class returns an instance of the subclass that ``format`` names (the dispatch of
    :class:`hpo.tasks.DatasetSpec`).
    """

    format: str = Field(description="the dataset format: csv, deepdta or synthetic")

    def read(self, target: str | None = None) -> "RawPairs":
        """Strings, pairs, targets (raw units) and split indices."""
        raise NotImplementedError


class _RandomSplit(DTADataset, SplitFile):
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0,
                                 description="fraction of the pairs held out for testing (cold splits: of the drugs / proteins)")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0,
                                description="fraction of the pairs held out for validation, carved before training")
    split: Literal["random", "cold_drug", "cold_protein"] = Field(
        "random", description="how pairs are split; cold: test/val drugs (proteins) unseen in training")
    split_seed: int = Field(0, description="seed of the split (the training seed is separate)")

    split_fractions: ClassVar[tuple[str, ...]] = ("test_fraction", "val_fraction")
    split_file_ids: ClassVar[str] = "pair indices (0-based, in generation order)"
    random_split_settings: ClassVar[tuple[str, ...]] = ("split_seed", "split")

    def source_files(self) -> list[Path]:
        return [self.split_file] if self.split_file is not None and self.split_file.is_file() else []


class CsvDTADataset(_RandomSplit, SplitField):
    """A CSV file with one row per drug–protein pair."""

    format: Literal["csv"] = Field("csv", description="selects this format: a CSV file of drug-protein pairs")
    path: DataPath = Field(description="the CSV file, one row per drug-protein pair")
    smiles_column: str = Field("smiles", description="CSV column holding the drug SMILES")
    sequence_column: str = Field("sequence", description="CSV column holding the protein sequence")
    pkd: bool = Field(False, description="the target holds Kd in nM: convert to pKd = -log10(Kd / 1e9)")
    id_column: str | None = Field(None, description="CSV column holding a pair id that split_file names (null: split_file "
                                                    "names row indices, 0-based after the header)")

    split_file_ids: ClassVar[str] = "row indices (0-based, after the header), or with id_column that column's ids"

    def source_files(self) -> list[Path]:
        return [self.path, *super().source_files()]

    def read(self, target: str | None = None) -> "RawPairs":
        return read_csv(self, target or TARGET_NAME)

    def check(self, target: str | None = None) -> list[Problem]:
        import pandas as pd

        if not self.path.is_file():
            return [Problem("task.dataset.path", "must be an existing CSV file", str(self.path))]
        try:
            header = list(pd.read_csv(self.path, nrows=0).columns)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            return [Problem("task.dataset.path", f"must be a readable CSV file ({e})", str(self.path))]
        problems = []
        for key, col in (("task.dataset.smiles_column", self.smiles_column),
                         ("task.dataset.sequence_column", self.sequence_column), ("task.target", target or TARGET_NAME),
                         ("task.dataset.id_column", self.id_column), ("task.dataset.split_field", self.split_field)):
            if col is not None and col not in header:
                problems.append(Problem(key, f"must name a column of {self.path.name} ({', '.join(map(str, header))})", col))
        return problems


class DeepDTADataset(DTADataset):
    """A DeepDTA data folder (see the module docstring)."""

    format: Literal["deepdta"] = Field("deepdta", description="selects this format: a DeepDTA data folder")
    path: DataPath = Field(description="the folder, e.g. DeepDTA's data/davis")
    ligands_file: str = Field("ligands_can.txt",
                              description="JSON object id -> SMILES, in the folder (DeepDTA also ships ligands_iso.txt)")
    proteins_file: str = Field("proteins.txt", description="JSON object name -> sequence, in the folder")
    affinity_file: str = Field("Y", description="drugs x proteins affinity matrix in the folder, NaN = not measured")
    affinity_format: Literal["auto", "pickle", "text"] = Field(
        "auto", description="how the affinity file is stored; auto: a pickle if it starts like one, else text")
    train_folds_file: str = Field("folds/train_fold_setting1.txt",
                                  description="JSON list of training folds (lists of pair indices), in the folder")
    test_fold_file: str = Field("folds/test_fold_setting1.txt", description="JSON list of test pair indices, in the folder")
    val_fold: int = Field(0, ge=0, description="which training fold is the validation split")
    pkd: bool = Field(False, description="the affinities hold Kd in nM (Davis): convert to pKd = -log10(Kd / 1e9)")

    def source_files(self) -> list[Path]:
        names = (self.ligands_file, self.proteins_file, self.affinity_file, self.train_folds_file, self.test_fold_file)
        return [self.path / n for n in names]

    def read(self, target: str | None = None) -> "RawPairs":
        return read_deepdta(self)

    def check(self, target: str | None = None) -> list[Problem]:
        if not self.path.is_dir():
            return [Problem("task.dataset.path", "must be an existing DeepDTA data folder", str(self.path))]
        problems = [Problem(f"task.dataset.{key}", f"must be a file in {self.path}", getattr(self, key))
                    for key in ("ligands_file", "proteins_file", "affinity_file", "train_folds_file", "test_fold_file")
                    if not (self.path / getattr(self, key)).is_file()]
        if target not in (None, TARGET_NAME):
            problems.append(Problem("task.target", f"must be {TARGET_NAME!r} or left out for a DeepDTA folder", target))
        return problems


class SyntheticDTADataset(_RandomSplit):
    """Random SMILES-like / protein-like strings with an affinity learnable from their composition."""

    format: Literal["synthetic"] = Field("synthetic", description="selects this format: generated drugs and proteins")
    n_drugs: int = Field(40, ge=2, description="number of drugs (SMILES-like strings) generated")
    n_proteins: int = Field(30, ge=2, description="number of proteins (sequence-like strings) generated")
    pair_fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of all drug x protein pairs that are measured")
    smiles_length: tuple[int, int] = Field((10, 40), description="min, max characters of a drug string")
    protein_length: tuple[int, int] = Field((30, 120), description="min, max residues of a protein string")
    noise: float = Field(0.1, ge=0.0, description="std of the target noise (the clean target has std ~1)")
    seed: int = Field(0, description="generation seed")

    def read(self, target: str | None = None) -> "RawPairs":
        return generate_synthetic(self)

    def check(self, target: str | None = None) -> list[Problem]:
        if target not in (None, TARGET_NAME):
            return [Problem("task.target", f"must be {TARGET_NAME!r} or left out for synthetic data", target)]
        return []




# ---- processed data ------------------------------------------------------------------------------
@dataclass
class TokenTables:
    """Token ids of every drug and protein once (pairs index into them)."""

    drug_tokens: np.ndarray  # (n_drugs, max_smiles_len) int16, PAD-padded
    drug_lengths: np.ndarray  # (n_drugs,) tokens before padding (>= 1)
    protein_tokens: np.ndarray  # (n_proteins, max_protein_len) int16
    protein_lengths: np.ndarray  # (n_proteins,)
    smiles_vocab: list[str]  # id -> token; 0 = <pad>, 1 = <unk>
    protein_vocab: list[str]


@dataclass
class PairSet:
    """One split: pairs (drug, protein) and their target, over the shared :class:`TokenTables`."""

    tables: TokenTables
    drug_idx: np.ndarray  # (n,) int64 rows of tables.drug_tokens
    protein_idx: np.ndarray  # (n,) int64
    y: np.ndarray  # (n,) float32, target units (pKd when converted)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DTAData:
    """What the cache stores: tables, the three splits and facts about them."""

    tables: TokenTables
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # split -> (drug_idx, protein_idx, y)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawPairs:
    """Strings and pairs as read, before tokenising."""

    smiles: list[str]
    sequences: list[str]
    drug_idx: np.ndarray
    protein_idx: np.ndarray
    y: np.ndarray  # float64
    split: dict[str, np.ndarray]  # split name -> indices into the pairs


# ---- build ---------------------------------------------------------------------------------------
def build(spec: DTADataset, data_cfg: DTADataConfig, target: str | None) -> DTAData:
    """Read, convert, split, tokenise and scale: everything :meth:`DrugTargetTask.load` caches."""
    raw = spec.read(target)  # the readers refuse malformed records and convert Kd to pKd (``pkd: true``)
    label = str(getattr(spec, "path", "") or "task.dataset")
    require_finite(raw.y, label, "targets", kind="pair")  # a non-finite target never reaches a trial
    for name, ix in raw.split.items():
        if len(ix) == 0:
            raise DataError(f"{label}: the {name} split must hold at least one pair, but got 0")

    train_drugs = np.unique(raw.drug_idx[raw.split["train"]])
    if data_cfg.smiles_tokenizer == "regex":
        smiles_vocab = regex_vocab([raw.smiles[i] for i in train_drugs])
    else:
        smiles_vocab = char_vocab(SMILES_CHARS)
    protein_vocab = char_vocab(PROTEIN_CHARS)
    d_tok, d_len = tokenize(raw.smiles, smiles_vocab, data_cfg.max_smiles_len, data_cfg.smiles_tokenizer)
    p_tok, p_len = tokenize(raw.sequences, protein_vocab, data_cfg.max_protein_len, "char")
    tables = TokenTables(d_tok, d_len, p_tok, p_len, smiles_vocab, protein_vocab)
    unknown = {"smiles": int((d_tok == UNK).sum()), "protein": int((p_tok == UNK).sum())}
    if data_cfg.smiles_tokenizer == "char" and unknown["smiles"]:
        logger.warning("%s: %d SMILES characters are outside DeepDTA's alphabet and encode as <unk>", label, unknown["smiles"])
    if unknown["protein"]:
        logger.warning("%s: %d residues are outside DeepDTA's alphabet (J) and encode as <unk>", label, unknown["protein"])

    if data_cfg.scale_target:  # fitted on the training split only
        scaler = Standardizer.fit(raw.y[raw.split["train"]])
        mean, std = scaler.mean, scaler.scale
    else:
        mean, std = 0.0, 1.0
    parts = {name: (raw.drug_idx[ix].astype(np.int64), raw.protein_idx[ix].astype(np.int64), raw.y[ix].astype(np.float32))
             for name, ix in raw.split.items()}
    info = {
        "n_drugs": len(raw.smiles),
        "n_proteins": len(raw.sequences),
        "n_pairs": len(raw.y),
        "split_sizes": {k: len(v) for k, v in raw.split.items()},
        "target_mean": mean,  # the scaler, fitted on the training split only
        "target_std": std,
        "target_units": "pKd" if getattr(spec, "pkd", False) else "as given",
        "smiles_vocab_size": len(smiles_vocab),
        "protein_vocab_size": len(protein_vocab),
        "smiles_tokenizer": data_cfg.smiles_tokenizer,
        "max_smiles_len": data_cfg.max_smiles_len,
        "max_protein_len": data_cfg.max_protein_len,
        "smiles_truncated": int(np.sum(d_len >= data_cfg.max_smiles_len)),
        "proteins_truncated": int(np.sum(p_len >= data_cfg.max_protein_len)),
        "unknown_tokens": unknown,  # tokens encoded as <unk> (within the kept length)
    }
    logger.info("drug_target data: %d drugs, %d proteins, %d pairs; split %s; target mean %.4g std %.4g",
                info["n_drugs"], info["n_proteins"], info["n_pairs"], info["split_sizes"], mean, std)
    return DTAData(tables, parts, info)


def kd_to_pkd(kd: np.ndarray, where: str = "", *, kind: str = "record", ids: Any = None, offset: int = 0) -> np.ndarray:
    """``pKd = -log10(Kd / 1e9)`` for Kd in nM (DeepDTA's Davis transform). Every Kd must be a finite
    number > 0 (a zero, negative or infinite Kd would turn into an infinite or NaN target)."""
    kd = np.asarray(kd, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(kd) & (kd > 0)))
    if bad.size:
        items = ", ".join(_where(int(i) + offset, kind, None if ids is None else ids[int(i)]) + f" = {float(kd[i])!r}"
                          for i in bad[:MAX_LISTED])
        raise DataError(f"{where}: pkd: true needs every Kd to be a finite number > 0 (nM), but got {items}" + more_suffix(int(bad.size)))
    return -np.log10(kd / 1e9)


# ---- readers -------------------------------------------------------------------------------------
#: what a SMILES string may hold: printable ASCII without spaces (characters outside the tokenizer's
#: alphabet map to <unk> and are counted in the log); a space, tab, control or non-ASCII character
#: means the field holds something else (a name, a second column, a broken encoding)
_SMILES_BAD = re.compile(r"[^\x21-\x7e]")
#: an amino-acid sequence: one-letter codes A-Z (J, the one letter outside DeepDTA's alphabet, maps to <unk>)
_PROTEIN_BAD = re.compile(r"[^A-Z]")


def _string_problem(value: Any, what: str, protein: bool) -> str | None:
    """Why ``value`` cannot be a SMILES (``protein`` False) or a sequence; None when it can."""
    if not isinstance(value, str):
        return f"{what} must be a string, but got {show(value)}"
    s = value.strip()
    if not s:
        return f"{what} must not be empty, but got {show(value)}"
    bad = (_PROTEIN_BAD if protein else _SMILES_BAD).search(s)
    if bad:
        rule = "one-letter amino-acid codes A-Z" if protein else "printable ASCII without spaces"
        return f"{what} must be {rule}, but got {show(bad.group())} at position {bad.start()} of {show(s, 60)}"
    return None


def _raise(problems: list[str]) -> None:
    if problems:
        lines = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            lines[-1] += more_suffix(len(problems))
        raise DataError("\n".join(lines))


def _read_strings(path: Path, kind: str, what: str, protein: bool) -> tuple[list[str], list[str], list[str]]:
    """A DeepDTA JSON object id -> string: ``(ids, strings, problems)``; strings are stripped."""
    obj = _read_json(path, dict, f"an object {kind} id -> {what}")
    if not obj:
        raise DataError(f"{path}: must hold at least one {kind} (id -> {what}), but got an empty object")
    ids, strings, problems = [], [], []
    for i, (key, value) in enumerate(obj.items()):
        why = _string_problem(value, what, protein)
        if why:
            problems.append(f"{path}: {_where(i, kind, key)}: {why}")
        ids.append(key)
        strings.append(value.strip() if isinstance(value, str) else "")
    return ids, strings, problems


class _PairIds:
    """Lazy ``ids`` of the measured pairs of Y for :func:`require_finite` (built only for bad pairs)."""

    def __init__(self, rows, cols, ligands, proteins):
        self.rows, self.cols, self.ligands, self.proteins = rows, cols, ligands, proteins

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> str:
        r, c = int(self.rows[i]), int(self.cols[i])
        return f"Y[{r}, {c}]: ligand {self.ligands[r]}, protein {self.proteins[c]}"


def read_deepdta(spec: DeepDTADataset) -> RawPairs:
    folder = spec.path
    lig_path, prot_path, y_path = folder / spec.ligands_file, folder / spec.proteins_file, folder / spec.affinity_file
    lig_ids, smiles, problems = _read_strings(lig_path, "ligand", "SMILES", protein=False)
    prot_ids, sequences, more = _read_strings(prot_path, "protein", "sequence", protein=True)
    _raise(problems[:MAX_LISTED] + more)
    Y = load_affinity_matrix(y_path, spec.affinity_format)
    if Y.shape != (len(lig_ids), len(prot_ids)):
        raise DataError(f"{y_path}: must have shape (ligands, proteins) = ({len(lig_ids)}, {len(prot_ids)}) as "
                        f"{spec.ligands_file} and {spec.proteins_file} list, but got {Y.shape}")
    rows, cols = np.where(~np.isnan(Y))  # DeepDTA's pair order; fold indices index into it
    n = len(rows)
    if n == 0:
        raise DataError(f"{y_path}: must hold at least one measured affinity (NaN marks a pair not measured), "
                        f"but got {Y.size} NaN")
    y = Y[rows, cols].astype(np.float64)
    # NaN is the documented "not measured" marker; anything else must be a finite number
    require_finite(y, y_path, "measured affinities", kind="pair", ids=_PairIds(rows, cols, lig_ids, prot_ids))
    if spec.pkd:
        y = kd_to_pkd(y, str(y_path), kind="pair", ids=_PairIds(rows, cols, lig_ids, prot_ids))

    train_path, test_path = folder / spec.train_folds_file, folder / spec.test_fold_file
    train_folds = _read_json(train_path, list, "a list of training folds, each a list of pair indices")
    test_raw = _read_json(test_path, list, "a list of test pair indices")
    if len(train_folds) < 2:
        raise DataError(f"{train_path}: must hold at least two training folds (one is the validation split), "
                        f"but got {len(train_folds)}")
    if spec.val_fold >= len(train_folds):
        raise DataError(f"task.dataset.val_fold: must be < the number of training folds in {train_path} ({len(train_folds)}), "
                        f"but got {spec.val_fold}")
    folds = [_fold_indices(f, n, train_path, f"training fold {k}") for k, f in enumerate(train_folds)]
    test = _fold_indices(test_raw, n, test_path, "test fold")
    _no_shared_pairs([(train_path, f"training fold {k}", f) for k, f in enumerate(folds)] + [(test_path, "the test fold", test)],
                     n, _PairIds(rows, cols, lig_ids, prot_ids))
    val = folds[spec.val_fold]
    train = np.concatenate([f for i, f in enumerate(folds) if i != spec.val_fold])
    unused = n - len(train) - len(val) - len(test)
    if unused:
        logger.warning("%s: %d of %d measured pairs of %s are in no fold (not used)", folder, unused, n, spec.affinity_file)
    return RawPairs(smiles=smiles, sequences=sequences, drug_idx=rows, protein_idx=cols, y=y,
                    split={"train": train, "val": val, "test": test})


def _no_shared_pairs(folds: list[tuple[Path, str, np.ndarray]], n: int, ids: _PairIds) -> None:
    """Each measured pair is in one fold at most (within a fold: once)."""
    owner = np.full(n, -1, dtype=np.int64)
    problems = []
    for k, (path, label, ix) in enumerate(folds):
        values, counts = np.unique(ix, return_counts=True)
        for v in values[counts > 1][:MAX_LISTED]:
            problems.append(f"{path}: {label}: must list each pair index once, but got pair {int(v)} ({ids[int(v)]}) "
                            f"{int(counts[values == v][0])} times")
        clash = values[owner[values] >= 0]
        for v in clash[:MAX_LISTED]:
            problems.append(f"{path}: {label}: must share no pair with {folds[int(owner[v])][1]}, but got pair {int(v)} "
                            f"({ids[int(v)]}) in both" + (f" (and {clash.size - 1} more shared)" if clash.size > 1 else ""))
            break
        owner[values[owner[values] < 0]] = k
    _raise(problems)


def load_affinity_matrix(path: Path, fmt: str = "auto") -> np.ndarray:
    """DeepDTA's ``Y``: a (restricted) pickle or a whitespace-separated text matrix, as float64.
    NaN (``nan`` in text) marks a pair that was not measured; anything else must be a number."""
    from hpo.data.safe_pickle import load_data_pickle

    if not path.is_file():
        raise DataError(f"{path}: must be an existing affinity matrix file, but got none")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: must hold a drugs x proteins affinity matrix, but got an empty file")
    if fmt == "auto":
        with open(path, "rb") as f:
            fmt = "pickle" if f.read(1) == b"\x80" else "text"
    if fmt == "text":
        return _read_text_matrix(path)
    obj = load_data_pickle(path)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, (list, tuple, np.ndarray)) for r in obj):
        widths = [len(r) for r in obj]
        if len(set(widths)) > 1:
            i = next(i for i, w in enumerate(widths) if w != widths[0])
            raise DataError(f"{path}: must hold a rectangular matrix (every row as long as row 0: {widths[0]}), "
                            f"but got row {i} of length {widths[i]}")
    if not isinstance(obj, (np.ndarray, list, tuple)):
        raise DataError(f"{path}: must hold a numeric matrix (drugs x proteins), but got a pickled {type(obj).__name__}")
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: must hold a numeric matrix (drugs x proteins), but got {type(obj).__name__} ({e})") from None
    if arr.dtype.kind not in "iuf":
        bad = next(((ix, v) for ix, v in np.ndenumerate(arr) if not isinstance(v, (int, float, np.integer, np.floating))
                    or isinstance(v, (bool, np.bool_))), None)
        got = f"{show(bad[1])} at Y{list(bad[0])}" if bad is not None and arr.dtype.kind == "O" else f"dtype {arr.dtype}"
        raise DataError(f"{path}: must hold numbers (NaN: not measured), but got {got}")
    if arr.ndim != 2:
        raise DataError(f"{path}: must hold a 2-D matrix (drugs x proteins), but got shape {arr.shape}")
    return arr.astype(np.float64)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: must be UTF-8 text, but got byte 0x{data[e.start]:02x}") from None


def _read_text_matrix(path: Path) -> np.ndarray:
    """Whitespace-separated numbers, one matrix row per line (``#`` comments and blank lines skipped);
    ``nan`` marks a pair not measured."""
    rows: list[list[float]] = []
    problems: list[str] = []
    width = first = None
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        if width is None:
            width, first = len(tokens), lineno
        elif len(tokens) != width:
            problems.append(f"{path}: line {lineno}: must have {width} values (one per protein) like line {first}, "
                            f"but got {len(tokens)}")
            continue
        values = []
        for col, tok in enumerate(tokens, 1):
            try:
                values.append(float(tok))
            except ValueError:
                problems.append(f"{path}: line {lineno} column {col}: must be a number (nan: not measured), but got {show(tok)}")
                values.append(math.nan)
        rows.append(values)
        if len(problems) > MAX_LISTED:
            break
    _raise(problems)
    if not rows:
        raise DataError(f"{path}: must hold a drugs x proteins affinity matrix, but got no numbers")
    return np.array(rows, dtype=np.float64)


def read_csv(spec: CsvDTADataset, target: str) -> RawPairs:
    """One pair per row. Every row must have as many fields as the header, a SMILES, a sequence and a
    finite target: a malformed row is an error naming it (rows are counted from 1 after the header)."""
    import csv
    import io

    problems = spec.check(target)
    if problems:
        raise DataError("\n".join(f"{spec.path}: {p.render(None)}" for p in problems))
    path = spec.path
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    problems: list[str] = []
    smiles, sequences, targets, row_ids, labels = [], [], [], [], []
    try:
        header = next(reader, [])
        for name in (spec.smiles_column, spec.sequence_column, target):
            if header.count(name) > 1:
                problems.append(f"{path}: line 1: must name column {name!r} once, but got it {header.count(name)} times")
        _raise(problems)
        cols = [header.index(c) for c in (spec.smiles_column, spec.sequence_column, target)]
        extra = {key: header.index(col) for key, col in (("id", spec.id_column), ("split", spec.split_field)) if col is not None}
        checked: dict[tuple[str, bool], str | None] = {}
        for fields in reader:
            if not fields:
                continue  # a blank line holds no record
            row = len(targets) + 1
            loc = f"row {row} (line {reader.line_num})"
            if len(fields) != len(header):
                problems.append(f"{path}: {loc}: must have {len(header)} fields like the header, but got {len(fields)}: "
                                f"{show(','.join(fields), 60)}")
                targets.append(0.0)
                continue
            s, q, v = (fields[c] for c in cols)
            for value, col, protein in ((s, spec.smiles_column, False), (q, spec.sequence_column, True)):
                key = (value, protein)
                if key not in checked:
                    checked[key] = _string_problem(value, col, protein)
                if checked[key]:
                    problems.append(f"{path}: {loc}: {checked[key]}")
            smiles.append(s.strip())
            sequences.append(q.strip())
            if "id" in extra:
                row_ids.append(fields[extra["id"]].strip())
            if "split" in extra:
                labels.append(fields[extra["split"]])
            try:
                targets.append(float(v))
            except ValueError:
                targets.append(v.strip())  # require_finite names it
            if len(problems) > MAX_LISTED:
                break
    except csv.Error as e:
        problems.append(f"{path}: line {reader.line_num}: must be well-formed CSV, but got {e}")
    _raise(problems)
    require_finite(targets, path, f"{target} (column {cols[2] + 1})", kind="row", offset=1)
    if len(targets) < 3:
        raise DataError(f"{path}: must hold at least 3 rows (pairs) for a training, validation and test split, but got {len(targets)}")
    import pandas as pd

    drug_idx, uniq_smiles = pd.factorize(pd.Series(smiles))
    protein_idx, uniq_seqs = pd.factorize(pd.Series(sequences))
    y = np.asarray(targets, dtype=np.float64)
    if spec.pkd:
        y = kd_to_pkd(y, str(path), kind="row", offset=1)
    split = split_pairs(len(y), spec, drug_idx, protein_idx, label=str(path),
                        ids=row_ids if spec.id_column is not None else None, labels=labels if spec.split_field else None)
    return RawPairs(list(uniq_smiles), list(uniq_seqs), drug_idx.astype(np.int64), protein_idx.astype(np.int64), y, split)


def generate_synthetic(spec: SyntheticDTADataset) -> RawPairs:
    """Drugs and proteins whose strings are drawn from per-item character mixtures; the affinity is a
    bilinear function of the two compositions (plus per-modality terms) and Gaussian noise."""
    rng = np.random.default_rng(spec.seed)
    drug_alphabet, prot_alphabet = np.array(list("CNOSFc1=()")), np.array(list("ACDEFGHIKLMNPQRSTVWY"))

    def strings(n, alphabet, lengths):
        comp = rng.dirichlet(np.full(len(alphabet), 0.5), size=n)  # each item's character mixture
        out = []
        for i in range(n):
            length = int(rng.integers(lengths[0], lengths[1] + 1))
            out.append("".join(rng.choice(alphabet, size=length, p=comp[i])))
        freq = np.array([[s.count(c) / len(s) for c in alphabet] for s in out])
        return out, freq

    smiles, fd = strings(spec.n_drugs, drug_alphabet, spec.smiles_length)
    sequences, fp = strings(spec.n_proteins, prot_alphabet, spec.protein_length)
    W = rng.normal(size=(fd.shape[1], fp.shape[1]))
    u, v = rng.normal(size=fd.shape[1]), rng.normal(size=fp.shape[1])
    clean = 3.0 * (fd @ W @ fp.T) + fd @ u[:, None] + (fp @ v[:, None]).T  # (n_drugs, n_proteins)
    clean = (clean - clean.mean()) / (clean.std() + 1e-12)
    rows, cols = np.where(np.ones_like(clean, dtype=bool))
    if spec.pair_fraction < 1.0:
        keep = np.sort(rng.choice(len(rows), size=max(3, int(round(spec.pair_fraction * len(rows)))), replace=False))
        rows, cols = rows[keep], cols[keep]
    y = 6.0 + clean[rows, cols] + spec.noise * rng.normal(size=len(rows))
    split = split_pairs(len(rows), spec, rows, cols)
    return RawPairs(smiles, sequences, rows.astype(np.int64), cols.astype(np.int64), y, split)


def split_pairs(n: int, spec: _RandomSplit, drug_idx: np.ndarray, protein_idx: np.ndarray,
                label: str = "task.dataset", ids: list | None = None, labels: list | None = None) -> dict[str, np.ndarray]:
    """Random split of ``n`` pairs (test, val as fractions of all pairs), or cold by drug / protein
    (fractions of the distinct drugs / proteins; every pair of a held-out drug goes with it). No split
    may be left empty: too few pairs (drugs, proteins) for the fractions is an error naming the fewest.
    An explicit split (``split_file``: ``ids`` or row indices; ``split_field``: one label per pair) replaces it."""
    if spec.split_file is not None:
        return spec.read_split(n, ids, label, what="pairs")
    if labels is not None:
        return labels_split(labels, label, ids=ids)
    order = ("test_fraction", "val_fraction")
    if spec.split == "random":
        return random_split(n, spec.val_fraction, spec.test_fraction, spec.split_seed, what="pairs", label=label,
                            fraction_order=order)
    groups = np.asarray(drug_idx if spec.split == "cold_drug" else protein_idx)
    return grouped_split(groups, spec.val_fraction, spec.test_fraction, spec.split_seed,
                         n_groups=int(groups.max()) + 1 if len(groups) else 0, what=spec.split.split("_")[1] + "s",
                         label=label, fraction_order=order)


# ---- tokenising ----------------------------------------------------------------------------------
def char_vocab(chars: str) -> list[str]:
    return ["<pad>", "<unk>", *chars]


def smiles_tokens(smiles: str, tokenizer: str) -> list[str]:
    return SMILES_REGEX.findall(smiles) if tokenizer == "regex" else list(smiles)


def regex_vocab(smiles: list[str]) -> list[str]:
    """Atom-level vocabulary of the given (training) SMILES, most frequent first; others map to <unk>."""
    from collections import Counter

    counts = Counter(tok for s in smiles for tok in SMILES_REGEX.findall(s))
    return ["<pad>", "<unk>", *sorted(counts, key=lambda t: (-counts[t], t))]


def tokenize(strings: list[str], vocab: list[str], max_len: int, tokenizer: str = "char") -> tuple[np.ndarray, np.ndarray]:
    """Token ids, cut to ``max_len`` (the start is kept, as DeepDTA does) and PAD-padded.

    Returns ``(ids (n, max_len) int16, lengths (n,) int64)``; unknown tokens map to ``UNK``.
    """
    index = {tok: i for i, tok in enumerate(vocab)}
    ids = np.full((len(strings), max_len), PAD, dtype=np.int16)
    lengths = np.zeros(len(strings), dtype=np.int64)
    for row, s in enumerate(strings):
        toks = (smiles_tokens(s, tokenizer) if tokenizer == "regex" else list(s))[:max_len]
        if not toks:
            raise DataError(f"an empty string cannot be encoded (item {row})")
        ids[row, : len(toks)] = [index.get(t, UNK) for t in toks]
        lengths[row] = len(toks)
    return ids, lengths


# ---- batching -------------------------------------------------------------------------
class PairLoader(IndexBatcher):
    """Batches of a :class:`PairSet` as dicts of tensors. Each distinct drug and protein of a batch
    appears once, so each sequence is encoded once per batch:

    ``drug`` (Ud, Ld) long and ``protein`` (Up, Lp) long, cut to their longest sequence (PAD = 0 after
    the end); ``drug_index`` (B,) and ``protein_index`` (B,) map each pair to its rows; ``y`` (B,) float.

    With ``shuffle`` every pass draws a new order from a generator seeded once with ``seed``; with
    ``batch_proteins`` k > 0 the pairs of each protein are cut into chunks of ``batch_size // k`` and the
    shuffled chunks fill the batches, so a batch holds about k proteins. Without shuffling, pairs come in
    protein order (what evaluation uses: predictions and targets stay aligned).
    """

    def __init__(self, pairs: PairSet, batch_size: int, *, shuffle: bool, seed: int = 0, batch_proteins: int = 0) -> None:
        import torch

        super().__init__(len(pairs), batch_size, shuffle=shuffle, seed=seed)
        self.pairs, self.batch_proteins = pairs, batch_proteins
        t = pairs.tables
        self._drug = torch.from_numpy(t.drug_tokens)
        self._drug_len = torch.from_numpy(t.drug_lengths)
        self._prot = torch.from_numpy(t.protein_tokens)
        self._prot_len = torch.from_numpy(t.protein_lengths)
        self._di = torch.from_numpy(pairs.drug_idx)
        self._pi = torch.from_numpy(pairs.protein_idx)
        self._y = torch.from_numpy(pairs.y)

    def order(self):
        import torch

        n = len(self.pairs)
        if not self.shuffle:
            return torch.argsort(self._pi * (int(self._di.max()) + 1 if n else 1) + self._di, stable=True)
        if self.batch_proteins <= 0:
            return super().order()
        chunk = max(1, self.batch_size // self.batch_proteins)
        chunks = []
        for p in torch.unique(self._pi):
            rows = torch.nonzero(self._pi == p).squeeze(1)
            rows = rows[torch.randperm(len(rows), generator=self.generator)]
            chunks += list(rows.split(chunk))
        pick = torch.randperm(len(chunks), generator=self.generator)
        return torch.cat([chunks[i] for i in pick.tolist()]) if chunks else torch.arange(0)

    def __iter__(self):
        import torch

        for ix in self.batches():
            ud, d_inv = torch.unique(self._di[ix], return_inverse=True)
            up, p_inv = torch.unique(self._pi[ix], return_inverse=True)
            ld, lp = int(self._drug_len[ud].max()), int(self._prot_len[up].max())
            yield {
                "drug": self._drug[ud, :ld].long(),
                "protein": self._prot[up, :lp].long(),
                "drug_index": d_inv,
                "protein_index": p_inv,
                "y": self._y[ix],
            }


def _read_json(path: Path, kind: type, what: str):
    """A JSON file holding ``kind`` (dict or list); ``what`` says what it should hold, for messages."""
    if not path.is_file():
        raise DataError(f"{path}: must be an existing file ({what}), but got none")
    text = _read_text(path)
    noun = "object" if kind is dict else "list"
    if not text.strip():
        raise DataError(f"{path}: must hold a JSON {noun} ({what}), but got an empty file")
    dupes: list[str] = []

    def unique_keys(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                dupes.append(k)
            out[k] = v
        return out

    try:
        obj = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        ends_early = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        cut = " (the file ends early: truncated?)" if ends_early else ""
        raise DataError(f"{path}: line {e.lineno} column {e.colno}: must be valid JSON ({what}), but got {e.msg}{cut}") from None
    except RecursionError:
        raise DataError(f"{path}: must be JSON of ordinary depth ({what}), but got nesting too deep to read") from None
    if not isinstance(obj, kind):
        raise DataError(f"{path}: must hold a JSON {noun} ({what}), but got a {type(obj).__name__}")
    if dupes:
        others = f" (and {len(dupes) - 1} more repeated ids)" if len(dupes) > 1 else ""
        raise DataError(f"{path}: must name each id once (a repeated id shifts the rows of Y), but got "
                        f"{show(dupes[0])} more than once{others}")
    return obj


def _fold_indices(fold: Any, n: int, path: Path, label: str = "fold") -> np.ndarray:
    """A fold as read from JSON: a non-empty list of integer pair indices in ``[0, n)``."""
    if not isinstance(fold, list):
        raise DataError(f"{path}: {label}: must be a list of pair indices, but got {show(fold, 60)}")
    if not fold:
        raise DataError(f"{path}: {label}: must hold at least one pair index, but got an empty list")
    not_int = [(i, v) for i, v in enumerate(fold) if type(v) is not int]
    if not_int:
        items = ", ".join(f"entry {i} = {show(v, 40)}" for i, v in not_int[:MAX_LISTED])
        raise DataError(f"{path}: {label}: pair indices must be integers, but got {items}" + more_suffix(len(not_int)))
    outside = [(i, v) for i, v in enumerate(fold) if not 0 <= v < n]
    if outside:
        items = ", ".join(f"entry {i} = {v}" for i, v in outside[:MAX_LISTED])
        raise DataError(f"{path}: {label}: pair indices must lie in [0, {n}) (the measured pairs of Y), but got {items}"
                        + more_suffix(len(outside)))
    return np.asarray(fold, dtype=np.int64)
