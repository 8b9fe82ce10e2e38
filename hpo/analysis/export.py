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

from hpo.errors import Problem, SpecError, UsageError
from hpo.store.storage import open_storage
from hpo.spec.urls import redact

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

EXPORT_FORMAT = 1


def load_stored_study(storage_url: str, study_name: str) -> "optuna.Study":
    import optuna

    storage = open_storage(storage_url, heartbeat=False)
    names = [s.study_name for s in storage.get_all_studies()]  # names only: reads no trial
    if study_name not in names:
        from hpo.errors import name_rule

        raise UsageError(f"{redact(storage_url)}: study {name_rule('study', study_name, names)}, but got {study_name!r}")
    return optuna.load_study(study_name=study_name, storage=storage)


def select_trials(ostudy: "optuna.Study", top: int = 1) -> list["FrozenTrial"]:
    """The top-``top`` complete trials (single objective), or the Pareto-optimal ones (several)."""
    from optuna.trial import TrialState

    if top < 1:
        raise UsageError(f"--top must be >= 1, but got {top}")
    from hpo.store.storage import full_trial, light_trials

    done = light_trials(ostudy, states=(TrialState.COMPLETE,), without_user_attrs=None)  # ranked on values; the chosen read whole
    if not done:
        raise UsageError(f"study {ostudy.study_name!r} has no complete trial yet")
    if len(ostudy.directions) > 1:
        front = sorted(pareto_front(done, ostudy.directions), key=lambda t: t.number)
        chosen = front[:top] if top > 1 else front
    else:
        reverse = ostudy.direction.name == "MAXIMIZE"
        chosen = sorted(done, key=lambda t: t.value, reverse=reverse)[:top]
    return [full_trial(ostudy, t) for t in chosen]


def pareto_front(trials: list["FrozenTrial"], directions) -> list["FrozenTrial"]:
    """The non-dominated complete trials (Optuna's ``best_trials``, over trials already read)."""
    try:
        from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
    except ImportError:  # pragma: no cover - older/newer Optuna without the helper
        def _get_pareto_front_trials_by_trials(ts, dirs):
            sign = [1 if d.name == "MINIMIZE" else -1 for d in dirs]
            keys = [[s * v for s, v in zip(sign, t.values)] for t in ts]
            return [t for t, a in zip(ts, keys)
                    if not any(all(x <= y for x, y in zip(b, a)) and b != a for b in keys)]
    return list(_get_pareto_front_trials_by_trials(trials, directions))


def exported(ostudy: "optuna.Study", trial: "FrozenTrial", storage_url: str, rank: int = 1) -> dict[str, Any]:
    from hpo.store.record import RECORD_ATTR

    record = ostudy.user_attrs.get(RECORD_ATTR)
    if not record:
        raise UsageError(f"study {ostudy.study_name!r} was not created by fusion-hpo (no spec stored with it)")
    spec = record["spec"]
    task = {k: v for k, v in spec["task"].items() if k != "dataset"}
    task["dataset"] = record["dataset"]
    objectives = [
        {"metric": m, "direction": d.name.lower()}
        for m, d in zip(_metric_names(spec), ostudy.directions)
    ]
    return {
        "fusion_hpo_export": EXPORT_FORMAT,
        "source": {
            "study": ostudy.study_name,
            "storage": redact(storage_url),
            "study_file": record.get("file"),
            "trial": trial.number,
            "rank": rank,
            "values": dict(zip([o["metric"] for o in objectives], trial.values)),
            "baseline": trial.user_attrs.get("baseline"),
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "threads": trial.user_attrs.get("threads"),
            "device": trial.user_attrs.get("device"),
            "checkpoint": trial.user_attrs.get("checkpoint"),
            "params": dict(trial.params),
            "overrides": dict(trial.user_attrs.get("overrides") or {}),
        },
        "task": task,
        "objectives": objectives,
        "config": dict(trial.user_attrs["config"]),
    }


def _metric_names(spec: dict) -> list[str]:
    return [o if isinstance(o, str) else o["metric"] for o in spec["objectives"]]


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
