"""The file formats of search spaces (``search_spaces/*.yaml``) and studies (``studies/*.yaml``).

Structure and types are checked here; rules that relate several keys or need the task (names of
config keys, ranges of baselines, expressions) are checked in :mod:`hpo.spec.compile` and
:mod:`hpo.spec.study`. Each sampler and pruner model names the Optuna class it builds
(``optuna_class``); its fields are that class's keyword arguments, except ``type`` and those listed in
``not_kwargs`` (:func:`hpo.search.build`; the few that need more are in :mod:`hpo.search.special`).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]
Number = Union[StrictInt, StrictFloat]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def type_names(union: Any) -> tuple[str, ...]:
    """The ``type`` tags of a tagged union of models, in declaration order."""
    members = typing.get_args(typing.get_args(union)[0])
    return tuple(typing.get_args(m.model_fields["type"].annotation)[0] for m in members)


class Built(Spec):
    """A section that :func:`hpo.search.build` turns into an instance of ``optuna_class``."""

    optuna_class: ClassVar[str]
    not_kwargs: ClassVar[frozenset[str]] = frozenset({"type"})  # fields that are no constructor argument
    constant_kwargs: ClassVar[dict[str, Any]] = {}  # arguments the file does not set


# --------------------------------------------------------------------------- search space
class FloatParam(Spec):
    """A real number in [low, high] (both inclusive), optionally log-scaled or on a step grid."""

    type: Literal["float"]
    low: Number
    high: Number
    log: StrictBool = False
    step: Optional[Number] = None
    when: Optional[Union[StrictStr, StrictBool]] = None


class IntParam(Spec):
    """An integer in [low, high] (both inclusive), optionally log-scaled or with a step."""

    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    log: StrictBool = False
    step: StrictInt = 1
    when: Optional[Union[StrictStr, StrictBool]] = None


class CategoricalParam(Spec):
    """One of the listed values (any YAML scalars: numbers, strings such as "2,3", booleans)."""

    type: Literal["categorical"]
    choices: list[Scalar]
    when: Optional[Union[StrictStr, StrictBool]] = None


class BoolParam(Spec):
    """true or false."""

    type: Literal["bool"]
    when: Optional[Union[StrictStr, StrictBool]] = None


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam, BoolParam], Field(discriminator="type")]


class ConstraintSpec(Spec):
    expr: StrictStr
    message: Optional[StrictStr] = None


class SearchSpaceSpec(Spec):
    """A search space: sampled ``params`` (in order), ``fixed`` values, ``derived`` expressions,
    ``constraints`` that a sample must meet before training, and named ``baselines``."""

    description: Optional[StrictStr] = None
    params: dict[StrictStr, Param] = {}
    fixed: dict[StrictStr, Any] = {}
    derived: dict[StrictStr, Union[StrictStr, Number, StrictBool]] = {}
    constraints: list[Union[StrictStr, ConstraintSpec]] = []
    baselines: dict[StrictStr, dict[StrictStr, Any]] = {}

    @field_validator("params", mode="before")
    @classmethod
    def _list_shorthand(cls, value: Any) -> Any:
        # `name: [a, b, c]` is shorthand for a categorical parameter
        if isinstance(value, dict):
            return {k: ({"type": "categorical", "choices": v} if isinstance(v, list) else v) for k, v in value.items()}
        return value


# --------------------------------------------------------------------------- samplers
class _Sampler(Built):
    not_kwargs: ClassVar[frozenset[str]] = frozenset({"type", "seed"})  # the seed is one worker's (hpo.search.special)
    seed: Optional[StrictInt] = Field(None, description="sampler seed (default: the study's seed; each worker derives its own from it)")


class TPESampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.TPESampler"
    type: Literal["tpe"]
    n_startup_trials: StrictInt = Field(10, ge=0, description="random trials before TPE models the results")
    n_ei_candidates: StrictInt = Field(24, ge=1, description="candidates drawn per parameter to pick the best expected improvement")
    multivariate: StrictBool = Field(True, description="model the parameters jointly, not one by one")
    group: StrictBool = Field(True, description="model conditional sub-spaces separately (needs multivariate)")
    constant_liar: StrictBool = Field(True, description="treat running trials as bad so parallel workers spread out")


class RandomSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.RandomSampler"
    type: Literal["random"]


class CmaEsSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.CmaEsSampler"
    constant_kwargs: ClassVar[dict[str, Any]] = {"warn_independent_sampling": False}
    type: Literal["cmaes"]
    n_startup_trials: StrictInt = Field(1, ge=0, description="random trials before CMA-ES starts")
    sigma0: Optional[Number] = Field(None, description="initial step size (default: the smallest parameter range / 6)")
    with_margin: StrictBool = Field(False, description="CMA-ES with margin, for integer and discrete parameters")
    use_separable_cma: StrictBool = Field(False, description="diagonal covariance (faster, ignores correlations)")


class GPSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.GPSampler"
    type: Literal["gp"]
    n_startup_trials: StrictInt = Field(10, ge=0, description="random trials before the Gaussian process is fitted")
    deterministic_objective: StrictBool = Field(False, description="the objective has no noise (same config, same value)")


class GridSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.GridSampler"
    type: Literal["grid"]


class NSGA2Sampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.NSGAIISampler"
    type: Literal["nsga2"]
    population_size: StrictInt = Field(50, ge=2, description="configs per generation")
    mutation_prob: Optional[Number] = Field(None, description="probability of mutating a parameter (default: 1 / number of parameters)")
    crossover_prob: Number = Field(0.9, ge=0, le=1, description="probability of a crossover between two parents")
    swapping_prob: Number = Field(0.5, ge=0, le=1, description="probability of swapping a parameter in a crossover")


SamplerSpec = Annotated[
    Union[TPESampler, RandomSampler, CmaEsSampler, GPSampler, GridSampler, NSGA2Sampler],
    Field(discriminator="type"),
]
SAMPLER_TYPES = type_names(SamplerSpec)


# --------------------------------------------------------------------------- pruners
class MedianPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.MedianPruner"
    type: Literal["median"]
    n_startup_trials: StrictInt = Field(5, ge=0, description="trials that finish before any is pruned")
    n_warmup_steps: StrictInt = Field(0, ge=0, description="epochs of each trial before it can be pruned")
    interval_steps: StrictInt = Field(1, ge=1, description="epochs between pruning checks")
    n_min_trials: StrictInt = Field(1, ge=1, description="trials that must have reached an epoch before it is judged")


class PercentilePruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.PercentilePruner"
    type: Literal["percentile"]
    percentile: Number = Field(ge=0, le=100, description="prune below this percentile of the other trials at the same epoch")
    n_startup_trials: StrictInt = Field(5, ge=0, description="trials that finish before any is pruned")
    n_warmup_steps: StrictInt = Field(0, ge=0, description="epochs of each trial before it can be pruned")
    interval_steps: StrictInt = Field(1, ge=1, description="epochs between pruning checks")
    n_min_trials: StrictInt = Field(1, ge=1, description="trials that must have reached an epoch before it is judged")


class SuccessiveHalvingPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.SuccessiveHalvingPruner"
    type: Literal["successive_halving"]
    min_resource: Union[StrictInt, Literal["auto"]] = Field("auto", description="epochs of the first rung (auto: from the first finished trial)")
    reduction_factor: StrictInt = Field(4, ge=2, description="1 in this many trials goes on at each rung")
    min_early_stopping_rate: StrictInt = Field(0, ge=0, description="rungs skipped before the first promotion")
    bootstrap_count: StrictInt = Field(0, ge=0, description="trials a rung needs before it promotes")


class HyperbandPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.HyperbandPruner"
    type: Literal["hyperband"]
    min_resource: StrictInt = Field(1, ge=1, description="epochs of the smallest rung")
    max_resource: Union[StrictInt, Literal["auto"], None] = Field(None, description="epochs of a full trial (default: budget.max_epochs)")
    reduction_factor: StrictInt = Field(3, ge=2, description="1 in this many trials goes on at each rung")
    bootstrap_count: StrictInt = Field(0, ge=0, description="trials a rung needs before it promotes")


class WilcoxonPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.WilcoxonPruner"
    type: Literal["wilcoxon"]
    p_threshold: Number = Field(0.1, gt=0, lt=1, description="prune when the Wilcoxon test against the best trial has p below this")
    n_startup_steps: StrictInt = Field(2, ge=0, description="steps of each trial before it can be pruned")


class ThresholdPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.ThresholdPruner"
    type: Literal["threshold"]
    lower: Optional[Number] = Field(None, description="prune a trial whose value falls below this")
    upper: Optional[Number] = Field(None, description="prune a trial whose value rises above this")
    n_warmup_steps: StrictInt = Field(0, ge=0, description="epochs of each trial before it can be pruned")
    interval_steps: StrictInt = Field(1, ge=1, description="epochs between pruning checks")


class NoPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.NopPruner"
    type: Literal["none"]


class PatientPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.PatientPruner"
    not_kwargs: ClassVar[frozenset[str]] = frozenset({"type", "wrapped"})  # built first (hpo.search.special)
    type: Literal["patient"]
    patience: StrictInt = Field(ge=0, description="epochs without a min_delta improvement before pruning")
    min_delta: Number = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    wrapped: Optional["PrunerSpec"] = Field(None, description="prune only when this pruner also says so")


PrunerSpec = Annotated[
    Union[
        MedianPruner,
        PercentilePruner,
        SuccessiveHalvingPruner,
        HyperbandPruner,
        WilcoxonPruner,
        PatientPruner,
        ThresholdPruner,
        NoPruner,
    ],
    Field(discriminator="type"),
]
PatientPruner.model_rebuild()
PRUNER_TYPES = type_names(PrunerSpec)


# --------------------------------------------------------------------------- study
class TaskSection(Spec):
    family: StrictStr = Field(description="a registered task (hpo keys TASK), e.g. crystal_text, or package.module:TaskClass")
    target: Optional[StrictStr] = Field(None, description="the quantity to predict, when the task needs one")
    dataset: dict[StrictStr, Any] = Field({}, description="the data: format, files and split (checked by the task's own dataset spec)")


class ObjectiveSpec(Spec):
    metric: StrictStr = Field(description="the metric to optimise, e.g. val_mae, train_val_gap")
    direction: Optional[Literal["minimize", "maximize"]] = Field(None, description="default: the metric's natural one")
    primary: StrictBool = Field(False, description="prune, gate and early-stop on this objective (default: the first); the others are recorded and in the Pareto front")


class BudgetSpec(Spec):
    n_trials: Optional[StrictInt] = Field(None, ge=1, description="trials that train (constraint rejections excluded)")
    timeout: Optional[Number] = Field(None, gt=0, description="seconds of wall time per `hpo run`; no trial starts after it")
    max_epochs: Optional[StrictInt] = Field(None, ge=1, description="caps `epochs`; hyperband's max_resource")
    max_consecutive_failures: StrictInt = Field(10, ge=1, description="stop the study when this many trials crash in a row")


class RaySection(Spec):
    address: Optional[StrictStr] = Field(None, description="auto, local or ray://host:port (default: local)")
    scheduler: Literal["asha", "hyperband", "none"] = Field("asha", description="Tune's trial scheduler")
    max_concurrent: Optional[StrictInt] = Field(None, ge=1, description="trials at once (default: as many as the resources allow)")
    cpus_per_trial: Number = Field(1, gt=0, description="CPUs reserved for each trial")
    gpus_per_trial: Number = Field(0, ge=0, description="GPUs reserved for each trial")
    grace_period: StrictInt = Field(1, ge=1, description="epochs before the scheduler may stop a trial")
    reduction_factor: StrictInt = Field(3, ge=2, description="1 in this many trials goes on at each rung")


class FaultToleranceSection(Spec):
    heartbeat_interval: StrictInt = Field(5, ge=1, description="seconds between heartbeats of a running trial")
    grace_period: StrictInt = Field(20, ge=2, description="seconds without a heartbeat before a trial counts as dead")
    max_retry: StrictInt = Field(3, ge=0, description="times a dead worker's trial is re-run with its parameters")


# --------------------------------------------------------------------------- plans (gates, targets, ablations, stages)
class GateSpec(Spec):
    """A rule on a trial's metrics at one epoch ("at epoch 10 continue only if val_mae < 4.0; stop if > 4.5").
    A trial the gate stops is PRUNED with stop reason ``gate`` and the rule in its stop detail."""

    name: Optional[StrictStr] = Field(None, description="the rule's name in stop details and reports (default: gate<N>)")
    epoch: StrictInt = Field(ge=1, description="the epoch (1-based) after which the rule is applied")
    stop_if: Optional[StrictStr] = Field(None, description="stop the trial when this holds, e.g. 'val_mae > 4.5' (names: the epoch's metrics)")
    continue_if: Optional[StrictStr] = Field(None, description="stop the trial unless this holds, e.g. 'val_mae < 4.0'")


class AblationSpec(Spec):
    """One knob at a time around a named baseline, over listed values, optionally times seeds: each run is
    a named trial ``ablation.KNOB=VALUE`` (``.seedS`` with seeds), the baseline itself as ``ablation.baseline``."""

    baseline: StrictStr = Field(description="the baseline (study's or space's) every run changes one knob of")
    knobs: dict[StrictStr, list[Scalar]] = Field(min_length=1, description="config key -> the values to try, one run each")
    seeds: list[StrictInt] = Field([], description="run each (and the baseline) with each of these training seeds (default: the baseline's seed)")


class NarrowSpec(Spec):
    """The stage's space is the previous stage's, narrowed around its best trials (as ``hpo narrow`` does)."""

    top: StrictInt = Field(5, ge=1, description="narrow around this many best trials")
    margin: Number = Field(0.1, ge=0, description="margin around their values, as a fraction of their spread")
    promote: StrictBool = Field(False, description="re-train those top trials first in this stage (at its fidelity)")


class NextRule(Spec):
    """Which stage follows, from the stage's result: the first rule whose ``when`` holds (or that has none) wins."""

    when: Optional[StrictStr] = Field(None, description="an expression over best, previous, baseline, improvement, trials and the target levels (true when met)")
    goto: StrictStr = Field(description="the next stage's name, or end")


class StageSpec(Spec):
    """One stage of a staged study: a study of its own (named STUDY/STAGE in the store) whose keys
    default to the study's; ``training`` and ``budget`` are merged over the study's, the rest replace them."""

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="the stage's name (its study is STUDY/NAME)")
    description: Optional[StrictStr] = Field(None, description="what the stage is for")
    space: Union[StrictStr, SearchSpaceSpec, None] = Field(None, description="the stage's space (a file or inline; default: the study's)")
    narrow: Optional[NarrowSpec] = Field(None, description="narrow the previous stage's space around its best trials instead")
    budget: dict[StrictStr, Any] = Field({}, description="budget keys for this stage, over the study's")
    training: dict[StrictStr, Any] = Field({}, description="config defaults for this stage (its fidelity: epochs, data knobs), over the study's")
    sampler: Optional[SamplerSpec] = Field(None, description="the stage's sampler (default: the study's)")
    pruner: Optional[PrunerSpec] = Field(None, description="the stage's pruner (default: the study's)")
    gates: Optional[list[GateSpec]] = Field(None, description="the stage's gates (default: the study's)")
    baselines: dict[StrictStr, dict[StrictStr, Any]] = Field({}, description="named runs of this stage")
    run_baselines: Union[StrictBool, list[StrictStr], None] = Field(None, description="which of the study's and the space's baselines this stage runs (default: all in the first stage, none later)")
    ablations: Optional[AblationSpec] = Field(None, description="one-knob runs of this stage")
    warm_start: StrictBool = Field(False, description="tell the earlier stages' completed trials to this stage's sampler (not retrained)")
    stop_at_target: Optional[StrictStr] = Field(None, description="end the stage as soon as a trial meets this target level")
    protect_baselines: Optional[StrictBool] = Field(None, description="default: the study's")
    next: list[NextRule] = Field([], description="which stage follows (default: the next in the list; goto: end stops)")


class StudySpec(Spec):
    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="the study's name in the store")
    description: Optional[StrictStr] = Field(None, description="what the study is for, in words (kept in the stored record)")
    task: TaskSection = Field(description="the model family, its target and its dataset")
    space: Union[StrictStr, SearchSpaceSpec] = Field(description="a search space file (relative to the study file) or the space inline")
    objectives: list[Union[StrictStr, ObjectiveSpec]] = Field(min_length=1, description="metrics to optimise (several: a Pareto front)")
    sampler: SamplerSpec = Field(TPESampler(type="tpe"), description="how configs are proposed (type: tpe, random, cmaes, gp, grid, nsga2)")
    pruner: PrunerSpec = Field(MedianPruner(type="median"), description="how poor trials are stopped early (type: median, percentile, ...)")
    budget: BudgetSpec = Field(BudgetSpec(), description="trials, wall time and epochs the study may spend")
    training: dict[StrictStr, Any] = Field({}, description="defaults for config keys (sections train, model, data below; lowest precedence)")
    baselines: dict[StrictStr, dict[StrictStr, Any]] = Field({}, description="the study's named plans, run first, in addition to the space's")
    storage: Optional[StrictStr] = Field(None, description="storage URL (default sqlite:///runs/hpo.db); no password in it")
    artifacts: Optional[StrictStr] = Field(None, description="checkpoint folder (default runs/artifacts)")

    @field_validator("storage")
    @classmethod
    def _no_secret_in_storage(cls, value: Optional[str]) -> Optional[str]:
        # refused when the file is read (`hpo validate` too), before anything opens or prints it;
        # the value shown in the error is redacted (hpo.spec.pydantic_errors)
        if value is not None:
            from hpo.spec.urls import url_rule

            rule = url_rule(value)
            if rule is not None:
                raise ValueError(rule)
        return value
    seed: StrictInt = Field(0, description="sampler seed and default training seed")
    gates: list[GateSpec] = Field([], description="rules on a trial's metrics at an epoch that stop it (recorded as stop reason gate)")
    targets: dict[StrictStr, dict[StrictStr, Number]] = Field({}, description="named success levels, each metric -> threshold, e.g. conservative: {val_mae: 3.8}")
    stop_at_target: Optional[StrictStr] = Field(None, description="end the study as soon as a trial meets this target level")
    ablations: Optional[AblationSpec] = Field(None, description="one knob at a time around a baseline, expanded into named trials")
    run_baselines: Union[StrictBool, list[StrictStr]] = Field(True, description="which of the study's and the space's baselines to run: all, none, or the listed")
    protect_baselines: StrictBool = Field(True, description="baselines and ablation runs train to their own epochs: no pruner or gate stops them")
    stages: list[StageSpec] = Field([], description="a staged plan: stages run in order, each a study STUDY/STAGE")
    backend: Literal["local", "ray"] = Field("local", description="local worker processes or a Ray cluster")
    ray: RaySection = Field(RaySection(), description="the Ray backend's settings")
    fault_tolerance: FaultToleranceSection = Field(FaultToleranceSection(), description="heartbeats and retries of trials whose worker died")
