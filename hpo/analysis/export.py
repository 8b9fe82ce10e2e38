"""Export the best configs of a study as complete, re-runnable configs, and train them again.

An exported config (YAML or JSON) holds the task section (family, target, dataset with absolute
paths), the objectives, the trial's complete explicit config (training defaults + fixed + sampled +
derived + seed) and where it came from (study, trial, values, CPU threads). ``hpo train --config``
trains exactly that config; on CPU with the same thread count it reproduces the trial's metrics.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import Problem, SpecError
from hpo.spec.urls import redact
from hpo.store.record import BASELINE, BEST_EPOCH, CHECKPOINT, CONFIG, DEVICE, OVERRIDES, STAGE, THREADS

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

EXPORT_FORMAT = 1


def select_trials(ostudy: "optuna.Study", top: int = 1) -> list["FrozenTrial"]:
    """The trials ``hpo export`` writes: the top-``top`` complete trials, or the Pareto-optimal ones."""
    from hpo.store.stored import StoredStudy

    return StoredStudy(ostudy).best(top)


def exported(ostudy: "optuna.Study", trial: "FrozenTrial", storage_url: str, rank: int = 1) -> dict[str, Any]:
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    task = stored.task_section()
    objectives = [{"metric": m, "direction": d, **({"primary": True} if i == stored.primary_index and len(stored.metrics) > 1 else {})}
                  for i, (m, d) in enumerate(zip(stored.metrics, stored.directions))]
    attrs = trial.user_attrs
    return {
        "fusion_hpo_export": EXPORT_FORMAT,
        "source": {
            "study": ostudy.study_name,
            "storage": redact(storage_url),
            "study_file": stored.study_file,
            "stage": (ostudy.user_attrs.get(STAGE) or {}).get("name"),  # a staged plan's stage: its space and fidelity
            "trial": trial.number,
            "rank": rank,
            "values": dict(zip([o["metric"] for o in objectives], trial.values)),
            "baseline": attrs.get(BASELINE),
            "best_epoch": attrs.get(BEST_EPOCH),
            "threads": attrs.get(THREADS),
            "device": attrs.get(DEVICE),
            "checkpoint": attrs.get(CHECKPOINT),
            "params": dict(trial.params),
            "overrides": dict(attrs.get(OVERRIDES) or {}),
        },
        "task": task,
        "objectives": objectives,
        "config": dict(attrs[CONFIG]),
    }


def as_cli(doc: dict, study_file: str | None = None) -> str:
    """The command that trains this config alone: ``hpo train STUDY -p key=value ...`` with the
    trial's sampled parameters and overrides (fixed and derived values come from the study file;
    the YAML/JSON export is the exact config even if that file changes later)."""
    source = doc["source"]
    study_file = study_file or source.get("study_file")
    args = ["hpo", "train"]
    if study_file and Path(study_file).exists():
        args.append(study_file)
    else:
        return f"hpo train --config <this config saved as YAML>  # the study file {study_file!r} is gone"
    if source.get("stage"):
        args += ["--stage", source["stage"]]
    values = {**source.get("overrides", {}), **source.get("params", {})}
    if "seed" in doc["config"]:
        values.setdefault("seed", doc["config"]["seed"])
    for key, value in values.items():
        args += ["-p", f"{key}={_yaml_scalar(value)}"]
    if doc["source"].get("threads"):
        args += ["--threads", str(doc["source"]["threads"])]
    return " ".join(shlex.quote(a) for a in args)


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: strings stay quoted ("2,3"), numbers exact


def read_exported(path: str | Path) -> dict:
    from hpo.spec.yaml_io import load_yaml

    doc = load_yaml(path)
    problems = []
    if not isinstance(doc, dict):
        raise SpecError([Problem("", "must be a mapping written by `hpo export`", doc)], str(path))
    for key in ("task", "config"):
        if not isinstance(doc.get(key), dict):
            problems.append(Problem(key, "is required (a mapping)", doc.get(key)))
    if problems:
        raise SpecError(problems, str(path))
    return doc
