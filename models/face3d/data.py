"""Face3D data: dataset sections, the ``.npz`` reader, the synthetic generator, splits and batching.

``npz``
    One file with ``inputs`` (N, T, F): T feature tokens per sample (e.g. 3-D keypoints, F = 3, or
    per-frame feature vectors), ``targets`` (N, D): the target embedding, and optionally
    ``identity`` (N, E): an identity embedding (e.g. InsightFace) added as one more token, and ``ids``
    (N,): who each sample shows. With ``ids`` and ``group_by_ids: true`` the split keeps every sample of
    one id in the same part, so validation measures generalisation to unseen faces. ``split_file`` (both
    formats) fixes the split instead: sample indices (0-based) per part; or ``split_field`` names an array
    of the ``.npz`` (e.g. ``split``) holding each sample's part: strings ``train`` / ``val`` / ``test``
    (aliases as in split files) or integer codes 0 (train), 1 (val), 2 (test).
``synthetic``
    Faces as a template plus an identity-specific shape, seen under random head poses, with an identity
    embedding; the target embedding depends on identity and shape but not on pose (learnable).

**What must hold** for an ``.npz`` (checked when it is read, so ``hpo validate`` / ``hpo run`` refuse a
malformed file before any trial, each problem as ``file: where: what must hold, but got X``): it is a
complete zip archive (a cut or corrupt one, a bare ``.npy`` or a pickle is refused); ``inputs`` and
``targets`` exist; no array is an object array (refused from its header, never unpickled); inputs,
targets and identity hold real numbers, all finite (NaN / inf name the sample and its id); shapes agree
(N samples everywhere, T, F, D >= 1); no target is the zero vector (its cosine is undefined); a
``split_field`` array is 1-D, one valid part per sample (strings or codes 0 / 1 / 2, named per sample when
not); the split leaves no part empty.

Inputs (and the identity embedding) are standardised with training-split statistics when
``standardize_inputs`` is on; targets are left as they are. Processing is cached by file content. The
split, the scaler and the batch order come from :mod:`hpo.data`.
"""

from __future__ import annotations

import logging
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from hpo.data.loader import IndexBatcher
from hpo.data.dataset import SplitField, SplitFile
from hpo.data.scaling import Standardizer
from hpo.data.split import NAMES, SPLIT_NAMES, grouped_split, labels_split, random_split
from hpo.data.validate import MAX_LISTED, more_suffix, require_finite
from hpo.data.validate import where as _where
from hpo.errors import DataError, Problem
from hpo.tasks import DataPath, DatasetSpec

from models.face3d.config import Face3DDataConfig

logger = logging.getLogger(__name__)


class Face3DDataset(DatasetSpec, SplitFile):
    """``task.dataset`` of the face3d task: a tagged union on ``format`` (npz | synthetic).

    Validating this class returns an instance of the subclass that ``format`` names (the dispatch of
    :class:`hpo.tasks.DatasetSpec`).
    """

    format: str = Field(description="the dataset format: npz or synthetic")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0,
                                description="fraction of the samples held out for validation (of the ids when grouping)")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                 description="fraction of the samples held out for testing (of the ids when grouping)")
    split_seed: int = Field(0, description="seed of the split (the training seed is separate)")

    split_fractions: ClassVar[tuple[str, ...]] = ("val_fraction", "test_fraction")
    split_file_ids: ClassVar[str] = "sample indices (0-based; the npz ids array names faces, not samples)"
    random_split_settings: ClassVar[tuple[str, ...]] = ("split_seed", "group_by_ids")

    def source_files(self) -> list[Path]:
        return [self.split_file] if self.split_file is not None and self.split_file.is_file() else []


class NpzFace3DDataset(Face3DDataset, SplitField):
    format: Literal["npz"] = Field("npz", description="selects this format: arrays in a .npz file")
    path: DataPath = Field(description="the .npz file (arrays inputs, targets and optionally identity, ids)")
    group_by_ids: bool = Field(
        True, description="with an ids array: split by id (all samples of a face in one part), not by sample")
    split_field: Optional[str] = Field(
        None, description="an explicit split instead of the random one: the array of the .npz (e.g. split) holding each "
                          "sample's part, strings train / val / test or integer codes 0 (train), 1 (val), 2 (test)")

    def source_files(self) -> list[Path]:
        return [self.path, *super().source_files()]

    def read(self, target: str | None = None) -> "RawFaces":
        return read_npz(self.path, split_array=self.split_field)

    def check(self, target: str | None = None) -> list[Problem]:
        if not self.path.is_file():
            return [Problem("task.dataset.path", "must be an existing .npz file", str(self.path))]
        problem = _npz_container_problem(self.path)
        if problem:
            return [Problem("task.dataset.path", f"must be a complete .npz archive of arrays (numpy.savez); it is "
                            f"{problem.split(', but got ', 1)[1]}", str(self.path))]
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        except _NPZ_READ_ERRORS as e:
            return [Problem("task.dataset.path", f"must be a readable .npz file ({type(e).__name__}: {e})", str(self.path))]
        missing = [k for k in ("inputs", "targets") if k not in names]
        if missing:
            return [Problem("task.dataset.path", f"must hold the arrays inputs and targets; missing {', '.join(missing)}",
                            str(self.path))]
        if self.split_field is not None and self.split_field not in names:
            return [Problem("task.dataset.split_field", f"must name an array of {self.path.name} (arrays: "
                            f"{', '.join(sorted(names))})", self.split_field)]
        return []


class SyntheticFace3DDataset(Face3DDataset):
    format: Literal["synthetic"] = Field("synthetic", description="selects this format: generated faces")
    n_samples: int = Field(512, ge=8, description="number of samples generated")
    n_identities: int = Field(256, ge=2, description="samples are spread over this many faces (ids)")
    n_keypoints: int = Field(16, ge=1, description="tokens per sample (3-D keypoints)")
    identity_dim: int = Field(32, ge=1, description="identity embedding width")
    target_dim: int = Field(32, ge=2, description="width of the target embedding to predict")
    max_angle: float = Field(0.5, ge=0.0, description="head pose: yaw / pitch / roll drawn from +-max_angle radians")
    noise: float = Field(0.02, ge=0.0, description="std of the keypoint noise (template scale ~1)")
    group_by_ids: bool = Field(True, description="split by face id (all samples of a face in one part), not by sample")
    seed: int = Field(0, description="generation seed")

    def read(self, target: str | None = None) -> "RawFaces":
        return generate_synthetic(self)




@dataclass
class RawFaces:
    inputs: np.ndarray  # (N, T, F)
    targets: np.ndarray  # (N, D)
    identity: np.ndarray | None = None  # (N, E)
    ids: np.ndarray | None = None  # (N,)
    split: list[str] | None = None  # (N,) each sample's part (train / val / test), from a split_field array


@dataclass
class FaceSet:
    """One split: float32 arrays sharing the first dimension."""

    inputs: np.ndarray  # (n, T, F)
    targets: np.ndarray  # (n, D)
    identity: np.ndarray | None = None  # (n, E)

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class FaceData:
    parts: dict[str, FaceSet]
    info: dict[str, Any] = field(default_factory=dict)


def build(spec: Face3DDataset, data_cfg: Face3DDataConfig) -> FaceData:
    raw = spec.read()
    n = len(raw.targets)
    groups = raw.ids if raw.ids is not None and spec.group_by_ids else None
    label = str(getattr(spec, "path", "") or "task.dataset")
    if spec.split_file is not None:  # explicit: sample indices per part
        split = spec.read_split(n, None, label, what="samples")
    elif getattr(spec, "split_field", None) is not None:  # explicit: a part per sample, in the npz
        split = labels_split(raw.split, label)
    elif groups is None:
        split = random_split(n, spec.val_fraction, spec.test_fraction, spec.split_seed, what="samples", label=label)
    else:
        split = grouped_split(groups, spec.val_fraction, spec.test_fraction, spec.split_seed, what="ids", label=label)
    inputs, identity = raw.inputs.astype(np.float32), None if raw.identity is None else raw.identity.astype(np.float32)
    stats: dict[str, Any] = {}
    if data_cfg.standardize_inputs:
        tr = split["train"]
        scaler = Standardizer.fit(inputs[tr], axis=(0, 1))
        inputs = scaler.transform(inputs)
        stats["input_mean"], stats["input_std"] = scaler.mean.tolist(), scaler.std.tolist()
        if identity is not None:
            scaler = Standardizer.fit(identity[tr], axis=0)
            identity = scaler.transform(identity)
            stats["identity_mean"], stats["identity_std"] = scaler.mean.tolist(), scaler.std.tolist()
    targets = raw.targets.astype(np.float32)
    parts = {k: FaceSet(inputs[ix], targets[ix], None if identity is None else identity[ix]) for k, ix in split.items()}
    info = {
        "n_samples": n,
        "n_tokens": inputs.shape[1],
        "token_dim": inputs.shape[2],
        "identity_dim": 0 if identity is None else identity.shape[1],
        "target_dim": targets.shape[1],
        "split_sizes": {k: len(v) for k, v in split.items()},
        "grouped_by_ids": groups is not None,
        "scaler": stats,  # fitted on the training split only
    }
    logger.info("face3d data: %d samples of %d x %d tokens -> %d-d targets; split %s", n, info["n_tokens"],
                info["token_dim"], info["target_dim"], info["split_sizes"])
    return FaceData(parts, info)


_NPZ_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError, SyntaxError)
_REAL = "iuf"  # dtype kinds of real numbers (bool, complex, strings, objects and records are refused)


def _npz_container_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete .npz archive (None when it is one)."""
    if not path.is_file():
        return f"{path}: must be an existing .npz file, but got none"
    size = path.stat().st_size
    if size == 0:
        return f"{path}: must be a .npz archive of arrays (numpy.savez), but got an empty file"
    with open(path, "rb") as f:
        head = f.read(6)
    if zipfile.is_zipfile(path):
        return None
    if head.startswith(b"PK"):
        got = f"a truncated or corrupt zip archive ({size} bytes, its central directory is missing)"
    elif head == b"\x93NUMPY":
        got = "a single .npy array (numpy.save), not an archive of named arrays"
    elif head.startswith(b"\x80"):
        got = "a pickle (refused: loading it could run code)"
    else:
        got = f"a file starting with {head!r}"
    return f"{path}: must be a .npz archive of arrays (numpy.savez), but got {got}"


def _member_problem(zf: zipfile.ZipFile, path: Path, key: str) -> str | None:
    """Read the header of array ``key`` without its data: object arrays (which only unpickling could
    load) and headers that promise more data than the member holds (a truncated or crafted file) are
    refused before numpy allocates anything."""
    info = zf.getinfo(key + ".npy")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        data_bytes = info.file_size - f.tell()
    if dtype.hasobject:
        return f"{path}: {key}: must be an array of numbers, but got an object array (refused: loading it would unpickle)"
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > data_bytes:
        return (f"{path}: {key}: must hold the {need} bytes its header declares (shape {tuple(shape)}, {dtype}), "
                f"but got {data_bytes} (the file is truncated or corrupt)")
    return None


def read_npz(path: Path, split_array: str | None = None) -> RawFaces:
    """The arrays of a face3d .npz (see the module docstring), refused with every problem found when
    malformed: not an archive, truncated, object arrays, arrays missing, not real numbers, shapes
    that disagree, non-finite values (naming the samples), zero-norm targets; with ``split_array``, that
    array is each sample's part (:func:`split_labels`)."""
    problem = _npz_container_problem(path)
    if problem:
        raise DataError(problem)
    keys = ("inputs", "targets", "identity", "ids", *([split_array] if split_array is not None else []))
    arrays: dict[str, np.ndarray] = {}
    problems: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            missing = [k for k in ("inputs", "targets") if k not in names]
            if missing:
                raise DataError(f"{path}: must hold the arrays inputs and targets, but got no {' and no '.join(missing)} "
                                f"(arrays: {', '.join(sorted(names)) or 'none'})")
            if split_array is not None and split_array not in names:
                raise DataError(f"{path}: task.dataset.split_field: must name an array of the .npz, but got {split_array!r} "
                                f"(arrays: {', '.join(sorted(names))})")
            if split_array is None and "split" in names:
                logger.info("%s: has an array 'split'; it is not used (task.dataset.split_field: split uses it)", path)
            for key in keys:
                if key in names:
                    try:
                        why = _member_problem(zf, path, key)
                    except _NPZ_READ_ERRORS as e:
                        why = (f"{path}: {key}: must be a complete, readable array (the file is truncated or corrupt), but got "
                               f"{type(e).__name__}: {str(e)[:200]}")
                    if why:
                        problems.append(why)
        if problems:
            raise DataError("\n".join(problems))
        with np.load(path, allow_pickle=False) as z:
            for key in keys:
                if key in names:
                    try:
                        arrays[key] = np.asarray(z[key])
                    except _NPZ_READ_ERRORS as e:
                        problems.append(f"{path}: {key}: must be a complete, readable array (the file is truncated or corrupt), but got "
                                        f"{type(e).__name__}: {str(e)[:200]}")
    except DataError:
        raise
    except _NPZ_READ_ERRORS as e:
        raise DataError(f"{path}: must be a readable .npz archive, but got {type(e).__name__}: {str(e)[:200]}") from None
    if problems:
        raise DataError("\n".join(problems))
    raw = check_arrays(path, arrays["inputs"], arrays["targets"], arrays.get("identity"), arrays.get("ids"))
    if split_array is not None:
        raw.split = split_labels(path, split_array, arrays[split_array], len(raw.targets), raw.ids)
    return raw


def split_labels(path: Path | str, name: str, arr: np.ndarray, n: int, ids: np.ndarray | None = None) -> list[str]:
    """Each sample's part (train / val / test) from the ``split_field`` array ``name``: 1-D, ``n`` entries,
    strings (train, val, test and the aliases of split files, any case) or integer codes 0 (train), 1 (val),
    2 (test). Anything else is a :class:`DataError` naming the samples."""
    at = f"{path}: task.dataset.split_field: array {name!r}"
    codes = "strings train / val / test or integer codes 0 (train), 1 (val), 2 (test)"
    if arr.dtype.kind not in "iuUS":
        raise DataError(f"{at}: must hold {codes}, but got dtype {arr.dtype}")
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"{at}: must have shape ({n},) (one part per sample), but got {arr.shape}")
    if arr.dtype.kind in "iu":
        out = [NAMES[int(v)] if 0 <= int(v) < len(NAMES) else None for v in arr.tolist()]
    else:
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.tolist()]
        out = [SPLIT_NAMES.get(v.strip().lower()) for v in values]
    bad = [i for i, v in enumerate(out) if v is None]
    if bad:
        label = None if ids is None else [str(v) for v in ids.tolist()]
        items = ", ".join(f"{_where(i, 'sample', None if label is None else label[i])} = {arr[i].item()!r}" for i in bad[:MAX_LISTED])
        raise DataError(f"{at}: must hold {codes}, but got {items}" + more_suffix(len(bad)))
    return out  # type: ignore[return-value]


def check_arrays(path: Path | str, inputs: np.ndarray, targets: np.ndarray, identity: np.ndarray | None = None,
                 ids: np.ndarray | None = None) -> RawFaces:
    """What must hold for the arrays of a face3d dataset; every problem as one line of a DataError."""
    problems = []
    for name, arr in (("inputs", inputs), ("targets", targets), ("identity", identity)):
        if arr is not None and arr.dtype.kind not in _REAL:
            problems.append(f"{path}: {name}: must hold real numbers (int or float), but got dtype {arr.dtype}")
    if ids is not None and (ids.dtype.kind not in "iuUSf"):
        problems.append(f"{path}: ids: must hold integers or strings (one id per sample), but got dtype {ids.dtype}")
    if problems:
        raise DataError("\n".join(problems))
    if inputs.ndim == 2:  # one token per sample
        inputs = inputs[:, None, :]
    if inputs.ndim != 3:
        problems.append(f"{path}: inputs: must have shape (N, T, F) or (N, F), but got {inputs.shape}")
    if targets.ndim != 2:
        problems.append(f"{path}: targets: must have shape (N, D), but got {targets.shape}")
    if problems:
        raise DataError("\n".join(problems))
    n = len(inputs)
    if n == 0:
        raise DataError(f"{path}: inputs: must hold at least one sample, but got shape {inputs.shape}")
    if inputs.shape[1] == 0 or inputs.shape[2] == 0:
        problems.append(f"{path}: inputs: must have at least one token (T) of at least one feature (F), but got shape {inputs.shape}")
    if targets.shape[1] == 0:
        problems.append(f"{path}: targets: must have at least one dimension (D), but got shape {targets.shape}")
    for name, arr, nd in (("targets", targets, 2), ("identity", identity, 2), ("ids", ids, 1)):
        if arr is not None and (arr.ndim != nd or len(arr) != n):
            problems.append(f"{path}: {name}: must have {n} rows (one per sample) and {nd} dimensions, but got shape {arr.shape}")
    if identity is not None and identity.ndim == 2 and identity.shape[1] == 0:
        problems.append(f"{path}: identity: must have at least one dimension, but got shape {identity.shape}")
    if problems:
        raise DataError("\n".join(problems))
    label = [str(v) for v in ids.tolist()] if ids is not None else None
    if ids is not None and ids.dtype.kind == "f":
        require_finite(ids, path, "ids", kind="sample")
    for name, arr in (("inputs", inputs), ("targets", targets), ("identity", identity)):
        if arr is not None:
            try:
                require_finite(arr.reshape(n, -1), path, name, kind="sample", ids=label)
            except DataError as e:
                problems.append(str(e))
    norms = np.linalg.norm(targets.astype(np.float64), axis=1) if not problems else None
    if norms is not None and (norms == 0).any():
        zero = np.flatnonzero(norms == 0)
        items = ", ".join(_where(int(i), "sample", None if label is None else label[int(i)]) for i in zero[:MAX_LISTED])
        problems.append(f"{path}: targets: must have a non-zero norm (the cosine similarity of a zero vector is undefined), "
                        f"but got all zeros at {items}" + more_suffix(int(zero.size)))
    if problems:
        raise DataError("\n".join(problems))
    return RawFaces(inputs, targets, identity, ids)


def generate_synthetic(spec: SyntheticFace3DDataset) -> RawFaces:
    """See the module docstring. The target is ``normalize(e A + s B)`` for identity embedding ``e``
    and the face's shape offsets ``s`` (both terms matter); the inputs show the shape under a random
    rotation, so the model has to see past the pose."""
    rng = np.random.default_rng(spec.seed)
    k, m = spec.n_keypoints, spec.n_identities
    template = rng.normal(size=(k, 3))
    shape = 0.3 * rng.normal(size=(m, k, 3))  # each face's deviation from the template
    emb = rng.normal(size=(m, spec.identity_dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    A = rng.normal(size=(spec.identity_dim, spec.target_dim))
    B = rng.normal(size=(k * 3, spec.target_dim)) / (0.3 * math.sqrt(k * 3))  # shape term ~ as large as e A
    face_target = emb @ A + shape.reshape(m, -1) @ B
    face_target /= np.linalg.norm(face_target, axis=1, keepdims=True)

    ids = np.concatenate([np.arange(m), rng.integers(0, m, size=max(0, spec.n_samples - m))])[: spec.n_samples]
    rot = _rotations(rng.uniform(-spec.max_angle, spec.max_angle, size=(spec.n_samples, 3)))  # (N, 3, 3)
    points = template[None] + shape[ids]  # (N, K, 3)
    inputs = np.einsum("nij,nkj->nki", rot, points) + spec.noise * rng.normal(size=points.shape)
    identity = emb[ids] + 0.05 * rng.normal(size=(spec.n_samples, spec.identity_dim))
    return RawFaces(inputs, face_target[ids], identity, ids)


class FaceLoader(IndexBatcher):
    """Batches of a :class:`FaceSet`: dicts ``tokens`` (B, T, F), ``identity`` (B, E) when present,
    ``target`` (B, D). With ``shuffle`` each pass draws a new order from a generator seeded with ``seed``."""

    def __init__(self, part: FaceSet, batch_size: int, *, shuffle: bool, seed: int = 0) -> None:
        import torch

        super().__init__(len(part), batch_size, shuffle=shuffle, seed=seed)
        self._x = torch.from_numpy(part.inputs)
        self._e = None if part.identity is None else torch.from_numpy(part.identity)
        self._y = torch.from_numpy(part.targets)

    def __iter__(self):
        for ix in self.batches():
            batch = {"tokens": self._x[ix], "target": self._y[ix]}
            if self._e is not None:
                batch["identity"] = self._e[ix]
            yield batch


def _rotations(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) from yaw / pitch / roll angles (N, 3)."""
    cy, sy = np.cos(angles[:, 0]), np.sin(angles[:, 0])
    cp, sp = np.cos(angles[:, 1]), np.sin(angles[:, 1])
    cr, sr = np.cos(angles[:, 2]), np.sin(angles[:, 2])
    one, zero = np.ones_like(cy), np.zeros_like(cy)
    Rz = np.stack([np.stack([cy, -sy, zero], -1), np.stack([sy, cy, zero], -1), np.stack([zero, zero, one], -1)], 1)
    Ry = np.stack([np.stack([cp, zero, sp], -1), np.stack([zero, one, zero], -1), np.stack([-sp, zero, cp], -1)], 1)
    Rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cr, -sr], -1), np.stack([zero, sr, cr], -1)], 1)
    return Rz @ Ry @ Rx
