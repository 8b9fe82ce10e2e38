"""A study's curve diagnosis from its stored trials: each trial's findings (:mod:`hpo.train.diagnose` reads
one trial's curves) plus ``underfitting``, which needs the study's best train metric, and the summary the
report and the dashboard show."""

from __future__ import annotations

import math
from typing import Any, Sequence

from hpo.store.record import CONFIG, CURVES, DIAGNOSIS, METRICS, STOP_REASON
from hpo.train.diagnose import Thresholds, train_keys, finding, round6, diagnose_curves


def diagnose_study(trials: Sequence[Any], *, metric: str, direction: str, thresholds: Thresholds = Thresholds()) -> dict:
    """Per-trial diagnoses (adding ``underfitting`` against the study's best train metric) and a
    summary: how many trials show each finding, and what the best trial shows."""
    sign = 1.0 if direction == "minimize" else -1.0
    per: dict[int, list[dict]] = {}
    train_at_best: dict[int, float] = {}
    by_number = {t.number: t for t in trials}
    for t in trials:
        curves = t.user_attrs.get(CURVES)
        stored = t.user_attrs.get(DIAGNOSIS)
        if not curves and stored is not None and thresholds == Thresholds():
            # read without its curves (big studies): the diagnosis the trial stored when it ended, from
            # the same curves with the same default thresholds
            per[t.number] = [dict(d) for d in stored if d.get("kind") != "underfitting"]
        elif curves:
            per[t.number] = diagnose_curves(curves, metric=metric, direction=direction, config=t.user_attrs.get(CONFIG, {}),
                                            stop_reason=t.user_attrs.get(STOP_REASON), thresholds=thresholds)
        else:
            continue
        m = t.user_attrs.get(METRICS) or {}
        if m.get(f"train_{metric}") is not None:
            train_at_best[t.number] = m[f"train_{metric}"]
    if train_at_best:
        best_train = min(train_at_best.values(), key=lambda v: sign * v)
        for n, v in train_at_best.items():
            worse = (v / best_train if direction == "minimize" and best_train > 0 else
                     (best_train / v if v > 0 else math.inf))
            if worse > thresholds.underfit_factor:
                keys = set(by_number[n].user_attrs.get(CONFIG, {})) | train_keys()
                per[n].append(finding("underfitting", f"train {metric} {v:.4g} is {worse:.1f}x worse than the study's best train {metric} {best_train:.4g}",
                                    {f"train_{metric}": round6(v), f"study_best_train_{metric}": round6(best_train), "factor": round6(worse)}, keys))
    counts: dict[str, int] = {}
    for diags in per.values():
        for d in diags:
            counts[d["kind"]] = counts.get(d["kind"], 0) + 1
    return {"metric": metric, "direction": direction, "trials": per, "counts": counts, "n_trials": len(per)}


def summary_text(result: dict, best_number: int | None = None) -> str:
    """A Markdown note for people (the dashboard shows it on the study page)."""
    lines = [f"## Curve diagnosis ({result['n_trials']} trials with curves, metric {result['metric']})", ""]
    if not result["counts"]:
        lines.append("No overfitting, plateau, wasted epochs, divergence or underfitting found.")
    for kind, n in sorted(result["counts"].items(), key=lambda kv: -kv[1]):
        lines.append(f"- **{kind.replace('_', ' ')}**: {n} trial(s)")
    if best_number is not None and best_number in result["trials"]:
        lines += ["", f"### Best trial #{best_number}"]
        diags = result["trials"][best_number]
        if not diags:
            lines.append("Nothing found.")
        for d in diags:
            knobs = ", ".join(d["knobs"]) or "-"
            lines.append(f"- **{d['kind'].replace('_', ' ')}**: {d['message']}. Knobs: {knobs}")
    return "\n".join(lines)
