"""``hpo compare STUDY A B``: two trained trials of any family side by side, in one self-contained HTML file
(plotly.js inlined once: it opens offline).

What the page holds, for trial A (the reference) and trial B:

- the trials' facts (baseline, best epoch, epochs run, parameters, stored objective values) and the config keys
  whose values differ;
- every metric of the task on the chosen split, recomputed from the best checkpoints
  (:meth:`hpo.tasks.Task.compute_metrics`), and the improvement of B over A per metric in percent of |A|, signed
  by the metric's direction (positive = B better: lower when minimised, higher when maximised);
- both learning curves (the loss and the primary metric; train dashed, val solid) from the stored ``curves``;
- the family's views of the predictions (:meth:`hpo.tasks.Task.compare_views`): predicted vs true and the
  error histogram of a regression target, lines (traffic: MAE per forecast step), a sample series (traffic: one
  sensor), a distribution (face3d: per-sample cosine similarity);
- metric bars and improvement bars.

The test split stays locked (reading it raises :class:`hpo.errors.TestSplitAccessError`) unless the comparison
is asked for on ``split="test"``. ``hpo`` never imports a family: the family's part is reached through the Task
contract (``compute_metrics``, ``compare_views``) and the task's ``analyses["compare"]`` entry, which a family may
point at its own function; :func:`compare_analysis` is the default.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from hpo.errors import UsageError
from hpo.store.record import (BEST_EPOCH, CONFIG, CURVES, EPOCHS_RUN, METRICS, N_PARAMS, SECONDS, STOP_REASON,
                              TrialRecord)

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import plotly.graph_objects as go

    from hpo.analysis.trained import LoadedTrial
    from hpo.tasks import Splits, Task

logger = logging.getLogger(__name__)

#: the analysis name a task's ``analyses`` maps to its comparison (``hpo compare`` runs it)
ANALYSIS = "compare"
#: ids of the figure <div>s every comparison has (the views add theirs between curves and bars)
CURVES_ID, BARS_ID, IMPROVEMENT_ID = "learning-curves", "metric-bars", "improvement"
#: scatter points drawn per trial at most (a seeded uniform sample beyond it keeps the file small)
MAX_SCATTER_POINTS = 20_000
#: points of a series drawn at most (its first ones)
MAX_SERIES_POINTS = 2_000
#: batch size of the prediction passes
BATCH_SIZE = 256
COLORS = ("#636EFA", "#EF553B")
SPLITS = ("train", "val", "test")


@dataclass
class Side:
    """One trial of a comparison: what the page shows of it."""

    label: str
    metrics: dict[str, float]  # recomputed on the split, names as the task gives them (``mae``)
    views: list[dict[str, Any]] = field(default_factory=list)  # Task.compare_views of its predictions
    curves: dict[str, list] = field(default_factory=dict)  # the stored curves (user attr CURVES)
    record: dict[str, Any] = field(default_factory=dict)  # the stored user attrs (facts, config)


# -- the split lock and the numbers --------------------------------------------------------------
def check_split(split: str) -> None:
    """A UsageError for a split that is not train / val / test."""
    if split not in SPLITS:
        raise UsageError(f"split: must be one of {', '.join(SPLITS)}, but got {split!r}")


@contextlib.contextmanager
def split_guard(splits: "Splits", split: str) -> Iterator["Splits"]:
    """``splits`` with the test part locked, unless ``split`` is ``"test"`` (only then may it be read)."""
    check_split(split)
    if split == "test":
        yield splits
        return
    with splits.locked_test():
        yield splits


def improvement(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str | None]) -> dict[str, float]:
    """Per metric of ``a`` or ``b``: how much better B is than A in percent of |A| (positive = B better),
    by the metric's direction (``minimize``: lower is better; ``maximize``: higher). NaN where a value is
    missing or not finite, A is 0, or the direction is unknown."""
    names = [n for n in directions if n in a or n in b] + [n for n in {**a, **b} if n not in directions]
    out = {}
    for name in names:
        va, vb, direction = _num(a.get(name)), _num(b.get(name)), directions.get(name)
        if direction not in ("minimize", "maximize") or not (math.isfinite(va) and math.isfinite(vb)) or va == 0:
            out[name] = math.nan
            continue
        delta = (va - vb) if direction == "minimize" else (vb - va)
        out[name] = 100.0 * delta / abs(va)
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def metric_directions(task: "Task", names: Sequence[str]) -> dict[str, str | None]:
    """``minimize`` / ``maximize`` (None: unknown) of each metric name, as the task declares it."""
    return {n: task.metrics.get(n) or type(task).direction_of(n) for n in names}


def side_of(task: "Task", splits: "Splits", model: Any, label: str, split: str, record: TrialRecord | None = None) -> Side:
    """One trial's side: its predictions over ``split`` (the test part locked unless it is the split), the
    task's metrics and views of them, and its stored curves."""
    from hpo.train.loop import predict

    with split_guard(splits, split):
        pred, target = predict(task, model, splits, split, BATCH_SIZE)
    record = dict(record or {})
    metrics = {k: float(v) for k, v in task.compute_metrics(pred, target).items()}
    return Side(label, metrics, list(task.compare_views(pred, target)), dict(record.get(CURVES) or {}), record)


# -- the analysis ---------------------------------------------------------------------------------
def compare_analysis(task: "Task", splits: "Splits", models: Mapping[str, Any], split: str = "val",
                     out: str | Path | None = None, loaded: "Sequence[LoadedTrial] | None" = None,
                     primary: str | None = None) -> dict[str, Any]:
    """The comparison of two trained models on one split, as HTML at ``out`` (the first model is the
    reference): ``{"split", "html", "metrics": {label: {...}}, "improvement": {...}, "directions": {...}}``.

    With ``loaded`` (from :func:`hpo.analysis.trained.run_analysis`) each model runs on the splits of its own
    data config and the page shows its stored curves and facts; else both run on ``splits``. ``primary`` is the
    metric the curves show besides the loss (default: the task's first metric)."""
    if len(models) != 2:
        raise UsageError(f"compare takes two trials, but got {len(models)}")
    if loaded:
        sides = [side_of(t.task, t.splits, t.model, t.label, split, t.record) for t in loaded]
    else:
        sides = [side_of(task, splits, model, label, split) for label, model in models.items()]
    names = list(dict.fromkeys([*sides[0].metrics, *sides[1].metrics]))
    directions = metric_directions(task, names)
    path = Path(out or "runs/reports/compare.html")
    title = f"{sides[0].label} vs {sides[1].label} ({split} split, task {task.name})"
    result = write_comparison(sides[0], sides[1], directions, path, title=title, split=split,
                              primary=_base(primary) if primary else next(iter(task.metrics), None))
    return {"split": split, "html": str(path), **result}


def compare_trials(ostudy: "optuna.Study", a: int, b: int, *, artifacts_dir: str, split: str = "val",
                   out: str | Path | None = None, cache_dir: str = "runs/cache") -> dict[str, Any]:
    """``hpo compare STUDY A B``: the task's comparison (``analyses["compare"]``, else :func:`compare_analysis`)
    of trials ``a`` and ``b``'s best checkpoints on ``split``; stored with the study as ``analysis_compare``."""
    from hpo.analysis.trained import run_analysis
    from hpo.store.stored import StoredStudy

    if a == b:
        raise UsageError(f"compare takes two different trials, but got #{a} twice")
    check_split(split)  # before any checkpoint is loaded
    primary = primary_metric(StoredStudy(ostudy))
    return run_analysis(ostudy, ANALYSIS, [a, b], artifacts_dir=artifacts_dir, split=split, cache_dir=cache_dir,
                        default=compare_analysis, out=out, **({"primary": primary} if primary else {}))


def primary_metric(stored: Any) -> str | None:
    """The study's primary objective metric without its split (``val_mae`` -> ``mae``); None without a record."""
    if not stored.spec.get("objectives"):
        return None
    return _base(stored.metrics[stored.primary_index])


def _base(metric: str) -> str:
    head, _, rest = metric.partition("_")
    return rest if head in SPLITS and rest else metric


# -- the page ---------------------------------------------------------------------------------------
def write_comparison(a: Side, b: Side, directions: Mapping[str, str | None], out_html: str | Path, *,
                     title: str, split: str | None = None, primary: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the page comparing ``a`` (the reference) and ``b`` to ``out_html``; return
    ``{"metrics": {label: {...}}, "improvement": {...}, "directions": {...}}``. ``seed`` drives the sample of
    scatter points beyond :data:`MAX_SCATTER_POINTS`."""
    import numpy as np

    if a.label == b.label:
        raise ValueError(f"the two runs need different names, but both are {a.label!r}")
    gain = improvement(a.metrics, b.metrics, directions)
    names = list(gain)
    colors = {a.label: COLORS[0], b.label: COLORS[1]}
    figures: list[tuple[str, "go.Figure"]] = []
    curves = _curves_figure(a, b, colors, primary)
    if curves is not None:
        figures.append((CURVES_ID, curves))
    figures += _view_figures(a, b, colors, np.random.default_rng(seed))
    figures.append((BARS_ID, _bars_figure(a, b, names, directions, colors)))
    figures.append((IMPROVEMENT_ID, _improvement_figure(a, b, names, gain)))
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=div) for i, (div, fig) in enumerate(figures)]
    where = f"on the {html.escape(split)} split" if split else ""
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child{text-align:left}</style>"
           f"</head><body><h1>{html.escape(title)}</h1>"
           f"<h2>Metrics {where}</h2><p>Recomputed from the checkpoints; improvement of {html.escape(b.label)} over "
           f"{html.escape(a.label)} in % of |{html.escape(a.label)}|, positive = better by the metric's direction.</p>"
           + _metrics_table(a, b, names, directions, gain) + _facts_table(a, b, primary) + _config_table(a, b)
           + ("" if curves is not None else "<p>No learning curves are stored with these trials.</p>")
           + "".join(parts) + "</body></html>")
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    logger.info("wrote the comparison of %s and %s to %s", a.label, b.label, out)
    return {"metrics": {a.label: dict(a.metrics), b.label: dict(b.metrics)}, "improvement": gain,
            "directions": {n: directions.get(n) for n in names}}


def _fmt(v: Any, spec: str = ".4g") -> str:
    x = _num(v)
    return format(x, spec) if math.isfinite(x) else "n/a"


def _better(direction: str | None) -> str:
    return {"minimize": "lower is better", "maximize": "higher is better"}.get(direction or "", "direction unknown")


def _metrics_table(a: Side, b: Side, names: list[str], directions: Mapping[str, str | None], gain: Mapping[str, float]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{_better(directions.get(n))}</td><td>{_fmt(a.metrics.get(n))}</td>"
        f"<td>{_fmt(b.metrics.get(n))}</td><td>{_fmt(gain[n], '+.2f')}{'%' if math.isfinite(gain[n]) else ''}</td></tr>"
        for n in names)
    return (f"<table id='metrics-table'><tr><th>metric</th><th></th><th>{html.escape(a.label)}</th>"
            f"<th>{html.escape(b.label)}</th><th>improvement</th></tr>{rows}</table>")


def _facts_table(a: Side, b: Side, primary: str | None) -> str:
    keys = [(BEST_EPOCH, "best epoch"), (EPOCHS_RUN, "epochs run"), (N_PARAMS, "parameters"), (SECONDS, "seconds"),
            (STOP_REASON, "stop reason")]
    rows = [(label, a.record.get(k), b.record.get(k)) for k, label in keys if k in a.record or k in b.record]
    ma, mb = a.record.get(METRICS) or {}, b.record.get(METRICS) or {}
    stored = [m for m in dict.fromkeys(("val_loss", f"val_{primary}" if primary else "")) if m in ma or m in mb]
    rows += [(f"{m} (stored at the best epoch)", ma.get(m), mb.get(m)) for m in stored]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(x)}</td><td>{_cell(y)}</td></tr>" for k, x, y in rows)
    return (f"<h2>Trials</h2><table id='trials-table'><tr><th></th><th>{html.escape(a.label)}</th>"
            f"<th>{html.escape(b.label)}</th></tr>{body}</table>")


def _config_table(a: Side, b: Side) -> str:
    ca, cb = a.record.get(CONFIG) or {}, b.record.get(CONFIG) or {}
    keys = [k for k in sorted({*ca, *cb}) if ca.get(k) != cb.get(k)]
    if not (ca or cb):
        return ""
    if not keys:
        return "<h2>Config</h2><p>The two trials ran the same config.</p>"
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(ca.get(k))}</td><td>{_cell(cb.get(k))}</td></tr>" for k in keys)
    return (f"<h2>Config keys that differ</h2><table id='config-table'><tr><th>key</th><th>{html.escape(a.label)}</th>"
            f"<th>{html.escape(b.label)}</th></tr>{body}</table>")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return _fmt(v)
    return html.escape(str(v))


# -- the figures -----------------------------------------------------------------------------------
def _curves_figure(a: Side, b: Side, colors: Mapping[str, str], primary: str | None) -> "go.Figure | None":
    """Loss and the primary metric per epoch of both trials (train dashed, val solid); None without curves."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not (a.curves or b.curves):
        return None
    metrics = ["loss"] + ([primary] if primary and primary != "loss" and any(
        f"val_{primary}" in s.curves or f"train_{primary}" in s.curves for s in (a, b)) else [])
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, subplot_titles=metrics)
    for side in (a, b):
        c = side.curves
        for row, m in enumerate(metrics, start=1):
            for part, dash in (("val", None), ("train", "dash")):
                ys = c.get(f"{part}_{m}")
                if not ys:
                    continue
                xs = c.get("epoch") or list(range(1, len(ys) + 1))
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{side.label} {part}", legendgroup=side.label,
                                         showlegend=row == 1, line={"color": colors[side.label], "dash": dash}), row=row, col=1)
    fig.update_layout(title="Learning curves (val solid, train dashed)", height=320 * len(metrics))
    fig.update_xaxes(title_text="epoch", row=len(metrics), col=1)
    return fig


def _view_figures(a: Side, b: Side, colors: Mapping[str, str], rng: "np.random.Generator") -> list[tuple[str, "go.Figure"]]:
    """The figures of both trials' views, in the order of their first appearance; views of one id share a figure."""
    order: dict[str, list[tuple[Side, dict]]] = {}
    for side in (a, b):
        for view in side.views:
            order.setdefault(str(view.get("id") or view.get("kind")), []).append((side, view))
    out: list[tuple[str, "go.Figure"]] = []
    for vid, pairs in order.items():
        kind = pairs[0][1].get("kind")
        builder = _BUILDERS.get(kind)
        if builder is None:
            logger.warning("compare: view %s has the unknown kind %r; not drawn", vid, kind)
            continue
        out += builder(vid, pairs, colors, rng)
    return out


def _flat(x: Any) -> "np.ndarray":
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _regression(vid: str, pairs, colors, rng) -> list[tuple[str, "go.Figure"]]:
    import numpy as np
    import plotly.graph_objects as go

    data = [(s, _flat(v["y_true"]), _flat(v["y_pred"])) for s, v in pairs]
    scatter = go.Figure()
    finite = [np.concatenate([t[np.isfinite(t)], p[np.isfinite(p)]]) for _, t, p in data]
    values = np.concatenate(finite) if finite else np.zeros(0)
    for side, t, p in data:
        ix = np.arange(len(t))
        if len(ix) > MAX_SCATTER_POINTS:
            ix = np.sort(rng.choice(ix, MAX_SCATTER_POINTS, replace=False))
        scatter.add_trace(go.Scattergl(x=t[ix], y=p[ix], mode="markers", name=side.label,
                                       marker={"size": 4, "opacity": 0.45, "color": colors[side.label]}))
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        scatter.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"color": "black", "dash": "dash"}))
    view = pairs[0][1]
    scatter.update_layout(title=view.get("title") or "Predicted vs true", xaxis_title="true", yaxis_title="predicted")
    hist = go.Figure()
    for side, t, p in data:
        hist.add_trace(go.Histogram(x=p - t, name=side.label, opacity=0.6, marker_color=colors[side.label], nbinsx=60))
    hist.update_layout(title="Prediction error (predicted - true)", barmode="overlay", xaxis_title="error", yaxis_title="count")
    return [(vid, scatter), (str(view.get("error_id") or "error-histogram"), hist)]


def _lines(vid: str, pairs, colors, rng) -> list[tuple[str, "go.Figure"]]:
    import plotly.graph_objects as go

    fig = go.Figure()
    for side, v in pairs:
        fig.add_trace(go.Scatter(x=list(v["x"]), y=_flat(v["y"]), mode="lines+markers", name=side.label,
                                 line={"color": colors[side.label]}))
    view = pairs[0][1]
    fig.update_layout(title=view.get("title") or vid, xaxis_title=view.get("x_title"), yaxis_title=view.get("y_title"))
    return [(vid, fig)]


def _series(vid: str, pairs, colors, rng) -> list[tuple[str, "go.Figure"]]:
    import plotly.graph_objects as go

    fig = go.Figure()
    first = pairs[0][1]
    x = list(first["x"])[:MAX_SERIES_POINTS]
    fig.add_trace(go.Scatter(x=x, y=_flat(first["true"])[:MAX_SERIES_POINTS], mode="lines", name="true",
                             line={"color": "black"}))
    for side, v in pairs:
        fig.add_trace(go.Scatter(x=list(v["x"])[:MAX_SERIES_POINTS], y=_flat(v["pred"])[:MAX_SERIES_POINTS], mode="lines",
                                 name=side.label, line={"color": colors[side.label]}))
    fig.update_layout(title=first.get("title") or vid, xaxis_title=first.get("x_title"), yaxis_title=first.get("y_title"))
    return [(vid, fig)]


def _histogram(vid: str, pairs, colors, rng) -> list[tuple[str, "go.Figure"]]:
    import plotly.graph_objects as go

    fig = go.Figure()
    for side, v in pairs:
        fig.add_trace(go.Histogram(x=_flat(v["values"]), name=side.label, opacity=0.6, marker_color=colors[side.label],
                                   nbinsx=50))
    view = pairs[0][1]
    fig.update_layout(title=view.get("title") or vid, barmode="overlay", xaxis_title=view.get("x_title"), yaxis_title="count")
    return [(vid, fig)]


_BUILDERS = {"regression": _regression, "lines": _lines, "series": _series, "histogram": _histogram}


def _bars_figure(a: Side, b: Side, names: list[str], directions: Mapping[str, str | None], colors) -> "go.Figure":
    import plotly.graph_objects as go

    fig = go.Figure()
    for side in (a, b):
        vals = [_num(side.metrics.get(n)) for n in names]
        fig.add_trace(go.Bar(x=names, y=vals, name=side.label, marker_color=colors[side.label],
                             text=[_fmt(v, ".3f") for v in vals], textposition="outside"))
    low = [n for n in names if directions.get(n) == "minimize"]
    high = [n for n in names if directions.get(n) == "maximize"]
    said = "; ".join(part for part in (f"{', '.join(low)}: lower is better" if low else "",
                                       f"{', '.join(high)}: higher is better" if high else "") if part)
    fig.update_layout(title=f"Metrics ({said})" if said else "Metrics", barmode="group")
    return fig


def _improvement_figure(a: Side, b: Side, names: list[str], gain: Mapping[str, float]) -> "go.Figure":
    import plotly.graph_objects as go

    vals = [gain[n] if math.isfinite(gain[n]) else None for n in names]
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=["#00CC96" if (v or 0) >= 0 else "#EF553B" for v in vals],
                           text=[f"{v:+.1f}%" if v is not None else "n/a" for v in vals], textposition="outside"))
    fig.update_layout(title=f"Improvement of {b.label} over {a.label} (%; positive = better)", yaxis_title="%")
    return fig
