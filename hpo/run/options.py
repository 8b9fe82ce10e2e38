"""What a run is asked to do, and every study fact it needs, resolved once.

:class:`RunOptions` is what the command line (or a script) passes; :func:`resolve` turns it and the study
into :class:`Resolved`: the storage URL, the study name, the budget (``n_trials`` / ``timeout`` from the
options, else the study's ``budget:``), the epoch cap and the heartbeat settings. Both backends, the worker
loop and ``hpo train`` read these facts from here and nowhere else. :class:`RunSummary` is what a run
returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from hpo.errors import UsageError
from hpo.run.budget import Budget

if TYPE_CHECKING:
    from hpo.spec import Study


@dataclass
class RunOptions:
    storage: str | None = None  # default: the study's storage, else sqlite:///runs/hpo.db
    study_name: str | None = None  # default: the study's name
    n_trials: int | None = None  # default: budget.n_trials
    timeout: float | None = None  # default: budget.timeout (seconds; no new trial starts after it)
    workers: int | None = None  # default: one per GPU where there are GPUs, else 1
    gpus: Sequence[str] | None = None  # GPU ids to use (default: all visible)
    device: str | None = None  # force a device ("cpu", "cuda"); default auto
    artifacts: str | None = None  # checkpoint folder
    cache_dir: str = "runs/cache"  # processed data cache
    checkpoints: bool = True
    threads: int | None = None  # torch CPU threads per worker (default: cores // workers)
    resume_changed: bool = False  # continue a stored study whose task/dataset/objectives/space differ


@dataclass
class RunSummary:
    study_name: str
    storage: str
    budget: Budget
    seconds: float
    stopped_because: str
    best: list[dict] = field(default_factory=list)  # best (or Pareto-optimal) trials: number, values, baseline
    cache: Any = None  # the data cache's CacheStats of an in-process run (None with worker processes)
    targets: list[dict] = field(default_factory=list)  # one row per target level (hpo.run.targets.targets_met)


@dataclass(frozen=True)
class Heartbeat:
    """A study's heartbeat settings (``fault_tolerance:``), as :func:`hpo.store.storage.open_storage` takes them."""

    heartbeat_interval: int
    grace_period: int
    max_retry: int


@dataclass(frozen=True)
class Resolved:
    """The facts of one run of a study (see :func:`resolve`)."""

    storage_url: str
    study_name: str
    n_trials: int | None
    timeout: float | None

    @property
    def finished_because(self) -> str:
        """Why a run that went to its end stopped: its trial budget, else its deadline."""
        return "budget" if self.n_trials is not None else "timeout"


def resolve(study: "Study", opts: RunOptions) -> Resolved:
    """The run's storage, study name and budget: from ``opts`` where given, else from the study.
    Raises :class:`~hpo.errors.UsageError` when neither sets a budget."""
    n_trials = opts.n_trials if opts.n_trials is not None else study.spec.budget.n_trials
    timeout = opts.timeout if opts.timeout is not None else study.spec.budget.timeout
    if n_trials is None and timeout is None:
        raise UsageError(f"{study.file}: no budget: set budget.n_trials or budget.timeout, or pass --trials / --timeout")
    return Resolved(study.storage_url(opts.storage), opts.study_name or study.name, n_trials, timeout)


def heartbeat(study: "Study") -> Heartbeat:
    ft = study.spec.fault_tolerance
    return Heartbeat(ft.heartbeat_interval, ft.grace_period, ft.max_retry)


def max_epochs(study: "Study") -> int | None:
    """The study's cap on ``epochs`` (``budget.max_epochs``), None without one."""
    return study.spec.budget.max_epochs


def epochs_ceiling(study: "Study") -> int:
    """The most epochs a trial of the study trains: the cap, else the space's ``epochs``, else 100."""
    return max_epochs(study) or int(study.space.defaults.get("epochs") or study.space.fixed.get("epochs") or 100)


def cap_epochs(config: dict, cap: int | None, task_cls: Any) -> dict:
    """Apply the epoch cap to a config in place (the cap is part of what trained: schedules depend on it)."""
    if cap and config.get("epochs", task_cls.config_fields()["epochs"][1].default) > cap:
        config["epochs"] = cap
    return config
