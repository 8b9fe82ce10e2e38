"""Compare two trained runs on the same pairs, as the seed's ``compare_trained_models.py`` does:
predicted-vs-true scatter, error histogram, metric bars and the improvement of run B over run A, in
one self-contained plotly HTML file (plotly.js inlined: it opens offline).

``hpo compare`` calls :func:`compare_runs`; the library function writes nothing but ``out_html``.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from models.drug_target.metrics import METRICS, regression_metrics

logger = logging.getLogger(__name__)

#: ids of the figure <div>s in the report, in order
FIGURE_IDS = ("pred-vs-true", "error-histogram", "metric-bars", "improvement")
#: scatter points drawn per run at most (a uniform sample beyond it keeps the file small)
MAX_SCATTER_POINTS = 20_000


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
    out = {}
    for name, direction in METRICS.items():
        va, vb = a.get(name, math.nan), b.get(name, math.nan)
        if not (math.isfinite(va) and math.isfinite(vb)) or va == 0:
            out[name] = math.nan
            continue
        delta = (va - vb) if direction == "minimize" else (vb - va)
        out[name] = 100.0 * delta / abs(va)
    return out


def compare_runs(run_a: Any, run_b: Any, out_html: str | Path, *, title: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the comparison of ``run_a`` (the reference, e.g. the standard model) and ``run_b`` (e.g.
    the gated model) to ``out_html``; return ``{"metrics": {name: {...}}, "improvement": {...}}``.

    Runs are ``(y_true, y_pred, name)`` tuples, mappings with those keys or :class:`RunPredictions`.
    ``seed`` drives the subsample of scatter points when a run has more than ``MAX_SCATTER_POINTS``.
    """
    import plotly.graph_objects as go

    a, b = RunPredictions.of(run_a), RunPredictions.of(run_b)
    if a.name == b.name:
        raise ValueError(f"the two runs need different names, but both are {a.name!r}")
    metrics = {r.name: regression_metrics(r.y_true, r.y_pred) for r in (a, b)}
    gain = improvement(metrics[a.name], metrics[b.name])
    colors = {a.name: "#636EFA", b.name: "#EF553B"}
    rng = np.random.default_rng(seed)

    scatter = go.Figure()
    lo = min(float(min(r.y_true.min(), r.y_pred.min())) for r in (a, b))
    hi = max(float(max(r.y_true.max(), r.y_pred.max())) for r in (a, b))
    for r in (a, b):
        ix = np.arange(len(r.y_true))
        if len(ix) > MAX_SCATTER_POINTS:
            ix = np.sort(rng.choice(ix, MAX_SCATTER_POINTS, replace=False))
        m = metrics[r.name]
        scatter.add_trace(go.Scattergl(
            x=r.y_true[ix], y=r.y_pred[ix], mode="markers", name=f"{r.name} (RMSE {m['rmse']:.3f}, CI {m['ci']:.3f})",
            marker={"size": 4, "opacity": 0.45, "color": colors[r.name]}))
    scatter.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"color": "black", "dash": "dash"}))
    scatter.update_layout(title="Predicted vs true affinity", xaxis_title="true", yaxis_title="predicted")

    hist = go.Figure()
    for r in (a, b):
        hist.add_trace(go.Histogram(x=r.y_pred - r.y_true, name=r.name, opacity=0.6, marker_color=colors[r.name], nbinsx=60))
    hist.update_layout(title="Prediction error (predicted - true)", barmode="overlay", xaxis_title="error", yaxis_title="pairs")

    names = list(METRICS)
    bars = go.Figure()
    for r in (a, b):
        vals = [metrics[r.name][n] for n in names]
        bars.add_trace(go.Bar(x=names, y=vals, name=r.name, marker_color=colors[r.name],
                              text=[f"{v:.3f}" for v in vals], textposition="outside"))
    bars.update_layout(title="Metrics (RMSE, MSE, MAE lower is better; R², CI, r_m² higher is better)", barmode="group")

    imp = go.Figure(go.Bar(x=names, y=[gain[n] for n in names],
                           marker_color=["#00CC96" if (gain[n] or 0) >= 0 else "#EF553B" for n in names],
                           text=[f"{gain[n]:+.1f}%" if math.isfinite(gain[n]) else "n/a" for n in names], textposition="outside"))
    imp.update_layout(title=f"Improvement of {b.name} over {a.name} (%; positive = better)", yaxis_title="%")

    figures = (scatter, hist, bars, imp)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=div) for i, (fig, div) in enumerate(zip(figures, FIGURE_IDS))]
    heading = html.escape(title or f"{a.name} vs {b.name}")
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{metrics[a.name][n]:.4f}</td><td>{metrics[b.name][n]:.4f}</td>"
        f"<td>{gain[n]:+.2f}%</td></tr>" for n in names)
    table = (f"<table><tr><th>metric</th><th>{html.escape(a.name)}</th><th>{html.escape(b.name)}</th>"
             f"<th>improvement</th></tr>{rows}</table>")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{heading}</title>"
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}</style></head>"
           f"<body><h1>{heading}</h1><p>{len(a.y_true)} and {len(b.y_true)} pairs.</p>{table}"
           + "".join(parts) + "</body></html>")
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    logger.info("wrote the comparison of %s and %s to %s", a.name, b.name, out)
    return {"metrics": metrics, "improvement": gain}


def _flat(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def compare_analysis(task, splits, models: dict, split: str = "val", out: str | Path | None = None) -> dict[str, Any]:
    """``hpo compare STUDY A B``: the seed's comparison of two trained checkpoints (the first is the
    reference, e.g. the standard model; the second e.g. the gated one) on one split, as HTML."""
    from hpo.train.loop import predict

    if len(models) != 2:
        from hpo.errors import UsageError

        raise UsageError(f"compare takes two trials, but got {len(models)}")
    runs = []
    for label, model in models.items():
        pred, target = predict(task, model, splits, split, 256)
        runs.append((np.asarray(target).ravel(), np.asarray(pred).ravel(), label))
    out = Path(out or "runs/reports/compare.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = compare_runs(runs[0], runs[1], out, title=f"{runs[0][2]} vs {runs[1][2]} ({split} split)")
    return {"split": split, "html": str(out), **result}
