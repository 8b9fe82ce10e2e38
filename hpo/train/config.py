"""Training settings common to every task, and :func:`knob`, the way every config field is declared.

Each field is a key that may appear in a study's ``training:`` defaults, a search space's
``params`` / ``fixed`` / ``derived`` / ``baselines``, and an exported config (YAML key = field).
Layer-wise learning rates are the extra keys ``lr_<group>`` for the parameter groups a task declares
(e.g. ``lr_encoder``); they land in :attr:`TrainConfig.group_lr`. A field's one-line help lives in its
metadata (``knob(default, help)``); ``hpo keys TASK`` prints it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union, get_args

Scheduler = Literal["onecycle", "cosine", "cosine_warm_restarts", "lambda", "step", "none"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)


def knob(default: Any = dataclasses.MISSING, help: str = "", *,
         default_factory: Callable[[], Any] = dataclasses.MISSING) -> Any:
    """A dataclass field with its one-line help in ``metadata["help"]`` (give ``default`` or ``default_factory``)."""
    if not help:
        raise ValueError("knob(): a config field needs a help text")
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


@dataclass
class TrainConfig:
    epochs: int = knob(100, "maximum number of epochs (a study's budget.max_epochs caps it)")
    batch_size: int = knob(64, "samples per optimizer micro-batch")
    lr: float = knob(1e-3, "peak learning rate (OneCycle's max_lr); groups without lr_<group> use it")
    weight_decay: float = knob(1e-4, "AdamW decoupled weight decay (not applied to biases and norms)")
    beta1: float = knob(0.9, "AdamW beta1 (first-moment decay)")
    beta2: float = knob(0.999, "AdamW beta2 (second-moment decay)")
    scheduler: Scheduler = knob("onecycle", "learning-rate schedule, stepped once per optimizer step: " + ", ".join(SCHEDULERS))
    warmup_steps: int = knob(0, "linear warmup length in optimizer steps (onecycle: sets pct_start)")
    warmup_epochs: int = knob(0, "linear warmup length in epochs; adds up with warmup_steps")
    warmup_lr: Optional[float] = knob(None, "lr at the start of warmup (default lr / 100)")
    pct_start: float = knob(0.3, "onecycle: fraction of the schedule spent rising (when no warmup given)")
    eta_min: float = knob(0.0, "cosine / cosine_warm_restarts: final lr")
    T_0: int = knob(10, "cosine_warm_restarts: first period in epochs")
    T_mult: int = knob(1, "cosine_warm_restarts: period multiplier after each restart")
    step_size: int = knob(30, "step: epochs between decays")
    step_gamma: float = knob(0.1, "step: decay factor")
    lambda_decay: float = knob(0.99, "lambda: lr = lr * lambda_decay ** epoch")
    grad_clip: float = knob(0.0, "max global gradient norm; 0 turns clipping off")
    grad_accum_steps: int = knob(1, "micro-batches per optimizer step (effective batch = product)")
    amp: bool = knob(True, "mixed precision where a GPU is used (bf16 if supported, else fp16); never on CPU")
    patience: int = knob(0, "early stopping: epochs without a min_delta improvement; 0 turns it off")
    min_delta: float = knob(0.0, "early stopping: smallest change that counts as an improvement")
    seed: int = knob(0, "seeds python, numpy and torch; the data split has its own seed")
    deterministic: bool = knob(True, "torch.use_deterministic_algorithms on CPU (bit-exact reruns)")
    train_eval: bool = knob(False, "also evaluate the train split in eval mode each epoch (exact gap)")
    eval_every: int = knob(1, "evaluate (and report to the pruner) every N epochs; the last epoch always")
    val_subset: Optional[Union[int, float]] = knob(
        None, "per-epoch validation on a fixed seeded subset of the val split: a count (int >= 1) or a fraction "
              "(0 < float <= 1); the objective is still the whole split at the best epoch; null: the whole split")
    num_workers: int = knob(0, "DataLoader worker processes")
    group_lr: dict = knob(default_factory=dict, help="learning rate per parameter group, filled from the lr_<group> keys")

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, but got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, but got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, but got {self.lr}")
        if self.grad_accum_steps < 1:
            problems.append(f"grad_accum_steps must be >= 1, but got {self.grad_accum_steps}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler must be one of {', '.join(SCHEDULERS)}, but got {self.scheduler!r}")
        if self.eval_every < 1:
            problems.append(f"eval_every must be >= 1, but got {self.eval_every}")
        problem = _val_subset_problem(self.val_subset)
        if problem:
            problems.append(problem)
        if problems:
            raise ValueError("; ".join(problems))

    def val_subset_problem(self, n_val: int) -> str | None:
        """What is wrong with ``val_subset`` for a val split of ``n_val`` samples (None when nothing): for the
        study's data check, which reads the split sizes before any trial."""
        return val_subset_size_problem(self.val_subset, n_val)

    def val_subset_size(self, n_val: int) -> int | None:
        """How many of the ``n_val`` validation samples the per-epoch values are computed on, or None for the
        whole split (``val_subset`` null, or a subset as large as the split). A fraction rounds to the nearest
        count, at least 1. Raises ``ValueError`` for a count larger than the split."""
        if self.val_subset is None:
            return None
        problem = val_subset_size_problem(self.val_subset, n_val)
        if problem:
            raise ValueError(problem)
        k = self.val_subset if isinstance(self.val_subset, int) else max(1, round(self.val_subset * n_val))
        return None if k >= n_val else k


def _val_subset_problem(value: Any) -> str | None:
    """What is wrong with a ``val_subset`` value on its own (None when nothing)."""
    rule = "val_subset must be null, a count (int >= 1) or a fraction (0 < float <= 1)"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{rule}, but got {value!r}"
    if isinstance(value, int):
        return None if value >= 1 else f"{rule}, but got {value}"
    if not math.isfinite(value) or not 0 < value <= 1:
        hint = " (give a count as an integer)" if math.isfinite(value) and value > 1 else ""
        return f"{rule}{hint}, but got {value}"
    return None


def val_subset_size_problem(value: Any, n_val: int) -> str | None:
    """What is wrong with ``val_subset`` for a validation split of ``n_val`` samples (None when nothing):
    the rule :func:`TrainConfig.val_subset_size` enforces, for checks that read the data before any trial."""
    problem = _val_subset_problem(value)
    if problem or value is None:
        return problem
    if isinstance(value, int) and value > n_val:
        return f"val_subset must be <= the val split's size ({n_val} samples), but got {value}"
    return None
