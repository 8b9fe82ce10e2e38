"""The execution-backend contract: run a whole study to its budget and say how it went.

A backend is given a loaded study and the run's options; it creates or resumes the study in the store
(:func:`hpo.run.study.create_or_load`, :func:`~hpo.run.study.prepare`), runs trials with the shared trial
body (:class:`hpo.run.trial.TrialObjective`) until the budget or the deadline, and returns a
:class:`~hpo.run.options.RunSummary`. ``on_start(info)`` is called once the study is ready (``info``: the
study name, redacted storage, budget, placements, enqueued baselines); ``on_trial(ostudy, frozen_trial)``
after each trial that finished. A backend raises :class:`hpo.errors.HpoError` subclasses for what the user
can fix; it is used from one thread.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from hpo.run.options import RunOptions, RunSummary
    from hpo.spec import Study


class Backend(abc.ABC):
    """Runs studies somewhere (worker processes on this machine, a Ray cluster)."""

    name: str
    progress_bar: bool = False  # whether the CLI draws its progress bar while this backend runs (Ray prints its own)

    @abc.abstractmethod
    def run(self, study: "Study", opts: "RunOptions", *, raw: dict | None = None, on_trial: Callable | None = None,
            on_start: Callable[[dict], None] | None = None) -> "RunSummary":
        """Run ``study`` to its budget (see the module docstring); ``raw``: the study as its YAML
        mapping, for workers that rebuild it (default ``study.raw``)."""
