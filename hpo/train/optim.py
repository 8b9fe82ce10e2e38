"""AdamW with (optional) layer-wise learning rates, and the learning-rate schedules."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

    from hpo.train.config import TrainConfig


def make_optimizer(groups: dict[str, Iterable], cfg: "TrainConfig") -> "torch.optim.AdamW":
    """AdamW over named parameter groups. Each group's lr is ``cfg.group_lr[name]`` or ``cfg.lr``;
    weight decay applies to matrices only (biases, norms and embeddings' 1-D params are exempt)."""
    import torch

    param_groups = []
    seen: set[int] = set()
    for name, params in groups.items():
        params = [p for p in params if p.requires_grad]
        for p in params:
            if id(p) in seen:
                raise ValueError(f"parameter in two groups (second: {name!r})")
            seen.add(id(p))
        lr = cfg.group_lr.get(name, cfg.lr)
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        if decay:
            param_groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay, "name": name})
        if no_decay:
            param_groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def make_scheduler(optimizer, cfg: "TrainConfig", steps_per_epoch: int, epochs: int):
    """A scheduler stepped once per optimizer step, with optional linear warmup.

    - ``onecycle``: OneCycleLR to each group's lr; warmup (steps + epochs) sets ``pct_start``.
    - ``cosine``: cosine decay to ``eta_min`` over the steps after warmup.
    - ``cosine_warm_restarts``: restarts every ``T_0`` epochs, periods times ``T_mult``.
    - ``lambda``: ``lr * lambda_decay ** epoch``.  ``step``: times ``step_gamma`` every ``step_size`` epochs.
    - ``none``: constant.
    """
    from torch.optim import lr_scheduler as S

    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, cfg.warmup_steps + cfg.warmup_epochs * steps_per_epoch)
    if cfg.scheduler == "onecycle":
        if total < 4:  # too few steps for a cycle (torch's OneCycleLR divides by zero): constant lr
            return S.LambdaLR(optimizer, lambda step: 1.0)
        pct = warmup / total if warmup > 0 else cfg.pct_start
        pct = min(max(pct, 2.0 / total), 0.9)  # each phase at least two steps
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        return S.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total, pct_start=pct, anneal_strategy="cos")
    spe = max(1, steps_per_epoch)
    if cfg.scheduler == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=cfg.eta_min)
    elif cfg.scheduler == "cosine_warm_restarts":
        main = S.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, cfg.T_0 * spe), T_mult=cfg.T_mult, eta_min=cfg.eta_min)
    elif cfg.scheduler == "lambda":
        decay = cfg.lambda_decay
        main = S.LambdaLR(optimizer, lambda step: decay ** (step // spe))
    elif cfg.scheduler == "step":
        main = S.StepLR(optimizer, step_size=max(1, cfg.step_size * spe), gamma=cfg.step_gamma)
    elif cfg.scheduler == "none":
        main = S.LambdaLR(optimizer, lambda step: 1.0)
    else:  # TrainConfig validates the name
        raise ValueError(cfg.scheduler)
    if warmup <= 0:
        return main
    base = cfg.lr
    start = (cfg.warmup_lr if cfg.warmup_lr is not None else base / 100) / base
    start = min(max(start, 1e-8), 1.0)
    warm = S.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def steps_per_epoch(n_batches: int, accum: int) -> int:
    return max(1, math.ceil(n_batches / max(1, accum)))
