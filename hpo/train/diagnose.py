"""Read a trial's train/val curves the way the seed plans' authors did by hand, and name the knobs
the plans use against what is found.

Per trial (from its stored ``curves``, ``config`` and ``stop_reason``):

- ``overfitting``: at the best epoch, val/train of the primary metric (or of the loss when the metric
  is maximised, e.g. cosine similarity) above ``overfit_ratio`` (the plans' 1.5: "train MAE 0.05 vs val
  0.40 is 8x overfitting"); ``room_to_regularize_less`` below ``underfit_ratio`` (the plans' 1.2);
- ``plateau``: the epoch after which the monitored val metric never improved by more than
  ``min_delta``; ``wasted_epochs``: epochs trained after plateau + patience ("flat after epoch 100 but
  trained 800 epochs: early stopping never fired");
- ``diverged``: non-finite loss or metric;
- ``underfitting`` (needs the study, so it is found by :func:`hpo.analysis.diagnosis.diagnose_study`): the
  train metric at the best epoch much worse than the study's best train metric.

Diagnoses are plain dicts (JSON in the store): ``kind``, ``message``, ``evidence`` and ``knobs`` (config
keys of the trial that the plans turn against this kind).
"""

from __future__ import annotations

import fnmatch
import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Thresholds:
    overfit_ratio: float = 1.5  # val/train above this: overfitting (plans 000, 003)
    underfit_ratio: float = 1.2  # val/train below this: room to lower regularisation (plan 003)
    plateau_min_delta: float | None = None  # default: the trial's min_delta, else 0.1 % of the best value
    underfit_factor: float = 1.5  # train metric worse than this times the study's best train metric


# What the plans turn against each finding, as glob patterns over config keys.
KNOBS: dict[str, tuple[str, ...]] = {
    "overfitting": ("*dropout*", "weight_decay", "*drop_path*", "stochastic_depth_rate", "mixup_alpha", "noise_std",
                    "mask_ratio", "text_deletion_prob", "hidden*", "*_hidden_dim", "*features", "embed_dim", "d_model",
                    "feature_dim", "*layers", "*depth*", "patience"),
    "room_to_regularize_less": ("*dropout*", "weight_decay"),
    "underfitting": ("hidden*", "*_hidden_dim", "*features", "embed_dim", "d_model", "feature_dim", "*layers", "*depth*",
                     "lr", "epochs", "*dropout*", "weight_decay"),
    "plateau": ("lr", "scheduler", "eta_min", "T_0", "T_mult", "warmup_steps", "warmup_epochs", "patience"),
    "wasted_epochs": ("patience", "min_delta", "epochs"),
    "diverged": ("lr", "lr_*", "warmup_steps", "warmup_epochs", "grad_clip", "batch_size"),
}


def knobs_for(kind: str, keys: Iterable[str]) -> list[str]:
    return list(_knobs_for(kind, tuple(sorted(set(keys)))))


@functools.lru_cache(maxsize=256)
def _knobs_for(kind: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for pattern in KNOBS.get(kind, ()):
        for k in keys:
            if fnmatch.fnmatchcase(k, pattern) and k not in out:
                out.append(k)
    return tuple(out)


def diagnose_curves(
    curves: Mapping[str, Sequence[Any]],
    *,
    metric: str,
    direction: str,
    config: Mapping[str, Any] | None = None,
    stop_reason: str | None = None,
    thresholds: Thresholds = Thresholds(),
) -> list[dict]:
    """Diagnoses of one trial. ``metric`` is the monitored metric without prefix (e.g. ``mae``)."""
    config = dict(config or {})
    keys = set(config) | train_keys()
    val = _series(curves.get(f"val_{metric}"))
    train = _series(curves.get(f"train_{metric}"))
    epochs = [int(e) for e in _series(curves.get("epoch")) if e is not None] or [i + 1 for i in range(len(val))]
    out: list[dict] = []
    sign = 1.0 if direction == "minimize" else -1.0

    finite_val = [(e, v) for e, v in zip(epochs, val) if v is not None and math.isfinite(v)]
    nonfinite = stop_reason == "diverged" or any(
        v is not None and not math.isfinite(v) for name in ("train_loss", "val_loss", f"val_{metric}") for v in _series(curves.get(name))
    )
    if nonfinite:
        out.append(finding("diverged", "training diverged (non-finite loss or metric)", {"stop_reason": stop_reason}, keys))
    if not finite_val:
        return out
    best_epoch, best = min(finite_val, key=lambda ev: sign * ev[1])
    idx = epochs.index(best_epoch)

    # overfitting: val/train of the metric when lower is better, else of the loss
    ratio_name, tr, va = None, None, None
    if direction == "minimize" and idx < len(train) and train[idx] not in (None, 0):
        ratio_name, tr, va = metric, train[idx], val[idx]
    else:
        tl, vl = _series(curves.get("train_loss")), _series(curves.get("val_loss"))
        if idx < len(tl) and idx < len(vl) and tl[idx] not in (None, 0) and vl[idx] is not None:
            ratio_name, tr, va = "loss", tl[idx], vl[idx]
    if ratio_name is not None and tr > 0 and va is not None:
        ratio = va / tr
        evidence = {"epoch": best_epoch, f"train_{ratio_name}": round6(tr), f"val_{ratio_name}": round6(va), "ratio": round6(ratio), "gap": round6(va - tr)}
        if ratio > thresholds.overfit_ratio:
            out.append(finding("overfitting", f"val {ratio_name} is {ratio:.1f}x train at the best epoch {best_epoch} "
                             f"(gap {va - tr:.4g}; over {thresholds.overfit_ratio:g}x is overfitting)", evidence, keys))
        elif ratio < thresholds.underfit_ratio:
            out.append(finding("room_to_regularize_less", f"val {ratio_name} is only {ratio:.2f}x train at epoch {best_epoch} "
                             f"(under {thresholds.underfit_ratio:g}x): regularisation can be lowered", evidence, keys))

    # plateau and wasted epochs
    min_delta = thresholds.plateau_min_delta
    if min_delta is None:
        min_delta = float(config.get("min_delta") or 0.0) or abs(best) * 1e-3
    ref, plateau = None, finite_val[0][0]
    for e, v in finite_val:
        if ref is None or sign * v < sign * ref - min_delta:
            ref, plateau = v, e
    last = finite_val[-1][0]
    patience = int(config.get("patience") or 0)
    if last - plateau >= max(3, len(finite_val) // 10):
        out.append(finding("plateau", f"val {metric} improved by less than {min_delta:.3g} after epoch {plateau} "
                         f"({last - plateau} more epochs trained)", {"plateau_epoch": plateau, "last_epoch": last, "min_delta": round6(min_delta)}, keys))
        wasted = last - (plateau + patience) if patience else last - plateau
        if wasted > 0 and (not patience or stop_reason != "early_stopped"):
            why = f"patience {patience} never fired" if patience else "early stopping is off (patience 0)"
            out.append(finding("wasted_epochs", f"{wasted} epochs trained after the plateau at epoch {plateau}"
                             + (f" + patience {patience}" if patience else "") + f": {why}",
                             {"wasted_epochs": wasted, "plateau_epoch": plateau, "patience": patience, "epochs_run": last}, keys))
    return out


def finding(kind: str, message: str, evidence: dict, keys: Iterable[str]) -> dict:
    return {"kind": kind, "message": message, "evidence": evidence, "knobs": knobs_for(kind, keys)}


def _series(values: Sequence[Any] | None) -> list:
    return [None if v is None else float(v) for v in (values or [])]


def round6(x: float) -> float:
    return float(f"{x:.6g}")


@functools.lru_cache(maxsize=1)
def train_keys() -> frozenset[str]:
    from hpo.train.config import TrainConfig
    import dataclasses

    return frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.name != "group_lr")
