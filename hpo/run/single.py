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
    primary = next((o for o in objectives if isinstance(o, dict) and o.get("primary")), objectives[0])
    return TrainJob(task_cls, dataset, task_sec.get("target"), config, primary["metric"], primary["direction"], doc.get("source") or {"file": file})


def stage_of(study: "Study", stage: str | None, baseline: str | None = None) -> "Study":
    """The flat study that ``hpo train`` draws a config from: ``study`` itself for a flat study; for a
    staged one the stage named ``stage``, else the first stage that has the named ``baseline`` (its own
    space, named runs and training defaults, e.g. the 50 epochs of an experiments stage), else ``study``."""
    from hpo.errors import name_rule

    if stage is not None:
        names = [s.name for s in study.stages]
        if stage not in names:
            raise UsageError(f"--stage {name_rule('stage of ' + study.name, stage, names)}, but got {stage!r}")
        return study.stages[names.index(stage)].study
    if baseline is not None and baseline not in study.space.baselines:
        for st in study.stages:
            if baseline in st.study.space.baselines:
                logger.info("baseline %s is a named run of stage %s", baseline, st.name)
                return st.study
    return study


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


BEST, LATEST = "best.pt", "latest.pt"  # the files ``run_job`` writes into its folder (and epoch_N.pt)


def epoch_file(epoch: int) -> str:
    """The name of the every-N-epochs checkpoint of ``epoch`` (the seed's checkpoint_epoch_X.pt)."""
    return f"epoch_{epoch}.pt"


def run_job(job: TrainJob, *, device: str | None = None, out_dir: str | os.PathLike | None = None,
            cache_dir: str = "runs/cache", save_every: int = 0) -> tuple["FitResult", Path | None]:
    """Train the job's config (the test split stays locked: only ``hpo reevaluate`` reads it).
    Returns the fit result and the best checkpoint's path (or None).

    With ``out_dir`` it holds ``best.pt`` (the best epoch), ``latest.pt`` (the last epoch trained,
    rewritten after each) and, when ``save_every`` is N > 0, ``epoch_N.pt``, ``epoch_2N.pt``, ...: all
    in the one checkpoint format (:mod:`hpo.store.checkpoint`), each with ``epoch``, the epoch its
    weights are from. Each file is written whole (a temporary file, then renamed), so a run stopped
    mid-write leaves the previous one."""
    from hpo.data.cache import DataCache
    from hpo.train import fit

    if save_every < 0:
        raise UsageError(f"--save-every: must be >= 0 (0: no every-N-epochs checkpoints), but got {save_every}")
    task = job.task_cls(job.dataset, job.target, DataCache(cache_dir))
    train_cfg, model_cfg, data_cfg = task.split_config(job.config)
    splits = task.load(data_cfg)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    on_state = _epoch_saver(job, task, splits, out, save_every) if out is not None else None
    with splits.locked_test():
        result = fit(task, splits, train_cfg, model_cfg, monitor=job.monitor, direction=job.direction, device=device,
                     on_epoch_state=on_state)
    path = None
    if out is not None and result.best_state is not None:
        path = out / BEST
        _write(_payload(job, task, splits, result.best, result.best_epoch, result.best_state, epoch=result.best_epoch), path)
    return result, path


def _epoch_saver(job: TrainJob, task: "Task", splits: Any, out: Path, save_every: int):
    """The ``on_epoch_state`` callback that keeps ``latest.pt`` and, every ``save_every`` epochs, ``epoch_N.pt``."""
    from hpo.train.loop import EpochSnapshot

    extras = task.checkpoint_extras(splits)

    def save(snap: EpochSnapshot) -> None:
        payload = _payload(job, task, splits, snap.metrics, snap.best_epoch, snap.state(), epoch=snap.epoch, extras=extras)
        _write(payload, out / LATEST)
        if save_every and snap.epoch % save_every == 0:
            _write(payload, out / epoch_file(snap.epoch))
        logger.debug("epoch %d: checkpoint(s) written to %s", snap.epoch, out)

    return save


def _payload(job: TrainJob, task: "Task", splits: Any, metrics: Mapping[str, float], best_epoch: int, state: dict, *,
             epoch: int, extras: dict | None = None) -> dict:
    """A checkpoint of ``hpo train``: the trial checkpoint's keys (``study`` / ``trial``: the exported
    trial's, or the study file and None), plus ``epoch`` and the job's ``source``."""
    from hpo.store.checkpoint import checkpoint_payload

    src = job.source
    return checkpoint_payload(task=task.name, study=src.get("study", src.get("study_file")), trial=src.get("trial"),
                              target=job.target, config=job.config, metrics=dict(metrics), best_epoch=best_epoch,
                              epoch=epoch, model_state=state,
                              extras=extras if extras is not None else task.checkpoint_extras(splits), source=src)


def _write(payload: dict, path: Path) -> None:
    """Save ``payload`` at ``path`` whole: into a temporary file beside it, then renamed over it."""
    from hpo.store.checkpoint import save_checkpoint

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_checkpoint(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
