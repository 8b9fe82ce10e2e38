"""A study fusion-hpo stored, read back: :class:`StoredStudy`, the one "stored record -> task" reader.

Every reader of a finished or running study (export, report, narrow, re-evaluation, trained models, the
CLI) goes through it: the study record (``RECORD_ATTR``) with the defaults of older records (a record
without ``format`` is format 1), its spec, objective names and directions, the task class and the
dataset it names, light trial reads (without curves and intermediate values, for overviews of big
studies) and full reads of the few trials that need everything, and the best / Pareto-optimal trials.
:func:`load_stored_study` opens a study by (storage URL, name) and refuses an unknown name, listing the
names the store holds. Trials told to a stage from an earlier stage (user attr ``WARM_START_OF``) were
never trained in the study: :func:`is_told` says which; light reads, best and Pareto selection leave them out.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.store.record import CURVES, DATASET, FORMAT, RECORD_ATTR, SPEC, STAGE, WARM_START_OF, record_format

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.tasks import DatasetSpec, Task

NOT_OURS = "was not created by fusion-hpo (no spec stored with it)"


def is_told(trial: "FrozenTrial") -> bool:
    """Whether ``trial`` is a warm-start copy of an earlier stage's trial (told to the sampler, never trained here)."""
    return WARM_START_OF in trial.user_attrs


def trained(trials) -> list["FrozenTrial"]:
    """``trials`` without the warm-start copies: the trials the study itself trained."""
    return [t for t in trials if not is_told(t)]


def primary_of(spec: dict, n_objectives: int) -> int:
    """The primary objective's index in a recorded spec: the one marked ``primary: true``, else the first
    (the one rule every reader of a stored study uses)."""
    for i, o in enumerate(spec.get("objectives") or []):
        if isinstance(o, dict) and o.get("primary") and i < n_objectives:
            return i
    return 0


def load_stored_study(storage_url: str, study_name: str) -> "optuna.Study":
    """The study ``study_name`` in the store at ``storage_url`` (no heartbeat: a reader)."""
    import optuna

    from hpo.errors import name_rule
    from hpo.spec.urls import redact
    from hpo.store.storage import open_storage

    storage = open_storage(storage_url, heartbeat=False)
    names = [s.study_name for s in storage.get_all_studies()]  # names only: reads no trial
    if study_name not in names:
        raise UsageError(f"{redact(storage_url)}: study {name_rule('study', study_name, names)}, but got {study_name!r}")
    return optuna.load_study(study_name=study_name, storage=storage)


class StoredStudy:
    """What a stored study holds, read on demand (the record once; trials each time they are asked for)."""

    def __init__(self, study: "optuna.Study") -> None:
        self.study = study

    @classmethod
    def open(cls, storage_url: str, name: str) -> "StoredStudy":
        return cls(load_stored_study(storage_url, name))

    @property
    def name(self) -> str:
        return self.study.study_name

    # -- the record ------------------------------------------------------------------------------
    @cached_property
    def record(self) -> dict[str, Any]:
        """The study record with the defaults of older records; ``{}`` for a study fusion-hpo did not create."""
        raw = self.study.user_attrs.get(RECORD_ATTR)
        return {**raw, FORMAT: record_format(raw)} if raw else {}

    def require(self) -> dict[str, Any]:
        """The record, or a UsageError for a study without one."""
        if not self.record:
            raise UsageError(f"study {self.name!r} {NOT_OURS}")
        return self.record

    @property
    def spec(self) -> dict[str, Any]:
        """The spec the study was run with (``{}`` without a record)."""
        return self.record.get(SPEC) or {}

    @property
    def study_file(self) -> str | None:
        """The study file the record was written from, as it was named then."""
        return self.record.get("file")

    @property
    def family(self) -> str | None:
        return (self.spec.get("task") or {}).get("family")

    @property
    def directions(self) -> list[str]:
        """``"minimize"`` / ``"maximize"`` per objective, as Optuna stores them."""
        return [d.name.lower() for d in self.study.directions]

    @property
    def metrics(self) -> list[str]:
        """The objective metric names (``objective i`` where the record does not name as many as the study has)."""
        objectives = self.spec.get("objectives") or ["value"]
        names = [o if isinstance(o, str) else o["metric"] for o in objectives]
        if len(names) != len(self.study.directions):
            return [f"objective {i}" for i in range(len(self.study.directions))]
        return names

    @property
    def primary_index(self) -> int:
        """The primary objective's index (``primary: true`` in the recorded spec, else the first)."""
        return primary_of(self.spec, len(self.study.directions))

    def task_section(self) -> dict[str, Any]:
        """The spec's task section with the dataset as stored (absolute paths): what re-creates the task."""
        task = {k: v for k, v in self.require()[SPEC]["task"].items() if k != "dataset"}
        task["dataset"] = self.record[DATASET]
        return task

    @cached_property
    def task_class(self) -> "type[Task]":
        from hpo.tasks import get_task

        return get_task(self.require()[SPEC]["task"]["family"])

    @property
    def dataset(self) -> "DatasetSpec":
        """The stored dataset, validated as the task's dataset spec."""
        return self.task_class.DatasetSpec.model_validate(self.require()[DATASET])

    def task(self, cache_dir: str = "runs/cache") -> "Task":
        """The study's task on its dataset, caching prepared data under ``cache_dir``."""
        from hpo.data.cache import DataCache

        return self.task_class(self.dataset, self.spec["task"].get("target"), DataCache(cache_dir))

    # -- trials ----------------------------------------------------------------------------------
    def light_trials(self, states=None, without_user_attrs: tuple[str, ...] | None = (CURVES,), *,
                     told: bool = False) -> list["FrozenTrial"]:
        """Every trial without intermediate values and the named user attrs (``None``: without any); the
        warm-start copies of earlier stages' trials (:func:`is_told`) only with ``told``. Only a stage
        study holds such copies: there the user attrs that mark them are read even with ``None``."""
        from hpo.store.storage import light_trials

        if told or not self.staged:
            return light_trials(self.study, states=states, without_user_attrs=without_user_attrs)
        keep = (CURVES,) if without_user_attrs is None else without_user_attrs
        return trained(light_trials(self.study, states=states, without_user_attrs=keep))

    @cached_property
    def staged(self) -> bool:
        """Whether the study is a stage of a staged plan (study user attr ``STAGE``)."""
        return STAGE in self.study.user_attrs

    def full(self, trial: "FrozenTrial") -> "FrozenTrial":
        """``trial`` with everything (read again where it was read light)."""
        from hpo.store.storage import full_trial

        return full_trial(self.study, trial)

    def trials(self, states=None) -> list["FrozenTrial"]:
        """Every trial with everything (not copied: do not change them)."""
        return self.study.get_trials(deepcopy=False, states=states)

    def pareto(self, trials: list["FrozenTrial"]) -> list["FrozenTrial"]:
        """The non-dominated trials among ``trials`` (complete ones, already read; warm-start copies left out)."""
        return pareto_front(trained(trials), self.study.directions)

    def best(self, top: int = 1) -> list["FrozenTrial"]:
        """The top-``top`` complete trials (single objective), or the Pareto-optimal ones (several
        objectives: all of them, or the first ``top`` by number when ``top`` > 1), read whole. Warm-start
        copies of earlier stages' trials are never among them (they were not trained in this study)."""
        from optuna.trial import TrialState

        if top < 1:
            raise UsageError(f"--top must be >= 1, but got {top}")
        done = self.light_trials(states=(TrialState.COMPLETE,), without_user_attrs=None)  # ranked on values only
        if not done:
            raise UsageError(f"study {self.name!r} has no complete trial yet")
        if len(self.study.directions) > 1:
            front = sorted(self.pareto(done), key=lambda t: t.number)
            chosen = front[:top] if top > 1 else front
        else:
            reverse = self.study.direction.name == "MAXIMIZE"
            chosen = sorted(done, key=lambda t: t.value, reverse=reverse)[:top]
        return [self.full(t) for t in chosen]


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
