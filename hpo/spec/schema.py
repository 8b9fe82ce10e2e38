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
    seed: Optional[StrictInt] = None  # default: the study's seed


class TPESampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.TPESampler"
    type: Literal["tpe"]
    n_startup_trials: StrictInt = Field(10, ge=0)
    n_ei_candidates: StrictInt = Field(24, ge=1)
    multivariate: StrictBool = True
    group: StrictBool = True  # model conditional sub-spaces separately (needs multivariate)
    constant_liar: StrictBool = True  # spread out parallel workers


class RandomSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.RandomSampler"
    type: Literal["random"]


class CmaEsSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.CmaEsSampler"
    constant_kwargs: ClassVar[dict[str, Any]] = {"warn_independent_sampling": False}
    type: Literal["cmaes"]
    n_startup_trials: StrictInt = Field(1, ge=0)
    sigma0: Optional[Number] = None
    with_margin: StrictBool = False
    use_separable_cma: StrictBool = False


class GPSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.GPSampler"
    type: Literal["gp"]
    n_startup_trials: StrictInt = Field(10, ge=0)
    deterministic_objective: StrictBool = False


class GridSampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.GridSampler"
    type: Literal["grid"]


class NSGA2Sampler(_Sampler):
    optuna_class: ClassVar[str] = "optuna.samplers.NSGAIISampler"
    type: Literal["nsga2"]
    population_size: StrictInt = Field(50, ge=2)
    mutation_prob: Optional[Number] = None
    crossover_prob: Number = Field(0.9, ge=0, le=1)
    swapping_prob: Number = Field(0.5, ge=0, le=1)


SamplerSpec = Annotated[
    Union[TPESampler, RandomSampler, CmaEsSampler, GPSampler, GridSampler, NSGA2Sampler],
    Field(discriminator="type"),
]
SAMPLER_TYPES = type_names(SamplerSpec)


# --------------------------------------------------------------------------- pruners
class MedianPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.MedianPruner"
    type: Literal["median"]
    n_startup_trials: StrictInt = Field(5, ge=0)
    n_warmup_steps: StrictInt = Field(0, ge=0)
    interval_steps: StrictInt = Field(1, ge=1)
    n_min_trials: StrictInt = Field(1, ge=1)


class PercentilePruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.PercentilePruner"
    type: Literal["percentile"]
    percentile: Number = Field(ge=0, le=100)
    n_startup_trials: StrictInt = Field(5, ge=0)
    n_warmup_steps: StrictInt = Field(0, ge=0)
    interval_steps: StrictInt = Field(1, ge=1)
    n_min_trials: StrictInt = Field(1, ge=1)


class SuccessiveHalvingPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.SuccessiveHalvingPruner"
    type: Literal["successive_halving"]
    min_resource: Union[StrictInt, Literal["auto"]] = "auto"
    reduction_factor: StrictInt = Field(4, ge=2)
    min_early_stopping_rate: StrictInt = Field(0, ge=0)
    bootstrap_count: StrictInt = Field(0, ge=0)


class HyperbandPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.HyperbandPruner"
    type: Literal["hyperband"]
    min_resource: StrictInt = Field(1, ge=1)
    max_resource: Union[StrictInt, Literal["auto"], None] = None  # default: budget.max_epochs
    reduction_factor: StrictInt = Field(3, ge=2)
    bootstrap_count: StrictInt = Field(0, ge=0)


class WilcoxonPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.WilcoxonPruner"
    type: Literal["wilcoxon"]
    p_threshold: Number = Field(0.1, gt=0, lt=1)
    n_startup_steps: StrictInt = Field(2, ge=0)


class ThresholdPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.ThresholdPruner"
    type: Literal["threshold"]
    lower: Optional[Number] = None
    upper: Optional[Number] = None
    n_warmup_steps: StrictInt = Field(0, ge=0)
    interval_steps: StrictInt = Field(1, ge=1)


class NoPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.NopPruner"
    type: Literal["none"]


class PatientPruner(Built):
    optuna_class: ClassVar[str] = "optuna.pruners.PatientPruner"
    not_kwargs: ClassVar[frozenset[str]] = frozenset({"type", "wrapped"})  # built first (hpo.search.special)
    type: Literal["patient"]
    patience: StrictInt = Field(ge=0)
    min_delta: Number = Field(0.0, ge=0)
    wrapped: Optional["PrunerSpec"] = None  # prune only when this pruner also says so


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
    family: StrictStr  # a registered task, e.g. crystal_text
    target: Optional[StrictStr] = None  # the quantity to predict, when the task needs one
    dataset: dict[StrictStr, Any] = {}  # checked by the task's own DatasetSpec


class ObjectiveSpec(Spec):
    metric: StrictStr  # e.g. val_mae, train_val_gap
    direction: Optional[Literal["minimize", "maximize"]] = None  # default: the metric's natural one


class BudgetSpec(Spec):
    n_trials: Optional[StrictInt] = Field(None, ge=1)  # trials that train (constraint rejections excluded)
    timeout: Optional[Number] = Field(None, gt=0)  # seconds of wall time per `hpo run`
    max_epochs: Optional[StrictInt] = Field(None, ge=1)  # caps `epochs`; hyperband's max_resource
    max_consecutive_failures: StrictInt = Field(10, ge=1)  # stop the study when this many crash in a row


class RaySection(Spec):
    address: Optional[StrictStr] = None  # "auto", "local" or ray://host:port; default: local
    scheduler: Literal["asha", "hyperband", "none"] = "asha"
    max_concurrent: Optional[StrictInt] = Field(None, ge=1)
    cpus_per_trial: Number = Field(1, gt=0)
    gpus_per_trial: Number = Field(0, ge=0)
    grace_period: StrictInt = Field(1, ge=1)
    reduction_factor: StrictInt = Field(3, ge=2)


class FaultToleranceSection(Spec):
    heartbeat_interval: StrictInt = Field(5, ge=1)  # seconds between heartbeats of a running trial
    grace_period: StrictInt = Field(20, ge=2)  # seconds without heartbeat before a trial counts as dead
    max_retry: StrictInt = Field(3, ge=0)  # times a dead worker's trial is re-run with its parameters


class StudySpec(Spec):
    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: Optional[StrictStr] = None
    task: TaskSection
    space: Union[StrictStr, SearchSpaceSpec]  # a file (relative to this one) or the space inline
    objectives: list[Union[StrictStr, ObjectiveSpec]] = Field(min_length=1)
    sampler: SamplerSpec = TPESampler(type="tpe")
    pruner: PrunerSpec = MedianPruner(type="median")
    budget: BudgetSpec = BudgetSpec()
    training: dict[StrictStr, Any] = {}  # defaults for training keys (lowest precedence)
    baselines: dict[StrictStr, dict[StrictStr, Any]] = {}  # the study's plans, in addition to the space's
    storage: Optional[StrictStr] = None  # default sqlite:///runs/hpo.db
    artifacts: Optional[StrictStr] = None  # checkpoint folder; default runs/artifacts

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
    seed: StrictInt = 0  # sampler seed and default training seed
    backend: Literal["local", "ray"] = "local"
    ray: RaySection = RaySection()
    fault_tolerance: FaultToleranceSection = FaultToleranceSection()
