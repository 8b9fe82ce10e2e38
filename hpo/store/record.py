"""What a study and its trials store: the record schema, stated once.

Every key written to or read from the store is named here (readers and writers import the constant, never
a literal), with its type in :class:`TrialRecord`. The study record (``RECORD_ATTR``) carries a
``format`` version: :data:`FORMAT_VERSION` is written by this code, and any older record still loads
(readers take missing keys as their defaults).

Stop reasons form :class:`StopReason`, a ``str`` enum: a stored ``"pruned"`` equals
``StopReason.PRUNED``, so records written before the enum read the same.
"""

from __future__ import annotations

import enum
from typing import Any, TypedDict

FORMAT_VERSION = 2  # 1: written by the flat-module code (its "format" was 1); 2: this schema (same keys, stated here)

# -- study ---------------------------------------------------------------------------------------
RECORD_ATTR = "fusion_hpo"  # study user attr: the study's record (spec, dataset, format, ...)
FORMAT = "format"  # the record's format version, written by the store when it creates the study (absent: 1)
SPEC = "spec"  # the study file as loaded (space inlined), compared when a stored study is resumed
DATASET = "dataset"
KNOWN_FORMATS = (1, FORMAT_VERSION)  # formats whose ``spec`` reads key by key like this one's


def record_format(record: dict) -> int:
    """The format version of a study record (1 for one written before the schema)."""
    return record.get(FORMAT, 1)


class StopReason(str, enum.Enum):
    """Why a trial ended (user attr ``stop_reason``)."""

    SURPLUS = "surplus"  # started past the budget (a race between workers); did not train
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PRUNED = "pruned"
    DIVERGED = "diverged"  # non-finite loss
    CONSTRAINT = "constraint"  # the config broke a space constraint; did not train
    INVALID_CONFIG = "invalid_config"  # the model refused the config; did not train
    FAILED = "failed"
    OUT_OF_MEMORY = "out_of_memory"
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM; run again when the study resumes
    GATE = "gate"  # a gate's rule stopped it at an epoch (the rule is in stop_detail); PRUNED

    def __str__(self) -> str:
        return self.value


STOP_REASONS = tuple(r.value for r in StopReason)
NOT_TRAINED = (StopReason.CONSTRAINT.value, StopReason.INVALID_CONFIG.value, StopReason.SURPLUS.value)
RERUN = (StopReason.INTERRUPTED.value,)  # stop reasons of trials that are run again

# -- trial user attrs ----------------------------------------------------------------------------
CONFIG = "config"  # the complete explicit config that trained (what export writes)
OVERRIDES = "overrides"  # values fixed on an enqueued trial (baselines, retries)
BASELINE = "baseline"  # the name of the baseline an enqueued trial runs
RERUN_OF = "rerun_of"  # number of the interrupted trial this one runs again
WORKER = "worker"  # host:pid
SAMPLER_SEED = "sampler_seed"  # the seed of the worker's sampler
RAY_NODE = "ray_node"  # the Ray node id a trial ran on (Ray backend)
WORKER_INDEX = "worker_index"  # the worker's number, where it has one (``hpo run`` with one worker: 0)
CURVES = "curves"  # every train/val metric, lr and epoch time per epoch
METRICS = "metrics"  # every metric at the best epoch
BEST_EPOCH = "best_epoch"
EPOCHS_RUN = "epochs_run"
SECONDS = "seconds"
N_PARAMS = "n_params"
DEVICE = "device"
THREADS = "threads"
DIAGNOSIS = "diagnosis"
STOP_REASON = "stop_reason"
STOP_DETAIL = "stop_detail"
CHECKPOINT = "checkpoint"  # artifact id of the best epoch's weights
CHECKPOINT_SHA256 = "checkpoint_sha256"
CHECKPOINT_ERROR = "checkpoint_error"
REEVALUATION = "reevaluation"
ABLATION = "ablation"  # an ablation run: {"knob": key or None for the baseline itself, "value": ..., "seed": ...}
GATE_WAIVED = "gate_waived"  # a protected baseline a gate or the pruner would have stopped: what it said
WARM_START_OF = "warm_start_of"  # a trial told to a stage's sampler from an earlier stage: "STUDY/STAGE#N" (not trained here)
TARGETS_MET = "targets_met"  # study user attr: {level: trial number} when a target level was first met

# -- stage studies (study user attr STAGE) -------------------------------------------------------
STAGE = "stage"  # {"plan": name, "index": i, "name": stage, "state": running|done, "decision": {...}}

# -- trial system attrs (Optuna's) ---------------------------------------------------------------
RETRY_HISTORY = "retry_history"  # RetryHeartbeatStaleTrialCallback: the trials this one retries
FAIL_REASON = "fail_reason"
FAILED_TRIAL = "failed_trial"  # RetryHeartbeatStaleTrialCallback: the stale trial a re-queued one retries


class TrialRecord(TypedDict, total=False):
    """The user attrs of a finished trial (every key optional: a trial stopped early writes fewer)."""

    config: dict[str, Any]
    overrides: dict[str, Any]
    baseline: str
    rerun_of: int
    worker: str
    sampler_seed: int
    worker_index: int
    curves: dict[str, list[float]]
    metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    seconds: float
    n_params: int
    device: str
    threads: int
    diagnosis: list[dict[str, Any]]
    stop_reason: str
    stop_detail: str
    checkpoint: str
    checkpoint_sha256: str
    checkpoint_error: str
    reevaluation: dict[str, Any]


def stop_reason(user_attrs: dict) -> StopReason | None:
    """The trial's stop reason as the enum (None if it has none or an unknown one)."""
    try:
        return StopReason(user_attrs.get(STOP_REASON))
    except ValueError:
        return None
