"""The one checkpoint format: what a trial's (or ``hpo train``'s) best epoch is saved as, and how it is
read back.

A checkpoint is a ``torch.save`` of a plain mapping: ``format`` (:data:`CHECKPOINT_FORMAT`), ``task``,
``config``, ``model_state``, ``metrics``, ``best_epoch``, ``extras`` (the task's, e.g. scalers) and, for a
trial, ``study``, ``trial``, ``dataset`` and ``target``. A trial's file is written whole into the artifact
store before it is recorded with the trial (:func:`upload_whole`), and its sha256 is recorded beside it;
:func:`load_checkpoint` reads it as data only (``weights_only=True``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Callable

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
REQUIRED = ("format", "task", "study", "trial", "config", "model_state")  # what a trial's checkpoint holds


def checkpoint_payload(**fields: Any) -> dict:
    """The mapping saved as a checkpoint: ``fields`` with the format key."""
    return {"format": CHECKPOINT_FORMAT, **fields}


def save_checkpoint(payload: dict, path: str | os.PathLike) -> None:
    import torch

    torch.save(payload, path)


def sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def upload_checkpoint(payload: dict, upload: Callable[[str], str], prefix: str) -> tuple[str, str]:
    """Save ``payload`` to a temporary file, hand it to ``upload`` (which returns the artifact id) and
    return the artifact id and the file's sha256 (loading checks it: a file replaced in the artifact
    folder is refused)."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".pt")
    os.close(fd)
    try:
        save_checkpoint(payload, path)
        digest = sha256(path)
        return upload(path), digest
    finally:
        os.unlink(path)


def upload_whole(artifacts: Any, path: str, storage: Any, trial_id: int) -> str:
    """Write ``path`` into the artifact store, then record it as an artifact of the trial; return its id.

    Optuna's own upload records the artifact before writing it, so a failed write (disk full, a lost
    share) leaves a record pointing at a partial file. Here a failed write removes what it wrote and
    records nothing."""
    import uuid

    from hpo.store.rdb import record_artifact

    artifact_id = str(uuid.uuid4())
    try:
        with open(path, "rb") as f:
            artifacts.write(artifact_id, f)
    except BaseException:
        _remove_artifact(artifacts, artifact_id)
        raise
    try:
        record_artifact(storage, trial_id, artifact_id, os.path.basename(path))
    except BaseException:
        _remove_artifact(artifacts, artifact_id)
        raise
    return artifact_id


def _remove_artifact(artifacts: Any, artifact_id: str) -> None:
    try:
        artifacts.remove(artifact_id)
    except Exception as e:  # nothing was written, or the store is gone: nothing more to do
        logger.debug("could not remove the partial artifact %s: %s", artifact_id, e)


def load_checkpoint(path: str | os.PathLike, label: str | None = None) -> dict:
    """Read a checkpoint written by a trial, as data only: ``torch.load(weights_only=True)`` rebuilds
    tensors, containers and plain values and refuses any other global, so a planted file (an uploaded
    artifact, a replaced file) runs nothing. Raises :class:`hpo.errors.DataError` naming ``label`` (the
    trial and artifact) when the file is not a checkpoint of this service."""
    import pickle

    import torch

    from hpo.errors import DataError

    where = label or str(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = next((line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line), str(e).splitlines()[0] if str(e) else "")
        raise DataError(f"{where}: checkpoint: must hold only tensors and plain data (it is loaded with "
                        f"weights_only=True and nothing in it is run), but got {first.strip()[:300]}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
        raise DataError(f"{where}: checkpoint: must be a complete torch checkpoint, but reading it failed: "
                        f"{type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = f"keys {sorted(map(str, ckpt))[:10]}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise DataError(f"{where}: checkpoint: must be a format-{CHECKPOINT_FORMAT} checkpoint of this service (keys "
                        f"{', '.join(REQUIRED)}), but got {got}")
    return ckpt
