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
import tempfile
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError, name_rule

if TYPE_CHECKING:
    import optuna


def load_trial_model(ostudy: "optuna.Study", number: int, artifacts_dir: str, cache_dir: str = "runs/cache"):
    """(task, splits, model) of trial ``number``'s best checkpoint (the model in eval mode, on CPU)."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    from hpo.cache import DataCache
    from hpo.objective import load_checkpoint
    from hpo.runner import RECORD_ATTR
    from hpo.tasks import get_task

    trials = {t.number: t for t in ostudy.get_trials(deepcopy=False)}
    if number not in trials:
        raise UsageError(f"study {ostudy.study_name!r} has no trial #{number}")
    trial = trials[number]
    artifact = trial.user_attrs.get("checkpoint")
    if not artifact:
        raise UsageError(f"trial #{number} has no checkpoint (state {trial.state.name}; checkpoints are kept for complete trials)")
    record = ostudy.user_attrs[RECORD_ATTR]
    task_cls = get_task(record["spec"]["task"]["family"])
    task = task_cls(task_cls.DatasetSpec.model_validate(record["dataset"]), record["spec"]["task"].get("target"), DataCache(cache_dir))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pt")  # download_artifact refuses to overwrite a file
        download_artifact(artifact_store=FileSystemArtifactStore(artifacts_dir), file_path=path, artifact_id=artifact)
        ckpt = load_checkpoint(path)
    _, model_cfg, data_cfg = task.split_config(ckpt["config"])
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits)
    model.load_state_dict(ckpt["model_state"])
    return task, splits, model.eval()


def run_analysis(ostudy: "optuna.Study", name: str, numbers: list[int], *, artifacts_dir: str, split: str | None = None,
                 **options: Any) -> dict:
    """Run analysis ``name`` of the study's task on the best checkpoints of trials ``numbers``;
    ``options`` are passed to the analysis (e.g. ``out`` for an HTML file)."""
    from hpo.runner import RECORD_ATTR
    from hpo.tasks import get_task

    task_cls = get_task(ostudy.user_attrs[RECORD_ATTR]["spec"]["task"]["family"])
    analyses = getattr(task_cls, "analyses", {}) or {}
    if name not in analyses:
        raise UsageError(f"analysis {name_rule(f'analysis of task {task_cls.name}', name, analyses)}, but got {name!r}")
    module, _, attr = analyses[name].partition(":")
    fn = getattr(importlib.import_module(module), attr)
    models: dict[str, Any] = {}
    task = splits = None
    trials = {t.number: t for t in ostudy.get_trials(deepcopy=False)}
    for n in numbers:
        task, splits, model = load_trial_model(ostudy, n, artifacts_dir)
        tag = trials[n].user_attrs.get("baseline")
        models[f"#{n}" + (f" [{tag}]" if tag else "")] = model
    kwargs = {**({"split": split} if split else {}), **options}
    result = fn(task, splits, models, **kwargs)
    result = {"trials": numbers, **result}
    ostudy.set_user_attr(f"analysis_{name}", result)
    return result
