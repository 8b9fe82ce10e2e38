"""Analyses that need trained models: load a trial's best checkpoint back into its model, and run a
task's own analyses on it (``hpo analyze NAME STUDY --trials N ...``).

A task declares analyses as ``analyses = {"name": "package.module:function"}``; each function is
called as ``function(task, splits, models, split=...) -> dict`` with ``models`` mapping a label
("#12 [current]") to a model in eval mode, and its JSON result is stored with the study
(user attr ``analysis_<name>``) and printed.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from typing import TYPE_CHECKING, Any

from hpo.errors import DataError, UsageError, name_rule
from hpo.store.record import BASELINE, CHECKPOINT, CHECKPOINT_SHA256

if TYPE_CHECKING:
    import optuna

_ARTIFACT_ID = re.compile(r"[0-9a-fA-F-]{32,36}")


def trusted_checkpoint_id(ostudy: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> str:
    """The artifact id of ``trial``'s best checkpoint, as the trial itself recorded it.

    Only a COMPLETE trial's checkpoint is loaded, and only the artifact named by its ``checkpoint`` user
    attr that is also one of that trial's artifacts: a file uploaded through optuna-dashboard's API, or
    an id copied from another trial, is never loaded.
    """
    from optuna.trial import TrialState

    n = trial.number
    if trial.state != TrialState.COMPLETE:
        raise UsageError(f"trial #{n}: state: must be COMPLETE to load its checkpoint (checkpoints are kept for "
                         f"complete trials only), but got {trial.state.name}")
    artifact = trial.user_attrs.get(CHECKPOINT)
    if not artifact:
        raise UsageError(f"trial #{n}: user attr checkpoint: must name the checkpoint the trial saved, but got none "
                         "(it ran with --no-checkpoints, or its checkpoint could not be written)")
    if not isinstance(artifact, str) or not _ARTIFACT_ID.fullmatch(artifact):
        raise DataError(f"trial #{n}: user attr checkpoint: must be an artifact id (a uuid), but got {str(artifact)[:80]!r}")
    own = {k.split(":", 1)[1] for k in trial.system_attrs if k.startswith("artifacts:")}  # as upload_artifact records them
    if artifact not in own:
        raise DataError(f"trial #{n}: user attr checkpoint: must be one of the trial's own artifacts, but got "
                        f"{artifact}, which is not attached to it; nothing was loaded")
    return artifact


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_trial_model(ostudy: "optuna.Study", number: int, artifacts_dir: str, cache_dir: str = "runs/cache"):
    """(task, splits, model) of trial ``number``'s best checkpoint (the model in eval mode, on CPU).
    Only what :func:`trusted_checkpoint_id` admits is read, with :func:`hpo.store.checkpoint.load_checkpoint`
    (``weights_only=True``)."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    from hpo.store.checkpoint import load_checkpoint
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    trials = {t.number: t for t in stored.trials()}
    if number not in trials:
        raise UsageError(f"study {ostudy.study_name!r} has no trial #{number}")
    trial = trials[number]
    artifact = trusted_checkpoint_id(ostudy, trial)
    task_cls = stored.task_class
    task = stored.task(cache_dir)
    label = f"trial #{number} checkpoint (artifact {artifact})"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pt")  # download_artifact refuses to overwrite a file
        download_artifact(artifact_store=FileSystemArtifactStore(artifacts_dir), file_path=path, artifact_id=artifact)
        digest = trial.user_attrs.get(CHECKPOINT_SHA256)
        if digest is not None and _sha256(path) != digest:
            raise DataError(f"{label}: file: must be the file the trial wrote (sha256 {digest}), but got "
                            f"sha256 {_sha256(path)}: it was replaced; nothing was loaded")
        ckpt = load_checkpoint(path, label)  # weights_only=True: tensors and plain data, nothing runs
    names = {ostudy.study_name, stored.spec.get("name")}  # the stored name, or the study file's
    if ckpt["study"] not in names or ckpt["trial"] != number or ckpt["task"] != task_cls.name:
        raise DataError(f"{label}: checkpoint: must be trial #{number}'s of study {ostudy.study_name!r} "
                        f"({task_cls.name}), but got trial #{ckpt['trial']} of study {ckpt['study']!r} ({ckpt['task']})")
    _, model_cfg, data_cfg = task.split_config(ckpt["config"])
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits)
    model.load_state_dict(ckpt["model_state"])
    return task, splits, model.eval()


def run_analysis(ostudy: "optuna.Study", name: str, numbers: list[int], *, artifacts_dir: str, split: str | None = None,
                 **options: Any) -> dict:
    """Run analysis ``name`` of the study's task on the best checkpoints of trials ``numbers``;
    ``options`` are passed to the analysis (e.g. ``out`` for an HTML file)."""
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    task_cls = stored.task_class
    analyses = getattr(task_cls, "analyses", {}) or {}
    if name not in analyses:
        raise UsageError(f"analysis {name_rule(f'analysis of task {task_cls.name}', name, analyses)}, but got {name!r}")
    module, _, attr = analyses[name].partition(":")
    fn = getattr(importlib.import_module(module), attr)
    models: dict[str, Any] = {}
    task = splits = None
    trials = {t.number: t for t in stored.light_trials()}
    for n in numbers:
        task, splits, model = load_trial_model(ostudy, n, artifacts_dir)
        tag = trials[n].user_attrs.get(BASELINE)
        models[f"#{n}" + (f" [{tag}]" if tag else "")] = model
    kwargs = {**({"split": split} if split else {}), **options}
    result = fn(task, splits, models, **kwargs)
    result = {"trials": numbers, **result}
    ostudy.set_user_attr(f"analysis_{name}", result)
    return result
