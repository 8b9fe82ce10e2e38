"""Drug–target affinity data: dataset sections of a study, readers, tokenisation, splits, batching.

Three formats, chosen by ``task.dataset.format`` (paths resolve against the study file's folder):

``deepdta``
    The folder layout of DeepDTA (Öztürk et al. 2018; ``data/davis``, ``data/kiba``): ``ligands_can.txt``
    (JSON object id -> SMILES, rows of ``Y``), ``proteins.txt`` (JSON object name -> sequence, columns of
    ``Y``), the affinity matrix ``Y`` (a pickle, read with :func:`hpo.safe_pickle.load_data_pickle`, or
    whitespace-separated text; NaN marks unmeasured pairs) and ``folds/``. Fold indices index the
    flattened measured pairs ``rows, cols = np.where(~np.isnan(Y))``. **Splits**: the official test
    fold is the test split; DeepDTA picked hyperparameters by cross-validation over the five training
    folds, so the validation split here is one training fold (``val_fold``, default 0) and the other
    four train. Davis holds Kd in nM: set ``pkd: true`` for DeepDTA's ``pKd = -log10(Kd / 1e9)``.
``csv``
    One row per pair with columns ``smiles``, ``sequence`` and the target (the study's ``task.target``,
    default ``affinity``), e.g. the seed's ``data/KIBA.csv``. Split at random (the seed's
    ``preprocess.py``: test 0.2, validation 0.1 of all rows) or cold by drug / protein.
``synthetic``
    Random SMILES-like and protein-like strings whose affinity is a smooth function of their character
    composition plus noise: learnable, for smoke studies and tests.

Preprocessing (reading, pKd, tokenising, splitting, the target scaler) runs once per study and is cached
by the content digest of the input files and the settings (:class:`DTADataConfig`). The target scaler
is fitted on the training split only.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from hpo.errors import DataError, Problem
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

    format: str

    def files(self) -> list[Path]:
        """The input files whose content keys the cache."""
        return []

    def read(self, target: str | None) -> "RawPairs":
        """Strings, pairs, targets (raw units) and split indices."""
        raise NotImplementedError

    def check(self, target: str | None) -> list[Problem]:
        """Cheap checks that the files exist and have what is needed; user errors are returned."""
        return []


class _RandomSplit(DTADataset):
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # of all pairs (cold splits: of all drugs / proteins)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # of all pairs, carved before training
    split: Literal["random", "cold_drug", "cold_protein"] = "random"  # cold: test/val drugs (proteins) unseen in training
    split_seed: int = 0  # seed of the split (the training seed is separate)

    @model_validator(mode="after")
    def _fractions(self):
        if self.test_fraction + self.val_fraction >= 1.0:
            raise ValueError(f"test_fraction + val_fraction must be < 1, but got {self.test_fraction + self.val_fraction:g}")
        return self


class CsvDTADataset(_RandomSplit):
    """A CSV file with one row per drug–protein pair."""

    format: Literal["csv"] = "csv"
    path: DataPath  # the CSV file
    smiles_column: str = "smiles"
    sequence_column: str = "sequence"
    pkd: bool = False  # the target holds Kd in nM: convert to pKd = -log10(Kd / 1e9)

    def files(self) -> list[Path]:
        return [self.path]

    def read(self, target: str | None) -> "RawPairs":
        return read_csv(self, target or TARGET_NAME)

    def check(self, target: str | None) -> list[Problem]:
        import pandas as pd

        if not self.path.is_file():
            return [Problem("task.dataset.path", "must be an existing CSV file", str(self.path))]
        try:
            header = list(pd.read_csv(self.path, nrows=0).columns)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            return [Problem("task.dataset.path", f"must be a readable CSV file ({e})", str(self.path))]
        problems = []
        for key, col in (("task.dataset.smiles_column", self.smiles_column),
                         ("task.dataset.sequence_column", self.sequence_column), ("task.target", target or TARGET_NAME)):
            if col not in header:
                problems.append(Problem(key, f"must name a column of {self.path.name} ({', '.join(map(str, header))})", col))
        return problems


class DeepDTADataset(DTADataset):
    """A DeepDTA data folder (see the module docstring)."""

    format: Literal["deepdta"] = "deepdta"
    path: DataPath  # the folder, e.g. DeepDTA's data/davis
    ligands_file: str = "ligands_can.txt"  # JSON object id -> SMILES (DeepDTA also ships ligands_iso.txt)
    proteins_file: str = "proteins.txt"  # JSON object name -> sequence
    affinity_file: str = "Y"  # drugs x proteins matrix, NaN = not measured
    affinity_format: Literal["auto", "pickle", "text"] = "auto"  # auto: a pickle if it starts like one
    train_folds_file: str = "folds/train_fold_setting1.txt"  # JSON list of training folds (lists of pair indices)
    test_fold_file: str = "folds/test_fold_setting1.txt"  # JSON list of test pair indices
    val_fold: int = Field(0, ge=0)  # which training fold is the validation split
    pkd: bool = False  # Y holds Kd in nM (Davis): convert to pKd = -log10(Kd / 1e9)

    def files(self) -> list[Path]:
        names = (self.ligands_file, self.proteins_file, self.affinity_file, self.train_folds_file, self.test_fold_file)
        return [self.path / n for n in names]

    def read(self, target: str | None) -> "RawPairs":
        return read_deepdta(self)

    def check(self, target: str | None) -> list[Problem]:
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

    format: Literal["synthetic"] = "synthetic"
    n_drugs: int = Field(40, ge=2)
    n_proteins: int = Field(30, ge=2)
    pair_fraction: float = Field(1.0, gt=0.0, le=1.0)  # share of all drug x protein pairs that are measured
    smiles_length: tuple[int, int] = (10, 40)  # min, max characters
    protein_length: tuple[int, int] = (30, 120)  # min, max residues
    noise: float = Field(0.1, ge=0.0)  # std of the target noise (the clean target has std ~1)
    seed: int = 0  # generation seed

    def read(self, target: str | None) -> "RawPairs":
        return generate_synthetic(self)

    def check(self, target: str | None) -> list[Problem]:
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
    raw = spec.read(target)
    if getattr(spec, "pkd", False):
        raw.y = kd_to_pkd(raw.y, where=str(getattr(spec, "path", "")))

    train_drugs = np.unique(raw.drug_idx[raw.split["train"]])
    if data_cfg.smiles_tokenizer == "regex":
        smiles_vocab = regex_vocab([raw.smiles[i] for i in train_drugs])
    else:
        smiles_vocab = char_vocab(SMILES_CHARS)
    protein_vocab = char_vocab(PROTEIN_CHARS)
    d_tok, d_len = tokenize(raw.smiles, smiles_vocab, data_cfg.max_smiles_len, data_cfg.smiles_tokenizer)
    p_tok, p_len = tokenize(raw.sequences, protein_vocab, data_cfg.max_protein_len, "char")
    tables = TokenTables(d_tok, d_len, p_tok, p_len, smiles_vocab, protein_vocab)

    y_train = raw.y[raw.split["train"]]
    if data_cfg.scale_target:
        mean, std = float(y_train.mean()), float(y_train.std())
        std = std if std > 0 else 1.0
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
    }
    logger.info("drug_target data: %d drugs, %d proteins, %d pairs; split %s; target mean %.4g std %.4g",
                info["n_drugs"], info["n_proteins"], info["n_pairs"], info["split_sizes"], mean, std)
    return DTAData(tables, parts, info)


def kd_to_pkd(kd: np.ndarray, where: str = "") -> np.ndarray:
    """``pKd = -log10(Kd / 1e9)`` for Kd in nM (DeepDTA's Davis transform)."""
    kd = np.asarray(kd, dtype=np.float64)
    bad = ~(kd > 0)
    if bad.any():
        raise DataError(f"{where}: pkd: true needs Kd > 0 (nM), but got {kd[bad][0]!r} ({int(bad.sum())} such values)")
    return -np.log10(kd / 1e9)


# ---- readers -------------------------------------------------------------------------------------
def read_deepdta(spec: DeepDTADataset) -> RawPairs:
    folder = spec.path
    ligands = _read_json(folder / spec.ligands_file, dict)
    proteins = _read_json(folder / spec.proteins_file, dict)
    Y = load_affinity_matrix(folder / spec.affinity_file, spec.affinity_format)
    if Y.shape != (len(ligands), len(proteins)):
        raise DataError(f"{folder / spec.affinity_file}: must have shape (ligands, proteins) = "
                        f"({len(ligands)}, {len(proteins)}), but got {Y.shape}")
    rows, cols = np.where(~np.isnan(Y))  # DeepDTA's pair order; fold indices index into it
    n = len(rows)
    train_folds = _read_json(folder / spec.train_folds_file, list)
    test = _fold_indices(_read_json(folder / spec.test_fold_file, list), n, folder / spec.test_fold_file)
    if not train_folds or not all(isinstance(f, list) for f in train_folds):
        raise DataError(f"{folder / spec.train_folds_file}: must be a JSON list of folds (lists of pair indices)")
    if spec.val_fold >= len(train_folds):
        raise DataError(f"task.dataset.val_fold: must be < the number of training folds ({len(train_folds)}), "
                        f"but got {spec.val_fold}")
    folds = [_fold_indices(f, n, folder / spec.train_folds_file) for f in train_folds]
    val = folds[spec.val_fold]
    train = np.concatenate([f for i, f in enumerate(folds) if i != spec.val_fold]) if len(folds) > 1 else np.empty(0, np.int64)
    if len(train) == 0:
        raise DataError(f"{folder / spec.train_folds_file}: needs at least two training folds (one is the validation split)")
    for a, b, what in ((train, test, "training and test"), (val, test, "validation and test"), (train, val, "training and validation")):
        if np.intersect1d(a, b).size:
            raise DataError(f"{folder}: the {what} folds share {np.intersect1d(a, b).size} pairs")
    return RawPairs(
        smiles=[str(s) for s in ligands.values()],
        sequences=[str(s) for s in proteins.values()],
        drug_idx=rows,
        protein_idx=cols,
        y=Y[rows, cols].astype(np.float64),
        split={"train": train, "val": val, "test": test},
    )


def load_affinity_matrix(path: Path, fmt: str = "auto") -> np.ndarray:
    """DeepDTA's ``Y``: a (restricted) pickle or a whitespace-separated text matrix, as float64."""
    from hpo.safe_pickle import load_data_pickle

    if not path.is_file():
        raise DataError(f"{path}: affinity matrix not found")
    if fmt == "auto":
        with open(path, "rb") as f:
            fmt = "pickle" if f.read(1) == b"\x80" else "text"
    if fmt == "pickle":
        obj = load_data_pickle(path)
    else:
        try:
            obj = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataError(f"{path}: not a whitespace-separated number matrix ({e}); "
                            "set affinity_format: pickle if it is a pickle") from None
    try:
        Y = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: must hold a numeric matrix, but got {type(obj).__name__}") from None
    if Y.ndim != 2:
        raise DataError(f"{path}: must hold a 2-D matrix (drugs x proteins), but got shape {Y.shape}")
    return Y


def read_csv(spec: CsvDTADataset, target: str) -> RawPairs:
    import pandas as pd

    problems = spec.check(target)
    if problems:
        raise DataError("; ".join(p.render(None) for p in problems))
    cols = [spec.smiles_column, spec.sequence_column, target]
    df = pd.read_csv(spec.path, usecols=cols, dtype={spec.smiles_column: str, spec.sequence_column: str})
    df[target] = pd.to_numeric(df[target], errors="coerce")
    for c in (spec.smiles_column, spec.sequence_column):
        df[c] = df[c].str.strip()
    keep = df[target].notna() & df[spec.smiles_column].fillna("").ne("") & df[spec.sequence_column].fillna("").ne("")
    if not keep.all():
        logger.warning("%s: dropped %d of %d rows with an empty SMILES, sequence or %s", spec.path, int((~keep).sum()), len(df), target)
        df = df[keep].reset_index(drop=True)
    if len(df) < 3:
        raise DataError(f"{spec.path}: needs at least 3 usable rows, but got {len(df)}")
    drug_idx, smiles = pd.factorize(df[spec.smiles_column])
    protein_idx, sequences = pd.factorize(df[spec.sequence_column])
    y = df[target].to_numpy(np.float64)
    split = split_pairs(len(df), spec, drug_idx, protein_idx)
    return RawPairs(list(smiles), list(sequences), drug_idx.astype(np.int64), protein_idx.astype(np.int64), y, split)


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


def split_pairs(n: int, spec: _RandomSplit, drug_idx: np.ndarray, protein_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Random split of ``n`` pairs (test, val as fractions of all pairs), or cold by drug / protein
    (fractions of the distinct drugs / proteins; every pair of a held-out drug goes with it)."""
    rng = np.random.default_rng(spec.split_seed)
    if spec.split == "random":
        groups, n_groups = np.arange(n), n
    else:
        groups = np.asarray(drug_idx if spec.split == "cold_drug" else protein_idx)
        n_groups = int(groups.max()) + 1
    perm = rng.permutation(n_groups)
    n_test = int(round(spec.test_fraction * n_groups))
    n_val = max(1, int(round(spec.val_fraction * n_groups)))
    if n_groups - n_test - n_val < 1:
        what = "pairs" if spec.split == "random" else spec.split.split("_")[1] + "s"
        raise DataError(f"task.dataset: {n_groups} {what} are too few for test_fraction {spec.test_fraction:g} "
                        f"and val_fraction {spec.val_fraction:g}")
    assign = np.empty(n_groups, dtype=np.int8)  # 0 train, 1 val, 2 test
    assign[perm[:n_test]] = 2
    assign[perm[n_test:n_test + n_val]] = 1
    assign[perm[n_test + n_val:]] = 0
    if spec.split == "random":
        return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
                "test": np.sort(perm[:n_test])}
    of_pair = assign[groups]
    return {"train": np.flatnonzero(of_pair == 0), "val": np.flatnonzero(of_pair == 1), "test": np.flatnonzero(of_pair == 2)}


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
class PairLoader:
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

        self.pairs, self.batch_size, self.shuffle, self.batch_proteins = pairs, batch_size, shuffle, batch_proteins
        t = pairs.tables
        self._drug = torch.from_numpy(t.drug_tokens)
        self._drug_len = torch.from_numpy(t.drug_lengths)
        self._prot = torch.from_numpy(t.protein_tokens)
        self._prot_len = torch.from_numpy(t.protein_lengths)
        self._di = torch.from_numpy(pairs.drug_idx)
        self._pi = torch.from_numpy(pairs.protein_idx)
        self._y = torch.from_numpy(pairs.y)
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def _order(self):
        import torch

        n = len(self.pairs)
        if not self.shuffle:
            return torch.argsort(self._pi * (int(self._di.max()) + 1 if n else 1) + self._di, stable=True)
        if self.batch_proteins <= 0:
            return torch.randperm(n, generator=self._gen)
        chunk = max(1, self.batch_size // self.batch_proteins)
        chunks = []
        for p in torch.unique(self._pi):
            rows = torch.nonzero(self._pi == p).squeeze(1)
            rows = rows[torch.randperm(len(rows), generator=self._gen)]
            chunks += list(rows.split(chunk))
        pick = torch.randperm(len(chunks), generator=self._gen)
        return torch.cat([chunks[i] for i in pick.tolist()]) if chunks else torch.arange(0)

    def __iter__(self):
        import torch

        order = self._order()
        for start in range(0, len(order), self.batch_size):
            ix = order[start : start + self.batch_size]
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


def data_key(spec: DTADataset, data_cfg: DTADataConfig, target: str | None, digest: str | None) -> dict:
    """Cache key: the content digest of the input files plus every setting that changes the result
    (``batch_proteins`` and ``train_subsample`` only pick and order training pairs: not part of it)."""
    data = {k: v for k, v in asdict(data_cfg).items() if k not in ("batch_proteins", "train_subsample")}
    return {"spec": spec.model_dump(mode="json", exclude={"path"}), "data": data,
            "target": target, "files": digest}


def _read_json(path: Path, kind: type):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, kind):
        raise DataError(f"{path}: must hold a JSON {'object' if kind is dict else 'list'}, but got {type(obj).__name__}")
    return obj


def _fold_indices(fold: Any, n: int, path: Path) -> np.ndarray:
    try:
        ix = np.asarray(fold, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: folds must hold integer pair indices") from None
    if ix.size and (ix.min() < 0 or ix.max() >= n):
        raise DataError(f"{path}: pair indices must lie in [0, {n}) (the measured pairs of Y), but got {ix.min()}..{ix.max()}")
    return ix
