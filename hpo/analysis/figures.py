"""The report's plotly figures of a stored study (:class:`~hpo.analysis.view.StudyView`): optimisation
history with the plans marked, parameter importances (PED-ANOVA), parallel coordinates, slice plots, and
the learning curves of the top trials and the plans with their train/val gap. Each returns ``None`` where
the study has too little to draw.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from hpo.analysis.view import StudyView
from hpo.store.record import BASELINE, CURVES

if TYPE_CHECKING:
    import plotly.graph_objects as go

MAX_CURVES = 5  # learning curves of this many top trials


def history_figure(v: StudyView) -> "go.Figure":
    import plotly.graph_objects as go

    fig = go.Figure()
    done = sorted(v.complete, key=lambda t: t.number)
    for i, metric in enumerate(v.metrics[:1] if len(v.metrics) == 1 else v.metrics):
        # numpy arrays: plotly validates and copies them whole instead of element by element
        xs = np.fromiter((t.number for t in done), dtype=np.int64, count=len(done))
        ys = np.fromiter((t.values[i] for t in done), dtype=np.float64, count=len(done))
        Scatter = go.Scattergl if len(xs) > 2000 else go.Scatter
        fig.add_trace(Scatter(x=xs, y=ys, mode="markers", name=metric, marker={"size": 6},
                              hovertemplate="trial %{x}: %{y}<extra></extra>"))  # plans: their own trace below
        if len(v.metrics) == 1:
            best = v.sign() * np.minimum.accumulate(v.sign() * ys) if len(ys) else ys
            fig.add_trace(Scatter(x=xs, y=best, mode="lines", name=f"best {metric}"))
    base = [t for t in done if t.user_attrs.get(BASELINE)]
    if base:
        fig.add_trace(go.Scatter(x=[t.number for t in base], y=[t.values[0] for t in base], mode="markers+text",
                                 text=[t.user_attrs[BASELINE] for t in base], textposition="top center",
                                 marker={"symbol": "star", "size": 12}, name="baselines (plans)"))
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title=v.metrics[0], height=420)
    return fig


def importance_figure(v: StudyView) -> "go.Figure | None":
    import warnings

    import optuna
    import plotly.graph_objects as go

    if len(v.complete) < 2:
        return None
    fig = go.Figure()
    for i, metric in enumerate(v.metrics):
        try:
            with warnings.catch_warnings():  # PED-ANOVA warns about small regimes; the figure says what it is
                warnings.simplefilter("ignore", UserWarning)
                imp = optuna.importance.get_param_importances(v.snapshot, target=(lambda t, i=i: t.values[i]) if len(v.metrics) > 1 else None)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        if not imp:
            continue
        names = list(imp)[::-1]
        fig.add_trace(go.Bar(x=[imp[n] for n in names], y=names, orientation="h", name=metric))
    if not fig.data:
        return None
    fig.update_layout(title="Parameter importances (PED-ANOVA)", xaxis_title="importance", height=120 + 24 * len(fig.data[0].y), barmode="group")
    return fig


def parallel_figure(v: StudyView) -> "go.Figure | None":
    import plotly.graph_objects as go

    names = sorted({k for t in v.complete for k in t.params})
    if not names or len(v.complete) < 2:
        return None
    dims = []
    for name in names:
        vals = [t.params.get(name) for t in v.complete]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) or x is None for x in vals):
            nums = [x for x in vals if x is not None]
            if not nums:
                continue
            dims.append({"label": name, "values": np.asarray([x if x is not None else min(nums) for x in vals], dtype=np.float64)})
        else:
            cats = sorted({str(x) for x in vals})
            idx = {c: i for i, c in enumerate(cats)}
            dims.append({"label": name, "values": np.asarray([idx[str(x)] for x in vals]), "tickvals": list(range(len(cats))), "ticktext": cats})
    ys = np.asarray([t.values[0] for t in v.complete], dtype=np.float64)
    dims.append({"label": v.metrics[0], "values": ys})
    fig = go.Figure(go.Parcoords(line={"color": ys, "colorscale": "Viridis", "reversescale": v.directions[0] == "maximize", "showscale": True},
                                 dimensions=dims))
    fig.update_layout(title="Parallel coordinates (complete trials)", height=460)
    return fig


def slice_figure(v: StudyView) -> "go.Figure | None":
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = sorted({k for t in v.complete for k in t.params})
    if not names:
        return None
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    Scatter = go.Scattergl if len(v.complete) > 2000 else go.Scatter
    for i, name in enumerate(names):
        pts = [(t.params[name], t.values[0], t.number) for t in v.complete if name in t.params]
        xs = [str(p[0]) if isinstance(p[0], (bool, str)) or p[0] is None else p[0] for p in pts]
        numeric = all(isinstance(x, (int, float)) for x in xs)
        fig.add_trace(Scatter(x=np.asarray(xs, dtype=np.float64 if numeric else object), y=np.asarray([p[1] for p in pts], dtype=np.float64),
                              mode="markers", marker={"size": 5, "color": np.asarray([p[2] for p in pts]), "colorscale": "Blues"},
                              hovertemplate=f"trial #%{{marker.color}}<br>{name} %{{x}}<br>%{{y}}<extra></extra>", showlegend=False),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title=f"Slice plots ({v.metrics[0]} vs each parameter)", height=260 * rows)
    return fig


def curves_figure(v: StudyView, top: int = MAX_CURVES) -> "go.Figure | None":
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metric = v.metric
    chosen = [f for f in map(v.full, v.ranked()[:top]) if f.user_attrs.get(CURVES)]
    taken = {t.number for t in chosen}
    base = [f for f in map(v.full, [t for t in v.complete if t.user_attrs.get(BASELINE) and t.number not in taken])
            if f.user_attrs.get(CURVES)]
    chosen += base[: max(0, top + 3 - len(chosen))]
    if not chosen:
        return None
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35],
                        subplot_titles=(f"train (dashed) and val {metric}", f"gap: val - train {metric}"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
    for k, t in enumerate(chosen):
        c = t.user_attrs[CURVES]
        ep = c.get("epoch") or list(range(1, len(c.get(f"val_{metric}", [])) + 1))
        tag = t.user_attrs.get(BASELINE)
        label = f"#{t.number}" + (f" {tag}" if tag else "")
        color = palette[k % len(palette)]
        tr, va = c.get(f"train_{metric}", []), c.get(f"val_{metric}", [])
        fig.add_trace(go.Scatter(x=ep, y=va, name=f"{label} val", line={"color": color}, legendgroup=label), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=tr, name=f"{label} train", line={"color": color, "dash": "dash"}, legendgroup=label, showlegend=False), row=1, col=1)
        gap = [(b - a) if a is not None and b is not None else None for a, b in zip(tr, va)]
        fig.add_trace(go.Scatter(x=ep, y=gap, name=f"{label} gap", line={"color": color}, legendgroup=label, showlegend=False), row=2, col=1)
    fig.update_layout(title="Learning curves of the top trials and the plans", height=620, xaxis2_title="epoch")
    return fig
