"""Compare two trained runs on the same pairs, as the seed's ``compare_trained_models.py`` does:
predicted-vs-true scatter, error histogram, metric bars and the improvement of run B over run A, in
one self-contained plotly HTML file (plotly.js inlined: it opens offline).

:func:`compare_runs` compares predictions given as arrays (it writes nothing but ``out_html``); ``hpo compare``
of two trials runs :func:`hpo.analysis.compare.compare_analysis` (every family's), which writes the same page
with the trials' learning curves and facts added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hpo.analysis.compare import BARS_ID, IMPROVEMENT_ID, MAX_SCATTER_POINTS, Side
from hpo.analysis.compare import compare_analysis as generic_compare_analysis
from hpo.analysis.compare import improvement as generic_improvement
from hpo.analysis.compare import write_comparison
from models.drug_target.metrics import METRICS, regression_metrics

#: ids of the figure <div>s in the report, in order
FIGURE_IDS = ("pred-vs-true", "error-histogram", BARS_ID, IMPROVEMENT_ID)
__all__ = ["FIGURE_IDS", "MAX_SCATTER_POINTS", "RunPredictions", "compare_analysis", "compare_runs", "improvement"]


@dataclass(frozen=True)
class RunPredictions:
    """Predictions of one run over a set of pairs (target units, e.g. pKd)."""

    name: str
    y_true: np.ndarray  # (n,)
    y_pred: np.ndarray  # (n,)

    @classmethod
    def of(cls, run: Any) -> "RunPredictions":
        """From a RunPredictions, a ``(y_true, y_pred, name)`` tuple or a mapping with those keys."""
        if isinstance(run, RunPredictions):
            return run
        if isinstance(run, Mapping):
            y_true, y_pred, name = run["y_true"], run["y_pred"], run["name"]
        elif isinstance(run, Sequence) and len(run) == 3:
            y_true, y_pred, name = run
        else:
            raise TypeError(f"a run must be (y_true, y_pred, name), a mapping with those keys or RunPredictions, "
                            f"but got {type(run).__name__}")
        y_true, y_pred = _flat(y_true), _flat(y_pred)
        if y_true.shape != y_pred.shape or y_true.size == 0:
            raise ValueError(f"run {name!r}: y_true and y_pred must be non-empty and of equal length, "
                             f"but got {y_true.size} and {y_pred.size}")
        return cls(str(name), y_true, y_pred)


def improvement(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """Per metric, how much better B is than A in percent of |A| (positive = B better), using each
    metric's direction (lower RMSE is better, higher CI is better)."""
    gain = generic_improvement(a, b, METRICS)
    return {name: gain.get(name, math.nan) for name in METRICS}


def compare_runs(run_a: Any, run_b: Any, out_html: str | Path, *, title: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the comparison of ``run_a`` (the reference, e.g. the standard model) and ``run_b`` (e.g.
    the gated model) to ``out_html``; return ``{"metrics": {name: {...}}, "improvement": {...}}``.

    Runs are ``(y_true, y_pred, name)`` tuples, mappings with those keys or :class:`RunPredictions`.
    ``seed`` drives the subsample of scatter points when a run has more than ``MAX_SCATTER_POINTS``.
    The page is :func:`hpo.analysis.compare.write_comparison`'s (what ``hpo compare`` writes for every family).
    """
    a, b = RunPredictions.of(run_a), RunPredictions.of(run_b)
    if a.name == b.name:
        raise ValueError(f"the two runs need different names, but both are {a.name!r}")
    sides = [Side(r.name, regression_metrics(r.y_true, r.y_pred),
                  [{"kind": "regression", "id": FIGURE_IDS[0], "error_id": FIGURE_IDS[1],
                    "title": "Predicted vs true affinity", "y_true": r.y_true, "y_pred": r.y_pred}]) for r in (a, b)]
    result = write_comparison(sides[0], sides[1], METRICS, out_html, title=title or f"{a.name} vs {b.name}", seed=seed)
    return {"metrics": result["metrics"], "improvement": improvement(*result["metrics"].values())}


def _flat(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


#: ``hpo compare`` of two DeepBindNet trials: the generic comparison (the task's ``analyses["compare"]``)
compare_analysis = generic_compare_analysis
