"""Training settings common to every task, and :func:`knob`, the way every config field is declared.

Each field is a key that may appear in a study's ``training:`` defaults, a search space's
``params`` / ``fixed`` / ``derived`` / ``baselines``, and an exported config (YAML key = field).
Layer-wise learning rates are the extra keys ``lr_<group>`` for the parameter groups a task declares
(e.g. ``lr_encoder``); they land in :attr:`TrainConfig.group_lr`. A field's one-line help lives in its
metadata (``knob(default, help)``); ``hpo keys TASK`` prints it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, get_args

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
    eval_every: int = knob(1, "evaluate (and report to the pruner) every N epochs")
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
        if problems:
            raise ValueError("; ".join(problems))
