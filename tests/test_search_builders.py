"""Every sampler and pruner type of the schema builds the Optuna object a hand-written call would.

For each ``type`` in the study schema's ``sampler:`` / ``pruner:`` unions, a spec with non-default values
is built through :func:`hpo.search.build_sampler` / :func:`hpo.search.build_pruner` and compared, attribute
by attribute (recursively, RNG seeds included), with the object built by hand with plain Optuna.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from hpo.search import build_pruner, build_sampler
from hpo.spec.schema import PRUNER_TYPES, SAMPLER_TYPES, StudySpec
from hpo.spec.space import CompiledSpace, ParamDef

SEED = 7


def _study(sampler: dict | None = None, pruner: dict | None = None, *, max_epochs=None, epochs=None) -> SimpleNamespace:
    raw = {"name": "s", "task": {"family": "toy"}, "space": {}, "objectives": ["val_mae"], "seed": SEED,
           "budget": {"max_epochs": max_epochs} if max_epochs else {}}
    if sampler:
        raw["sampler"] = sampler
    if pruner:
        raw["pruner"] = pruner
    params = [ParamDef("lr", "float", 0.1, 0.3, step=0.1), ParamDef("depth", "int", 1, 3), ParamDef("act", "categorical", choices=("a", "b"))]
    space = CompiledSpace(params, defaults={"epochs": epochs} if epochs else {})
    return SimpleNamespace(spec=StudySpec.model_validate(raw), space=space)


def _state(obj, depth: int = 0):
    """A comparable picture of an Optuna object: its attributes, recursively."""
    assert depth < 12
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, (list, tuple)):
        return [type(obj).__name__, *[_state(v, depth + 1) for v in obj]]
    if isinstance(obj, dict):
        return {k: _state(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, np.random.RandomState):
        return ["RandomState", obj.get_state()[1].tolist(), obj.get_state()[2]]
    if isinstance(obj, type) or callable(obj) and not hasattr(obj, "__dict__"):
        return getattr(obj, "__qualname__", repr(obj))
    if hasattr(obj, "__dict__"):
        if type(obj).__module__ == "builtins" or not type(obj).__module__.startswith("optuna"):
            return getattr(obj, "__qualname__", type(obj).__qualname__)
        return [type(obj).__qualname__, {k: _state(v, depth + 1) for k, v in vars(obj).items()}]
    return repr(obj)


def _same(built, expected) -> None:
    assert type(built) is type(expected)
    assert _state(built) == _state(expected)


SAMPLERS = {
    "tpe": ({"type": "tpe", "n_startup_trials": 3, "n_ei_candidates": 5, "multivariate": True, "group": True, "constant_liar": False},
            lambda: optuna.samplers.TPESampler(seed=SEED, n_startup_trials=3, n_ei_candidates=5, multivariate=True, group=True,
                                               constant_liar=False)),
    "random": ({"type": "random"}, lambda: optuna.samplers.RandomSampler(seed=SEED)),
    "cmaes": ({"type": "cmaes", "n_startup_trials": 4, "sigma0": 0.5, "with_margin": True, "use_separable_cma": False},
              lambda: optuna.samplers.CmaEsSampler(seed=SEED, n_startup_trials=4, sigma0=0.5, with_margin=True,
                                                   use_separable_cma=False, warn_independent_sampling=False)),
    "gp": ({"type": "gp", "n_startup_trials": 6, "deterministic_objective": True},
           lambda: optuna.samplers.GPSampler(seed=SEED, n_startup_trials=6, deterministic_objective=True)),
    "grid": ({"type": "grid"},
             lambda: optuna.samplers.GridSampler({"lr": [0.1, 0.2, 0.3], "depth": [1, 2, 3], "act": ["a", "b"]}, seed=SEED)),
    "nsga2": ({"type": "nsga2", "population_size": 8, "mutation_prob": 0.2, "crossover_prob": 0.7, "swapping_prob": 0.4},
              lambda: optuna.samplers.NSGAIISampler(seed=SEED, population_size=8, mutation_prob=0.2, crossover_prob=0.7,
                                                    swapping_prob=0.4)),
}

PRUNERS = {
    "median": ({"type": "median", "n_startup_trials": 2, "n_warmup_steps": 3, "interval_steps": 2, "n_min_trials": 4},
               lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3, interval_steps=2, n_min_trials=4)),
    "percentile": ({"type": "percentile", "percentile": 30, "n_startup_trials": 2, "n_warmup_steps": 3, "interval_steps": 2,
                    "n_min_trials": 4},
                   lambda: optuna.pruners.PercentilePruner(30, n_startup_trials=2, n_warmup_steps=3, interval_steps=2, n_min_trials=4)),
    "successive_halving": ({"type": "successive_halving", "min_resource": 2, "reduction_factor": 3, "min_early_stopping_rate": 1,
                            "bootstrap_count": 1},
                           lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3, min_early_stopping_rate=1,
                                                                          bootstrap_count=1)),
    "hyperband": ({"type": "hyperband", "min_resource": 2, "max_resource": 27, "reduction_factor": 3, "bootstrap_count": 1},
                  lambda: optuna.pruners.HyperbandPruner(min_resource=2, max_resource=27, reduction_factor=3, bootstrap_count=1)),
    "wilcoxon": ({"type": "wilcoxon", "p_threshold": 0.2, "n_startup_steps": 3},
                 lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.2, n_startup_steps=3)),
    "patient": ({"type": "patient", "patience": 3, "min_delta": 0.1, "wrapped": {"type": "median", "n_startup_trials": 2}},
                lambda: optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=2), patience=3, min_delta=0.1)),
    "threshold": ({"type": "threshold", "lower": 0.0, "upper": 5.0, "n_warmup_steps": 1, "interval_steps": 2},
                  lambda: optuna.pruners.ThresholdPruner(lower=0.0, upper=5.0, n_warmup_steps=1, interval_steps=2)),
    "none": ({"type": "none"}, lambda: optuna.pruners.NopPruner()),
}


def test_every_schema_type_is_covered():
    assert sorted(SAMPLERS) == sorted(SAMPLER_TYPES)
    assert sorted(PRUNERS) == sorted(PRUNER_TYPES)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_sampler_is_configured_as_by_hand(kind):
    spec, expected = SAMPLERS[kind]
    _same(build_sampler(_study(sampler=spec)), expected())


@pytest.mark.parametrize("kind", sorted(PRUNERS))
def test_pruner_is_configured_as_by_hand(kind):
    spec, expected = PRUNERS[kind]
    _same(build_pruner(_study(pruner=spec)), expected())


def test_sampler_defaults_and_seeds():
    _same(build_sampler(_study()), optuna.samplers.TPESampler(seed=SEED, n_startup_trials=10, n_ei_candidates=24, multivariate=True,
                                                              group=True, constant_liar=True))
    _same(build_sampler(_study(), worker=2), optuna.samplers.TPESampler(seed=SEED + 2, multivariate=True, group=True, constant_liar=True))
    _same(build_sampler(_study({"type": "random", "seed": 100}), worker=1), optuna.samplers.RandomSampler(seed=101))
    _same(build_sampler(_study({"type": "random"}), seed=5), optuna.samplers.RandomSampler(seed=5))


def test_tpe_group_needs_multivariate():
    spec = {"type": "tpe", "multivariate": False, "group": True}
    _same(build_sampler(_study(spec)), optuna.samplers.TPESampler(seed=SEED, multivariate=False, group=False, constant_liar=True))


def test_cmaes_optional_values_default():
    _same(build_sampler(_study({"type": "cmaes"})),
          optuna.samplers.CmaEsSampler(seed=SEED, n_startup_trials=1, warn_independent_sampling=False))


def test_default_pruner_is_median():
    _same(build_pruner(_study()), optuna.pruners.MedianPruner(n_startup_trials=5))


@pytest.mark.parametrize(("kw", "max_resource"), [({"max_epochs": 12, "epochs": 30}, 12), ({"epochs": 30}, 30), ({}, "auto")])
def test_hyperband_max_resource_defaults_to_the_epochs(kw, max_resource):
    built = build_pruner(_study(pruner={"type": "hyperband"}, **kw))
    _same(built, optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource, reduction_factor=3))


def test_hyperband_max_resource_from_fixed_epochs():
    study = _study(pruner={"type": "hyperband"})
    study.space.fixed["epochs"] = 9
    _same(build_pruner(study), optuna.pruners.HyperbandPruner(max_resource=9))


def test_patient_without_wrapped_pruner():
    _same(build_pruner(_study(pruner={"type": "patient", "patience": 2})), optuna.pruners.PatientPruner(None, patience=2))
