"""Optuna samplers and pruners from a study's ``sampler:`` / ``pruner:`` sections (registries)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from hpo.registry import Registry

if TYPE_CHECKING:
    import optuna

    from hpo.spec.load import Study

SAMPLERS: Registry[Callable[[Any, "Study", int], "optuna.samplers.BaseSampler"]] = Registry("sampler")
PRUNERS: Registry[Callable[[Any, "Study"], "optuna.pruners.BasePruner"]] = Registry("pruner")


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


def build_sampler(study: "Study", worker: int | None = 0, seed: int | None = None) -> "optuna.samplers.BaseSampler":
    """The study's sampler, seeded with ``seed`` (default: :func:`sampler_seed` of ``worker``): each
    worker gets its own so that parallel workers do not propose the same configs."""
    import warnings

    import optuna

    spec = study.spec.sampler
    seed = seed if seed is not None else sampler_seed(study, worker)
    with warnings.catch_warnings():  # `group`, GP and friends are used on purpose
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS.get(spec.type)(spec, study, seed)


def build_pruner(study: "Study") -> "optuna.pruners.BasePruner":
    return _pruner(study.spec.pruner, study)


def _pruner(spec: Any, study: "Study"):
    return PRUNERS.get(spec.type)(spec, study)


@SAMPLERS.register("tpe")
def _tpe(spec, study, seed):
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=spec.n_startup_trials,
        n_ei_candidates=spec.n_ei_candidates,
        multivariate=spec.multivariate,
        group=spec.group and spec.multivariate,
        constant_liar=spec.constant_liar,
    )


@SAMPLERS.register("random")
def _random(spec, study, seed):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("cmaes")
def _cmaes(spec, study, seed):
    import optuna

    return optuna.samplers.CmaEsSampler(
        seed=seed,
        n_startup_trials=spec.n_startup_trials,
        sigma0=spec.sigma0,
        with_margin=spec.with_margin,
        use_separable_cma=spec.use_separable_cma,
        warn_independent_sampling=False,
    )


@SAMPLERS.register("gp")
def _gp(spec, study, seed):
    import optuna

    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=spec.n_startup_trials, deterministic_objective=spec.deterministic_objective
    )


@SAMPLERS.register("grid")
def _grid(spec, study, seed):
    import optuna

    return optuna.samplers.GridSampler(study.space.grid(), seed=seed)


@SAMPLERS.register("nsga2")
def _nsga2(spec, study, seed):
    import optuna

    return optuna.samplers.NSGAIISampler(
        seed=seed,
        population_size=spec.population_size,
        mutation_prob=spec.mutation_prob,
        crossover_prob=spec.crossover_prob,
        swapping_prob=spec.swapping_prob,
    )


@PRUNERS.register("median")
def _median(spec, study):
    import optuna

    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.n_startup_trials,
        n_warmup_steps=spec.n_warmup_steps,
        interval_steps=spec.interval_steps,
        n_min_trials=spec.n_min_trials,
    )


@PRUNERS.register("percentile")
def _percentile(spec, study):
    import optuna

    return optuna.pruners.PercentilePruner(
        spec.percentile,
        n_startup_trials=spec.n_startup_trials,
        n_warmup_steps=spec.n_warmup_steps,
        interval_steps=spec.interval_steps,
        n_min_trials=spec.n_min_trials,
    )


@PRUNERS.register("successive_halving")
def _sha(spec, study):
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.min_resource,
        reduction_factor=spec.reduction_factor,
        min_early_stopping_rate=spec.min_early_stopping_rate,
        bootstrap_count=spec.bootstrap_count,
    )


@PRUNERS.register("hyperband")
def _hyperband(spec, study):
    import optuna

    max_resource = spec.max_resource
    if max_resource is None:  # epochs are the resource: the most a trial may train
        max_resource = study.spec.budget.max_epochs or study.space.defaults.get("epochs") or study.space.fixed.get("epochs") or "auto"
    return optuna.pruners.HyperbandPruner(
        min_resource=spec.min_resource,
        max_resource=max_resource,
        reduction_factor=spec.reduction_factor,
        bootstrap_count=spec.bootstrap_count,
    )


@PRUNERS.register("wilcoxon")
def _wilcoxon(spec, study):
    import optuna

    return optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold, n_startup_steps=spec.n_startup_steps)


@PRUNERS.register("patient")
def _patient(spec, study):
    import optuna

    wrapped = _pruner(spec.wrapped, study) if spec.wrapped is not None else None
    return optuna.pruners.PatientPruner(wrapped, patience=spec.patience, min_delta=spec.min_delta)


@PRUNERS.register("threshold")
def _threshold(spec, study):
    import optuna

    return optuna.pruners.ThresholdPruner(
        lower=spec.lower, upper=spec.upper, n_warmup_steps=spec.n_warmup_steps, interval_steps=spec.interval_steps
    )


@PRUNERS.register("none")
def _none(spec, study):
    import optuna

    return optuna.pruners.NopPruner()
