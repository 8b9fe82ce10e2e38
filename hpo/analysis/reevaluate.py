"""``hpo reevaluate``: the evidence a tuned result needs before it is published.

The top-K configs of a study and every named baseline (the plans) are retrained with the same N seeds
each; each run's best epoch (chosen on the validation split, as in tuning) is evaluated once on the
held-out **test** split — the only place fusion-hpo reads it. Results are mean ± std per metric over
seeds, Welch's t-test of the best tuned config against each plan, and optionally the ensemble (mean
prediction of the seed runs). Everything is stored with the study (user attr ``reevaluation``) so the
report and the dashboard show it.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

from hpo.errors import UsageError
from hpo.store.record import BASELINE, CONFIG, REEVALUATION

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


def configs_to_reevaluate(ostudy: "optuna.Study", top: int, baselines: bool = True) -> list[tuple[str, int, dict]]:
    """(label, trial number, config) of the top-K trials and of each named baseline."""
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    out: list[tuple[str, int, dict]] = []
    for rank, t in enumerate(stored.best(top), start=1):
        out.append((f"tuned_rank{rank}_trial{t.number}", t.number, dict(t.user_attrs[CONFIG])))
    if baselines:
        seen = set()
        for t in stored.trials():
            name = t.user_attrs.get(BASELINE)
            if name and name not in seen and CONFIG in t.user_attrs and t.state.name in ("COMPLETE", "PRUNED"):
                seen.add(name)
                out.append((name, t.number, dict(t.user_attrs[CONFIG])))
    return out


def reevaluate(
    ostudy: "optuna.Study",
    *,
    top: int = 1,
    seeds: list[int] | None = None,
    baselines: bool = True,
    ensemble: bool = False,
    device: str | None = None,
    cache_dir: str = "runs/cache",
    on_run: Callable[[str, int, dict], None] | None = None,
) -> dict[str, Any]:
    import torch

    from hpo.store.stored import StoredStudy
    from hpo.train import fit
    from hpo.train.loop import evaluate, predict

    stored = StoredStudy(ostudy)
    stored.require()
    task_cls = stored.task_class
    task = stored.task(cache_dir)
    monitor = stored.metrics[0]
    direction = stored.directions[0]
    seeds = list(seeds if seeds is not None else range(5))
    if len(seeds) < 2:
        raise UsageError("--seeds must be >= 2 (a spread needs at least two runs)")

    configs = configs_to_reevaluate(ostudy, top, baselines)
    result: dict[str, Any] = {"seeds": seeds, "n_seeds": len(seeds), "monitor": monitor, "configs": {}, "started": time.time()}
    metrics_seen: list[str] = []
    ensemble_preds: dict[str, list] = {}
    for label, number, config in configs:
        runs = []
        for seed in seeds:
            cfg = {**config, "seed": seed}
            train_cfg, model_cfg, data_cfg = task.split_config(cfg)
            splits = task.load(data_cfg)
            with splits.locked_test():  # choosing the epoch uses train/val only
                fit_result = fit(task, splits, train_cfg, model_cfg, monitor=monitor, direction=direction, device=device)
            model = task.build_model(model_cfg, splits)
            model.load_state_dict(fit_result.best_state)
            test = evaluate(task, model, splits, "test", train_cfg.batch_size, device=device)
            test = {k[len("test_"):]: v for k, v in test.items()}
            run = {"seed": seed, "best_epoch": fit_result.best_epoch, "val": {k: v for k, v in fit_result.best.items() if k.startswith("val_")}, "test": test}
            runs.append(run)
            for m in test:
                if m not in metrics_seen:
                    metrics_seen.append(m)
            if ensemble and label.startswith("tuned_rank1"):
                ensemble_preds.setdefault(label, []).append(predict(task, model, splits, "test", train_cfg.batch_size, device=device))
            if on_run is not None:
                on_run(label, seed, test)
            del model
            torch.set_grad_enabled(True)
        summary = {}
        for m in metrics_seen:
            vals = [r["test"][m] for r in runs if m in r["test"] and r["test"][m] is not None and math.isfinite(r["test"][m])]
            if vals:
                summary[m] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "values": vals}
        result["configs"][label] = {"trial": number, "config": config, "runs": runs, "seeds": seeds, "summary": summary}
    result["metrics"] = metrics_seen
    result["comparisons"] = compare(result, task_cls)
    if ensemble and ensemble_preds:
        label, preds = next(iter(ensemble_preds.items()))
        pred = _mean_pred([p for p, _ in preds])
        target = preds[0][1]
        result["ensemble"] = {"config": label, "members": len(preds), "metrics": task.compute_metrics(pred, target)}
    result["seconds"] = time.time() - result.pop("started")
    ostudy.set_user_attr(REEVALUATION, _jsonable(result))
    return result


def compare(result: dict, task_cls) -> list[dict]:
    """Welch's t-test of the best tuned config against each baseline, per test metric."""
    from scipy import stats

    configs = result["configs"]
    tuned = next((k for k in configs if k.startswith("tuned_rank1")), None)
    if tuned is None:
        return []
    out = []
    for label, entry in configs.items():
        if label.startswith("tuned_"):
            continue
        for m in result["metrics"]:
            a, b = configs[tuned]["summary"].get(m), entry["summary"].get(m)
            if not a or not b:
                continue
            direction = task_cls.direction_of(m) or "minimize"
            if statistics.pstdev(a["values"]) == 0 and statistics.pstdev(b["values"]) == 0:
                p = 0.0 if a["mean"] != b["mean"] else 1.0
            else:
                p = float(stats.ttest_ind(a["values"], b["values"], equal_var=False).pvalue)
            better = a["mean"] < b["mean"] if direction == "minimize" else a["mean"] > b["mean"]
            out.append({"tuned": tuned, "baseline": label, "metric": m, "direction": direction, "tuned_mean": a["mean"],
                        "baseline_mean": b["mean"], "diff": a["mean"] - b["mean"], "p_value": p,
                        "significant": bool(better and p < 0.05)})
    return out


def _mean_pred(preds: list) -> Any:
    import torch

    first = preds[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(preds).mean(0)
    if isinstance(first, (tuple, list)):
        return type(first)(_mean_pred([p[i] for p in preds]) for i in range(len(first)))
    raise TypeError(f"cannot average predictions of type {type(first).__name__}")


def _jsonable(obj: Any) -> Any:
    import json

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.loads(json.dumps(clean(obj), default=float))
