"""The training loop: one readable function for every task.

    for epoch:  train one pass -> evaluate val -> record curves -> keep best -> early stop -> callback

Early stopping and pruning are different things: early stopping ends a run whose own monitored
val metric has not improved by more than ``min_delta`` for ``patience`` epochs (the run is complete
and its result is the best epoch's); pruning is decided outside, by the ``on_epoch`` callback raising
:class:`hpo.errors.Pruned`.

Validation on a subset (``val_subset``): each evaluated epoch's ``val_*`` values (what ``on_epoch``, the
pruner, gates, early stopping and the curves see) are computed on one fixed subset of the val split, drawn
from ``seed`` alone (the same samples every epoch, and every trial with the same seed); curves then also
hold ``val_samples`` (its size) and ``val_seconds`` (each validation pass's time). A run that completes or
early-stops is then evaluated once on the WHOLE val split with the best epoch's weights: its ``best``
``val_*`` values (the objective) are the whole split's, ``val_samples`` the split's size, and the subset's
values at that epoch are kept as ``val_subset_*`` (``val_subset_samples`` its size). A pruned or diverged
run is not: its ``best`` and its last value stay the subset's (``val_samples`` says so).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from hpo.errors import Pruned
from hpo.train.interrupt import check as check_interrupt
from hpo.train.optim import make_optimizer, make_scheduler, steps_per_epoch
from hpo.train.setup import resolve_device, seed_everything

if TYPE_CHECKING:
    import torch

    from hpo.tasks import Splits, Task
    from hpo.train.config import TrainConfig

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, Mapping[str, float]], None]


@dataclass
class EpochSnapshot:
    """What :func:`fit` hands ``on_epoch_state`` after each epoch it trained to the end (not a diverged
    one): the epoch, its metrics (val ones only on evaluated epochs), the best epoch so far (0 if none)
    and ``state()``, a CPU copy of the model's ``state_dict`` taken when called (so a callback that saves
    nothing this epoch copies nothing)."""

    epoch: int
    metrics: Mapping[str, float]
    best_epoch: int
    state: Callable[[], dict]


EpochStateCallback = Callable[[EpochSnapshot], None]


@dataclass
class FitResult:
    best_epoch: int  # 1-based epoch of the best monitored value (0 if none)
    best: dict[str, float]  # every metric at the best epoch
    curves: dict[str, list]  # metric -> one value per epoch (None where not evaluated)
    epochs_run: int
    stop_reason: str  # completed | early_stopped | pruned | diverged
    stop_detail: str  # a sentence for people
    seconds: float
    n_params: int
    device: str
    best_state: dict | None = field(default=None, repr=False)  # state_dict at the best epoch (CPU)
    final_val_seconds: float = 0.0  # val_subset: the whole-split evaluation of the best epoch (0 without one)


def fit(
    task: "Task",
    splits: "Splits",
    train_cfg: "TrainConfig",
    model_cfg: Any,
    *,
    monitor: str | None = None,
    direction: str = "minimize",
    on_epoch: EpochCallback | None = None,
    device: "str | torch.device | None" = None,
    max_epochs: int | None = None,
    keep_best_state: bool = True,
    on_epoch_state: EpochStateCallback | None = None,
) -> FitResult:
    """Train ``task``'s model for ``model_cfg`` on ``splits`` and return the best epoch's metrics.

    ``monitor`` (default ``val_<first metric>``) drives the best epoch, early stopping and what
    ``on_epoch`` is usually asked about; ``max_epochs`` caps ``train_cfg.epochs``.
    ``on_epoch_state`` (e.g. ``hpo train``'s latest / every-N-epochs checkpoints) gets an
    :class:`EpochSnapshot` after every epoch that did not diverge, before ``on_epoch`` may prune it;
    without it training is unchanged.
    """
    import torch

    t_start = time.perf_counter()
    cfg = train_cfg
    dev = resolve_device(device if device is not None else "auto")
    seed_everything(cfg.seed, deterministic=cfg.deterministic and dev.type == "cpu")
    monitor = monitor or f"val_{next(iter(task.metrics))}"
    sign = 1.0 if direction == "minimize" else -1.0
    epochs = min(cfg.epochs, max_epochs) if max_epochs else cfg.epochs

    model = task.build_model(model_cfg, splits).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    train_loader = task.loader(splits, "train", cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = task.loader(splits, "val", cfg.batch_size, shuffle=False)
    n_val = splits.size("val")
    n_sub = cfg.val_subset_size(n_val)  # None: every epoch validates on the whole split
    if n_sub is not None:
        subset = _ValSubsetSplits(splits, subset_indices(n_val, n_sub, cfg.seed))
        watch_loader = task.loader(subset, "val", cfg.batch_size, shuffle=False)
        logger.debug("validating each epoch on %d of the %d val samples (val_subset=%s)", n_sub, n_val, cfg.val_subset)
    else:
        watch_loader = val_loader
    train_eval_loader = task.loader(splits, "train", cfg.batch_size, shuffle=False) if cfg.train_eval else None
    optimizer = make_optimizer(task.group_parameters(model), cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch(len(train_loader), cfg.grad_accum_steps), epochs)

    use_amp = cfg.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    autocast = lambda: torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp)  # noqa: E731

    primary = next(iter(task.metrics))
    curves: dict[str, list] = defaultdict(list)
    best_value, best_epoch, best_metrics, best_state = math.inf, 0, {}, None
    es_ref, es_epoch = math.inf, 0  # early stopping: value and epoch of the last significant improvement
    stop_reason, stop_detail, epoch = "completed", "", 0

    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        # ---- train ----
        model.train()
        loss_sum, n_seen, preds, targets = None, 0, [], []
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(train_loader):
            check_interrupt()
            batch = _to_device(batch, dev)
            with autocast():
                out = task.step(model, batch, train=True)
            scaler.scale(out.loss / cfg.grad_accum_steps).backward()
            if (i + 1) % cfg.grad_accum_steps == 0 or i + 1 == len(train_loader):
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            weighted = out.loss.detach().float() * out.n
            loss_sum = weighted if loss_sum is None else loss_sum + weighted
            n_seen += out.n
            if not cfg.train_eval:
                preds.append(out.pred)
                targets.append(out.target)
        train_loss = float(loss_sum) / max(1, n_seen) if loss_sum is not None else math.nan
        metrics: dict[str, float] = {"train_loss": train_loss}
        if cfg.train_eval:  # exact train metrics: eval mode, no dropout; the running loss is kept too
            metrics.update(_evaluate(task, model, train_eval_loader, dev, autocast, "train"))
            metrics["train_running_loss"] = train_loss
        else:
            metrics.update({f"train_{k}": v for k, v in task.compute_metrics(_cat(preds), _cat(targets)).items()})
        del preds, targets
        if not math.isfinite(train_loss):
            stop_reason, stop_detail = "diverged", f"non-finite training loss ({train_loss}) at epoch {epoch}"
            _record(curves, metrics, epoch, optimizer, time.perf_counter() - t0)
            break

        # ---- evaluate ----
        evaluated = epoch % cfg.eval_every == 0 or epoch == epochs
        timing: dict[str, float] = {}
        if evaluated:
            t_val = time.perf_counter()
            metrics.update(_evaluate(task, model, watch_loader, dev, autocast, "val"))
            _add_gaps(metrics, primary)
            if n_sub is not None:  # the curves say what each epoch's val_* values are on, and what it cost
                metrics["val_samples"] = n_sub
                timing["val_seconds"] = round(time.perf_counter() - t_val, 4)
        _record(curves, {**metrics, **timing}, epoch, optimizer, time.perf_counter() - t0)
        if not evaluated:
            _snapshot(on_epoch_state, model, epoch, metrics, best_epoch)
            continue
        if monitor not in metrics:
            raise KeyError(f"monitored metric {monitor!r} is not among {sorted(metrics)}")
        value = sign * metrics[monitor]
        if not math.isfinite(value):
            stop_reason, stop_detail = "diverged", f"non-finite {monitor} ({metrics[monitor]}) at epoch {epoch}"
            break
        if value < best_value:
            best_value, best_epoch, best_metrics = value, epoch, dict(metrics)
            if keep_best_state or n_sub is not None:  # a subset run evaluates the best weights at the end
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if value < es_ref - cfg.min_delta or es_epoch == 0:
            es_ref, es_epoch = value, epoch
        logger.debug("epoch %d %s", epoch, {k: round(v, 5) for k, v in metrics.items() if isinstance(v, float)})
        _snapshot(on_epoch_state, model, epoch, metrics, best_epoch)
        if on_epoch is not None:
            try:
                on_epoch(epoch, metrics)
            except Pruned as p:
                stop_reason, stop_detail = "pruned", str(p)
                break
        if cfg.patience and epoch - es_epoch >= cfg.patience:
            stop_reason = "early_stopped"
            stop_detail = (f"early stopped at epoch {epoch}: {monitor} did not improve by more than "
                           f"{cfg.min_delta:g} for {cfg.patience} epochs (best at epoch {best_epoch})")
            break

    if stop_reason == "completed":
        stop_detail = f"completed {epoch} epochs (best at epoch {best_epoch})"
    final_val_seconds = 0.0
    if n_sub is not None and stop_reason in ("completed", "early_stopped") and best_state is not None:
        t_val = time.perf_counter()  # the reported values: the best epoch's weights on the whole val split
        model.load_state_dict(best_state)
        best_metrics = _whole_split_best(best_metrics, _evaluate(task, model, val_loader, dev, autocast, "val"),
                                         primary, n_val)
        final_val_seconds = time.perf_counter() - t_val
    return FitResult(
        best_epoch=best_epoch,
        best=best_metrics,
        curves=dict(curves),
        epochs_run=epoch,
        stop_reason=stop_reason,
        stop_detail=stop_detail,
        seconds=time.perf_counter() - t_start,
        n_params=n_params,
        device=str(dev),
        best_state=best_state if keep_best_state else None,
        final_val_seconds=round(final_val_seconds, 4),
    )


def _add_gaps(metrics: dict[str, float], primary: str) -> None:
    """The train-vs-val metrics of one evaluated epoch (in place), from its train_* and val_* values."""
    tr, va = metrics.get(f"train_{primary}"), metrics.get(f"val_{primary}")
    if tr is not None and va is not None:
        metrics["train_val_gap"] = va - tr
        metrics["val_train_ratio"] = va / tr if tr != 0 else math.inf
    if metrics.get("train_loss"):  # the plans' overfitting rule for any metric: val/train loss
        metrics["val_train_loss_ratio"] = metrics["val_loss"] / metrics["train_loss"]


def _whole_split_best(on_subset: Mapping[str, float], whole: Mapping[str, float], primary: str, n_val: int) -> dict:
    """The best epoch's metrics with every ``val_*`` value (and the train-vs-val ones) from the whole split;
    the subset's are kept as ``val_subset_*``."""
    gaps = ("train_val_gap", "val_train_ratio", "val_train_loss_ratio")
    kept = {k: v for k, v in on_subset.items() if not k.startswith("val_") and k not in gaps}
    subset = {f"val_subset_{k[4:]}": v for k, v in on_subset.items() if k in whole}
    best = {**kept, **whole}
    _add_gaps(best, primary)
    return {**best, "val_samples": n_val, **subset, "val_subset_samples": on_subset["val_samples"]}


def subset_indices(n: int, k: int, seed: int):
    """The ``k`` of ``n`` validation indices a ``val_subset`` run validates on each epoch: a uniform draw
    from a generator of its own seeded with ``seed`` (the training RNG streams are untouched), in split
    order. The same (n, k, seed) give the same indices; a smaller k gives a subset of a larger one's."""
    import numpy as np

    return np.sort(np.random.default_rng(seed % 2**32).permutation(n)[:k])


class _ValSubsetSplits:
    """``splits`` as a task's ``loader`` sees them, with the val part cut to ``indices`` (:func:`take`);
    every other part and attribute is the original's."""

    def __init__(self, splits: "Splits", indices) -> None:
        self._splits, self._val, self.info = splits, take(splits["val"], indices), splits.info

    def __getitem__(self, name: str) -> Any:
        return self._val if name == "val" else self._splits[name]

    def size(self, name: str) -> int:
        return len(self._val) if name == "val" else self._splits.size(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._splits, name)


def take(part: Any, indices) -> Any:
    """The items ``indices`` (sorted, 0-based) of one split part, as the same kind of part where possible:

    - a part with a ``subset(indices)`` method: its answer (the way for a family whose part is none of the below);
    - a dataclass whose array fields hold one row per item (``PairSet``, ``FaceSet``): those rows;
    - a part read through ``batch(idx)`` (windows): a view whose k-th item is the part's ``indices[k]``;
    - a sequence or map-style dataset (a list of graphs, a ``TensorDataset``): a ``torch.utils.data.Subset``.

    Anything else raises ``TypeError`` naming its type."""
    import dataclasses

    import numpy as np
    import torch

    if callable(getattr(part, "subset", None)):
        return part.subset(indices)
    n = len(part)
    if dataclasses.is_dataclass(part) and not isinstance(part, type):
        rows = {f.name: getattr(part, f.name) for f in dataclasses.fields(part)}
        rows = {k: v for k, v in rows.items() if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim and len(v) == n}
        if rows:
            idx = torch.as_tensor(indices, dtype=torch.long)
            return dataclasses.replace(part, **{k: v[indices] if isinstance(v, np.ndarray) else v[idx]
                                                for k, v in rows.items()})
    if callable(getattr(part, "batch", None)):
        return _BatchView(part, torch.as_tensor(indices, dtype=torch.long))
    if hasattr(part, "__getitem__"):
        return torch.utils.data.Subset(part, [int(i) for i in indices])
    raise TypeError(f"val_subset: the val split ({type(part).__name__}) cannot be cut to a subset; give it a "
                    "subset(indices) method, or set val_subset: null")


class _BatchView:
    """Items ``indices`` of a part read through ``batch(idx)``: item k is the part's ``indices[k]``."""

    def __init__(self, part: Any, indices) -> None:
        self.part, self.indices = part, indices

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, idx) -> Any:
        return self.part.batch(self.indices[idx])


def _snapshot(callback: EpochStateCallback | None, model, epoch: int, metrics: Mapping[str, float], best_epoch: int) -> None:
    """Hand ``callback`` this epoch's :class:`EpochSnapshot` (nothing when there is no callback)."""
    if callback is None:
        return

    def state() -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    callback(EpochSnapshot(epoch=epoch, metrics=dict(metrics), best_epoch=best_epoch, state=state))


def _evaluate(task, model, loader, dev, autocast, prefix: str) -> dict[str, float]:
    import torch

    model.eval()
    loss_sum, n_seen, preds, targets = 0.0, 0, [], []
    with torch.no_grad():
        for batch in loader:
            check_interrupt()  # a long validation pass stops within a batch too
            batch = _to_device(batch, dev)
            with autocast():
                out = task.step(model, batch, train=False)
            loss_sum += float(out.loss) * out.n
            n_seen += out.n
            preds.append(out.pred)
            targets.append(out.target)
    metrics = {f"{prefix}_loss": loss_sum / max(1, n_seen)}
    metrics.update({f"{prefix}_{k}": v for k, v in task.compute_metrics(_cat(preds), _cat(targets)).items()})
    return metrics


def evaluate(task: "Task", model, splits: "Splits", split: str, batch_size: int, device=None) -> dict[str, float]:
    """Metrics of ``model`` on one split (eval mode, no gradients); used by re-evaluation."""
    import contextlib

    dev = resolve_device(device)
    model = model.to(dev)
    loader = task.loader(splits, split, batch_size, shuffle=False)
    return _evaluate(task, model, loader, dev, contextlib.nullcontext, split)


def predict(task: "Task", model, splits: "Splits", split: str, batch_size: int, device=None):
    """Concatenated (pred, target) of ``model`` over one split."""
    import torch

    dev = resolve_device(device)
    model = model.to(dev).eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in task.loader(splits, split, batch_size, shuffle=False):
            out = task.step(model, _to_device(batch, dev), train=False)
            preds.append(out.pred)
            targets.append(out.target)
    return _cat(preds), _cat(targets)


def _record(curves: dict, metrics: Mapping[str, float], epoch: int, optimizer, seconds: float) -> None:
    curves["epoch"].append(epoch)
    curves["lr"].append(optimizer.param_groups[0]["lr"])
    curves["epoch_seconds"].append(round(seconds, 4))
    names = set(metrics) | {k for k in curves if k not in ("epoch", "lr", "epoch_seconds")}
    for name in names:
        if name not in curves:
            curves[name] = [None] * (len(curves["epoch"]) - 1)
        v = metrics.get(name)
        curves[name].append(float(v) if v is not None and math.isfinite(v) else None)


def _to_device(batch: Any, dev) -> Any:
    if dev.type == "cpu":
        return batch
    if hasattr(batch, "to"):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, dev) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, dev) for v in batch)
    return batch


def _cat(parts: list) -> Any:
    import torch

    if not parts:
        return torch.empty(0)
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([p.detach().float() for p in parts], dim=0).cpu()
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, Mapping):
        return {k: _cat([p[k] for p in parts]) for k in first}
    raise TypeError(f"cannot concatenate predictions of type {type(first).__name__}")
