"""Train one config outside a study (``hpo train``): from an exported config, or from a study's
space with given parameter values or a named baseline. The same trainer as the trials."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hpo.errors import Problem, SpecError, UsageError
from hpo.run.options import cap_epochs, max_epochs

if TYPE_CHECKING:
    from hpo.spec import Study
    from hpo.tasks.base import Task
    from hpo.train.loop import FitResult

logger = logging.getLogger(__name__)


@dataclass
class TrainJob:
    task_cls: type["Task"]
    dataset: Any  # the task's DatasetSpec
    target: str | None
    config: dict
    monitor: str
    direction: str
    source: dict  # where the config came from (export's source, or the study)


def job_from_export(doc: dict, file: str) -> TrainJob:
    from pydantic import ValidationError

    from hpo.errors import UnknownNameError, name_rule
    from hpo.spec.pydantic_errors import problems_from_validation
    from hpo.tasks import available_task_names, get_task

    task_sec = doc["task"]
    try:
        task_cls = get_task(str(task_sec.get("family")))
    except UnknownNameError:
        raise SpecError([Problem("task.family", name_rule("task", task_sec.get("family"), available_task_names()), task_sec.get("family"))], file) from None
    try:
        dataset = task_cls.DatasetSpec.model_validate(task_sec.get("dataset") or {}, context={"base_dir": Path(file).parent})
    except ValidationError as e:
        raise SpecError(problems_from_validation(e, task_cls.DatasetSpec, task_sec.get("dataset") or {}, prefix="task.dataset"), file) from None
    config = dict(doc["config"])
    problems = check_config(task_cls, config, "config")
    if problems:
        raise SpecError(problems, file)
    objectives = doc.get("objectives") or [{"metric": task_cls.default_objective, "direction": task_cls.direction_of(task_cls.default_objective)}]
    return TrainJob(task_cls, dataset, task_sec.get("target"), config, objectives[0]["metric"], objectives[0]["direction"], doc.get("source") or {"file": file})


def job_from_study(study: "Study", values: Mapping[str, Any], baseline: str | None = None) -> TrainJob:
    space = study.space
    if baseline is not None:
        if baseline not in space.baselines:
            from hpo.errors import name_rule

            raise UsageError(f"--baseline {name_rule('baseline', baseline, space.baselines)}, but got {baseline!r}")
        b = space.baselines[baseline]
        params, overrides = dict(b.params), dict(b.overrides)
    else:
        params, overrides = {}, {}
    for key, value in values.items():
        (params if key in space.param_names else overrides)[key] = value
    derived = {name for name, _ in space.derived}
    bad = [k for k in overrides if k in derived]
    if bad:
        raise UsageError(f"-p {bad[0]}: is derived from other keys and cannot be set")
    try:
        config = space.resolve(params, overrides)
    except KeyError as e:
        raise UsageError(f"{study.file}: {e.args[0]}; give them with -p KEY=VALUE or use --baseline NAME") from None
    config.setdefault("seed", study.spec.seed)
    cap_epochs(config, max_epochs(study), study.task_cls)
    problems = check_config(study.task_cls, config, "config")
    problems += [Problem("config", f"must meet the constraint `{c}`", has_got=False) for c in space.violated(config)]
    if problems:
        raise SpecError(problems, "-p")
    return TrainJob(
        study.task_cls, study.dataset, study.spec.task.target, config, study.monitor.metric, study.monitor.direction,
        {"study_file": str(study.file), "baseline": baseline},
    )


def check_config(task_cls: type["Task"], config: Mapping[str, Any], prefix: str) -> list[Problem]:
    from hpo.spec.key_types import KeyTypes as _KeyTypes

    types = _KeyTypes(task_cls)
    problems = []
    for key, value in config.items():
        msg = types.check(key, value)
        if msg:
            problems.append(Problem(f"{prefix}.{key}", msg, key if key not in types.fields and not key.startswith("lr_") else value))
    if not problems:
        try:
            task_cls.split_config(config)
        except (ValueError, TypeError, KeyError) as e:
            problems.append(Problem(prefix, f"must make a valid config: {e}", has_got=False))
    return problems


def run_job(job: TrainJob, *, device: str | None = None, out_dir: str | os.PathLike | None = None,
            cache_dir: str = "runs/cache") -> tuple["FitResult", Path | None]:
    """Train the job's config (the test split stays locked: only ``hpo reevaluate`` reads it).
    Returns the fit result and the checkpoint path (or None)."""
    from hpo.data.cache import DataCache
    from hpo.store.checkpoint import checkpoint_payload, save_checkpoint
    from hpo.train import fit

    task = job.task_cls(job.dataset, job.target, DataCache(cache_dir))
    train_cfg, model_cfg, data_cfg = task.split_config(job.config)
    splits = task.load(data_cfg)
    with splits.locked_test():
        result = fit(task, splits, train_cfg, model_cfg, monitor=job.monitor, direction=job.direction, device=device)
    path = None
    if out_dir is not None and result.best_state is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "best.pt"
        save_checkpoint(checkpoint_payload(task=task.name, config=job.config, metrics=result.best, best_epoch=result.best_epoch,
                                           model_state=result.best_state, extras=task.checkpoint_extras(splits),
                                           source=job.source), path)
    return result, path
