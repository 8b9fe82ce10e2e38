"""The sampler and pruner arguments that a study file does not spell out field by field.

:func:`sampler_seed` gives each worker its own seed. :data:`KWARGS` maps a schema model to a function
``(spec, study, build) -> kwargs`` (``build``: :func:`hpo.search.build`, for nested sections) whose result overrides the generic field-to-argument mapping of
:func:`hpo.search.build`: the grid sampler's grid (from the space), TPE's ``group`` (only with
``multivariate``), hyperband's ``max_resource`` (default: the most epochs a trial may train) and the
patient pruner's wrapped pruner (built first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from hpo.spec.schema import Built, GridSampler, HyperbandPruner, PatientPruner, TPESampler

if TYPE_CHECKING:
    from hpo.spec import Study

Builder = Callable[[Built, "Study"], Any]


def sampler_seed(study: "Study", worker: int | None = 0, identity: str | None = None) -> int:
    """The sampler seed of one worker, derived from the study's (``sampler.seed``, else ``seed``).

    A numbered worker gets ``seed + worker`` (``hpo run`` with one worker: worker 0, the study's own
    seed, reproducible). ``worker=None`` (an ``hpo worker`` process, which cannot know how many
    others serve the study) derives one from the study's seed and this process's identity
    (``host:pid`` and its start time, or ``identity``), so that no two workers draw the same trials.
    """
    import hashlib
    import time

    spec = study.spec.sampler
    base = spec.seed if spec.seed is not None else study.spec.seed
    if worker is not None:
        return base + worker
    if identity is None:
        from hpo.train.setup import worker_id

        identity = f"{worker_id()}@{time.time_ns()}"
    return int.from_bytes(hashlib.sha256(f"{base}/{identity}".encode()).digest()[:4], "big") >> 1


def _grid(spec: GridSampler, study: "Study", build: Builder) -> dict[str, Any]:
    return {"search_space": study.space.grid()}


def _tpe(spec: TPESampler, study: "Study", build: Builder) -> dict[str, Any]:
    return {"group": spec.group and spec.multivariate}


def _hyperband(spec: HyperbandPruner, study: "Study", build: Builder) -> dict[str, Any]:
    if spec.max_resource is not None:
        return {}
    # epochs are the resource: the most a trial may train
    epochs = study.spec.budget.max_epochs or study.space.defaults.get("epochs") or study.space.fixed.get("epochs")
    return {"max_resource": epochs or "auto"}


def _patient(spec: PatientPruner, study: "Study", build: Builder) -> dict[str, Any]:
    return {"wrapped_pruner": build(spec.wrapped, study) if spec.wrapped is not None else None}


KWARGS: dict[type[Built], Callable[[Any, "Study", Builder], dict[str, Any]]] = {
    GridSampler: _grid,
    TPESampler: _tpe,
    HyperbandPruner: _hyperband,
    PatientPruner: _patient,
}
