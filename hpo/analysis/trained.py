"""Analyses that need trained models: load a trial's best checkpoint back into its model, and run a
task's own analyses on it (``hpo analyze NAME STUDY --trials N ...``).

A task declares analyses as ``analyses = {"name": "package.module:function"}``; each function is
called as ``function(task, splits, models, split=...) -> dict`` with ``models`` mapping a label
("#12 [current]") to a model in eval mode, and its JSON result is stored with the study
(user attr ``analysis_<name>``) and printed. A function that also takes ``loaded`` gets every trial as a
:class:`LoadedTrial` (its own splits, loaded with its own data config, and its stored record).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from hpo.errors import DataError, UsageError, name_rule
from hpo.store.record import BASELINE, CHECKPOINT, CHECKPOINT_SHA256, WARM_START_OF

if TYPE_CHECKING:
    import optuna

    from hpo.tasks import Splits, Task

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


def load_trial_model(ostudy: "optuna.Study", number: int, artifacts_dir: str, cache_dir: str = "runs/cache", *,
                     task: "Task | None" = None):
    """(task, splits, model) of trial ``number``'s best checkpoint (the model in eval mode, on CPU), the
    splits loaded with the trial's own data config (through ``task`` when given, so that several trials share
    its data cache). Only what :func:`trusted_checkpoint_id` admits is read, with
    :func:`hpo.store.checkpoint.load_checkpoint` (``weights_only=True``)."""
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
    task = task if task is not None else stored.task(cache_dir)
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


@dataclass(frozen=True)
class LoadedTrial:
    """One trial's best checkpoint loaded back: the model (eval mode) with the splits its own config loads,
    the task they share, and the trial's stored user attrs (config, curves, metrics at the best epoch, ...)."""

    number: int
    label: str  # "#12 [current]": the number and the baseline it ran, if any
    task: "Task"
    splits: "Splits"
    model: Any
    record: dict[str, Any]


def trial_label(number: int, user_attrs: dict[str, Any]) -> str:
    """``#12`` or ``#12 [current]`` (the baseline the trial ran)."""
    tag = user_attrs.get(BASELINE)
    return f"#{number}" + (f" [{tag}]" if tag else "")


def load_trials(ostudy: "optuna.Study", numbers: list[int], artifacts_dir: str,
                cache_dir: str = "runs/cache") -> list[LoadedTrial]:
    """The best checkpoints of trials ``numbers``, in that order, through one task (one data cache)."""
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    trials = {t.number: t for t in stored.trials()}
    for n in numbers:
        if n not in trials:
            raise UsageError(f"study {ostudy.study_name!r} has no trial #{n}")
        told = trials[n].user_attrs.get(WARM_START_OF)
        if told:
            raise UsageError(f"trial #{n}: was told to this stage from {told} and never trained here (it has no "
                             f"checkpoint in {ostudy.study_name!r}); name that trial in its own study")
    shared = stored.task(cache_dir)
    out = []
    for n in numbers:
        task, splits, model = load_trial_model(ostudy, n, artifacts_dir, cache_dir, task=shared)
        record = dict(trials[n].user_attrs)  # with its curves
        out.append(LoadedTrial(n, trial_label(n, record), task, splits, model, record))
    return out


def analysis_function(task_cls: "type[Task]", name: str, default: Callable[..., dict] | None = None) -> Callable[..., dict]:
    """The function the task names for analysis ``name`` (``analyses``), else ``default``, else a UsageError."""
    analyses = getattr(task_cls, "analyses", {}) or {}
    if name not in analyses:
        if default is not None:
            return default
        raise UsageError(f"analysis {name_rule(f'analysis of task {task_cls.name}', name, analyses)}, but got {name!r}")
    module, _, attr = analyses[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C function: takes only the documented arguments
        return False


def run_analysis(ostudy: "optuna.Study", name: str, numbers: list[int], *, artifacts_dir: str, split: str | None = None,
                 cache_dir: str = "runs/cache", default: Callable[..., dict] | None = None, **options: Any) -> dict:
    """Run analysis ``name`` of the study's task (``default`` where the task names none) on the best
    checkpoints of trials ``numbers``; ``options`` are passed to the analysis (e.g. ``out`` for an HTML file).
    ``task`` and ``splits`` are those of the last trial; an analysis that takes ``loaded`` gets each trial's own."""
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    fn = analysis_function(stored.task_class, name, default)
    loaded = load_trials(ostudy, numbers, artifacts_dir, cache_dir)
    models = {t.label: t.model for t in loaded}
    kwargs = {**({"split": split} if split else {}), **options, **({"loaded": loaded} if _takes(fn, "loaded") else {})}
    result = fn(loaded[-1].task, loaded[-1].splits, models, **kwargs)
    result = {"trials": numbers, **result}
    ostudy.set_user_attr(f"analysis_{name}", result)
    return result
