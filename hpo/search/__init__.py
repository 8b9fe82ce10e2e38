"""Optuna samplers and pruners from a study's ``sampler:`` / ``pruner:`` sections.

Here: :func:`build`, the one generic builder — a schema model (:mod:`hpo.spec.schema`) names its
Optuna class and its fields are the constructor's keyword arguments — and :func:`build_sampler` /
:func:`build_pruner` for a study. :mod:`hpo.search.special` holds what is not a plain field (each
worker's :func:`sampler_seed`, the grid, TPE's group, hyperband's resource, the patient pruner's
wrapped one); :mod:`hpo.search.prune_oracle` the pruning decisions shared by the backends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpo.search.special import KWARGS, sampler_seed

if TYPE_CHECKING:
    import optuna

    from hpo.spec import Study
    from hpo.spec.schema import Built

__all__ = ["build", "build_pruner", "build_sampler", "sampler_seed"]


def build(spec: "Built", study: "Study", **kwargs: Any) -> Any:
    """``spec.optuna_class`` called with the spec's fields (less ``not_kwargs``), its
    ``constant_kwargs``, what :data:`hpo.search.special.KWARGS` computes for its type, and ``kwargs``."""
    module, _, name = spec.optuna_class.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    fields = {k: v for k, v in spec if k not in spec.not_kwargs}
    special = KWARGS[type(spec)](spec, study, build) if type(spec) in KWARGS else {}
    return cls(**{**fields, **spec.constant_kwargs, **special, **kwargs})


def build_sampler(study: "Study", worker: int | None = 0, seed: int | None = None) -> "optuna.samplers.BaseSampler":
    """The study's sampler, seeded with ``seed`` (default: :func:`sampler_seed` of ``worker``): each
    worker gets its own so that parallel workers do not propose the same configs."""
    import warnings

    import optuna

    seed = seed if seed is not None else sampler_seed(study, worker)
    with warnings.catch_warnings():  # `group`, GP and friends are used on purpose
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return build(study.spec.sampler, study, seed=seed)


def build_pruner(study: "Study") -> "optuna.pruners.BasePruner":
    return build(study.spec.pruner, study)
