"""Training settings common to every task.

Each field is a key that may appear in a study's ``training:`` defaults, a search space's
``params`` / ``fixed`` / ``derived`` / ``baselines``, and an exported config (YAML key = field).
Layer-wise learning rates are the extra keys ``lr_<group>`` for the parameter groups a task declares
(e.g. ``lr_encoder``); they land in :attr:`TrainConfig.group_lr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

SCHEDULERS = ("onecycle", "cosine", "cosine_warm_restarts", "lambda", "step", "none")
Scheduler = Literal["onecycle", "cosine", "cosine_warm_restarts", "lambda", "step", "none"]


@dataclass
class TrainConfig:
    epochs: int = 100  # maximum number of epochs (a study's budget.max_epochs caps it)
    batch_size: int = 64  # samples per optimizer micro-batch
    lr: float = 1e-3  # peak learning rate (OneCycle's max_lr); groups without lr_<group> use it
    weight_decay: float = 1e-4  # AdamW decoupled weight decay (not applied to biases and norms)
    beta1: float = 0.9  # AdamW betas
    beta2: float = 0.999
    scheduler: Scheduler = "onecycle"  # one of SCHEDULERS; stepped once per optimizer step
    warmup_steps: int = 0  # linear warmup length in optimizer steps (onecycle: sets pct_start)
    warmup_epochs: int = 0  # the same in epochs; the two add up
    warmup_lr: Optional[float] = None  # lr at the start of warmup (default lr / 100)
    pct_start: float = 0.3  # onecycle: fraction of the schedule spent rising (when no warmup given)
    eta_min: float = 0.0  # cosine / cosine_warm_restarts: final lr
    T_0: int = 10  # cosine_warm_restarts: first period in epochs
    T_mult: int = 1  # cosine_warm_restarts: period multiplier after each restart
    step_size: int = 30  # step: epochs between decays
    step_gamma: float = 0.1  # step: decay factor
    lambda_decay: float = 0.99  # lambda: lr = lr * lambda_decay ** epoch
    grad_clip: float = 0.0  # max global gradient norm; 0 turns clipping off
    grad_accum_steps: int = 1  # micro-batches per optimizer step (effective batch = product)
    amp: bool = True  # mixed precision where a GPU is used (bf16 if supported, else fp16); never on CPU
    patience: int = 0  # early stopping: epochs without a min_delta improvement; 0 turns it off
    min_delta: float = 0.0  # early stopping: smallest change that counts as an improvement
    seed: int = 0  # seeds python, numpy and torch; the data split has its own seed
    deterministic: bool = True  # torch.use_deterministic_algorithms on CPU (bit-exact reruns)
    train_eval: bool = False  # also evaluate the train split in eval mode each epoch (exact gap)
    eval_every: int = 1  # evaluate (and report to the pruner) every N epochs
    num_workers: int = 0  # DataLoader worker processes
    group_lr: dict = field(default_factory=dict)  # filled from lr_<group> keys

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
