"""The report's plotly figures of a stored study (:class:`~hpo.analysis.view.StudyView`).

Optuna's own plots (``optuna.visualization``) where Optuna has them: parameter importances (PED-ANOVA,
named in the title: :func:`importance_evaluator`), parallel coordinates, slice, rank and timeline, drawn from
the trials the report already read (:class:`PlotStudy`, no further reads of the store) against the primary
objective, log parameters on log axes. What only this service draws is drawn here: the optimisation history
with the plans marked, and the learning curves of the top trials and the plans with their train/val gap.
Each returns ``None`` where the study has too little to draw; :func:`report_figures` lists them in the
report's order with their HTML ids.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import optuna

from hpo.analysis.view import StudyView
from hpo.store.record import BASELINE, CURVES, STOP_REASON
from hpo.store.storage import TrialsSnapshot

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
        p = v.stored.primary_index
        fig.add_trace(go.Scatter(x=[t.number for t in base], y=[t.values[p] for t in base], mode="markers+text",
                                 text=[t.user_attrs[BASELINE] for t in base], textposition="top center",
                                 marker={"symbol": "star", "size": 12}, name="baselines (plans)"))
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title=v.monitor if len(v.metrics) == 1 else "value",
                      height=420)
    return fig


def importance_evaluator():
    """The importance evaluator the report uses, and its name for the figure's title: PED-ANOVA
    (``optuna.importance.PedAnovaImportanceEvaluator``), Optuna's default from Optuna 5.0 on (fANOVA, slow on
    big studies, before). Passed explicitly, so the title names the method that ran whatever the installed
    Optuna's default; fANOVA where an Optuna has no PED-ANOVA."""
    import optuna.importance as imp

    cls = getattr(imp, "PedAnovaImportanceEvaluator", None) or imp.FanovaImportanceEvaluator
    ev = cls()
    return ev, EVALUATOR_NAMES.get(type(ev).__name__, type(ev).__name__)


EVALUATOR_NAMES = {"PedAnovaImportanceEvaluator": "PED-ANOVA", "FanovaImportanceEvaluator": "fANOVA",
                   "MeanDecreaseImpurityImportanceEvaluator": "mean decrease in impurity"}


class PlotStudy(TrialsSnapshot, optuna.Study):
    """The study as Optuna's plot functions read it: the trials the report already read (no deep copies,
    no further reads of the store), seen from one objective (``objective``: the primary by default) as a
    single-objective study with that objective's direction and name, so Optuna's colour scales and axis
    titles follow it. ``trials``: a subset to draw (default: all of ``v``'s); ``attrs``: the user attrs
    kept on each trial (``None``: all; hover texts carry them, so the timeline keeps only the plan name and
    the stop reason). A :class:`optuna.Study` by type (the plot functions check it) whose ``__init__`` is
    not run: what it does not define is the stored study's (:class:`~hpo.store.storage.TrialsSnapshot`)."""

    def __init__(self, v: StudyView, objective: int | None = None, *, trials: list | None = None,
                 attrs: tuple[str, ...] | None = None) -> None:
        import copy

        i = v.stored.primary_index if objective is None else objective
        trials = v.trials if trials is None else trials
        if len(v.directions) > 1 or attrs is not None:
            projected = []
            for t in trials:
                c = copy.copy(t)  # shallow: params, distributions and the rest are shared, read-only
                if len(v.directions) > 1 and t.values is not None:
                    c._values = [t.values[i]]  # FrozenTrial has no setter for several values
                if attrs is not None:
                    c.user_attrs = {k: t.user_attrs[k] for k in attrs if k in t.user_attrs}
                projected.append(c)
            trials = projected
        super().__init__(v.study, trials)
        self.objective = i
        self.target_name = v.metrics[i]
        self._direction = v.study.directions[i]  # read once: the plots ask for it per trial

    @property
    def directions(self) -> list:
        return [self._direction]

    @property
    def direction(self):
        return self._direction

    @property
    def metric_names(self) -> list[str]:
        return [self.target_name]

    def _is_multi_objective(self) -> bool:
        return False

    def get_trials(self, deepcopy: bool = False, states=None) -> list:
        return super().get_trials(False, states)  # the plots only read them

    @property
    def trials(self) -> list:
        return self.get_trials()


def plot_study(v: StudyView) -> PlotStudy:
    """The primary objective's :class:`PlotStudy` of ``v`` over all its trials (made once per view)."""
    ps = v.__dict__.get("_plot_study")
    if ps is None:
        ps = v.__dict__["_plot_study"] = PlotStudy(v)
    return ps


def spread(v: StudyView, most: int) -> list:
    """At most ``most`` of the complete trials, evenly spaced in their order on the primary objective
    (the best and the worst always among them): what a per-trial plot of a big study draws."""
    if len(v.complete) <= most:
        return v.complete
    i = v.stored.primary_index
    sign = 1.0 if v.directions[i] == "minimize" else -1.0
    ordered = sorted(v.complete, key=lambda t: sign * t.values[i])
    picks = np.unique(np.linspace(0, len(ordered) - 1, most).round().astype(np.int64))
    return [ordered[k] for k in picks]


@contextlib.contextmanager
def _quiet():
    """Optuna's plot functions warn (small PED-ANOVA regimes, non-finite values, experimental API) and log;
    the figures' titles say what they draw."""
    log = logging.getLogger("optuna")
    level = log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            log.setLevel(level)


def _params(v: StudyView) -> list[str]:
    return sorted({k for t in v.complete for k in t.params})


def _ordered_objectives(v: StudyView) -> list[int]:
    p = v.stored.primary_index
    return [p] + [i for i in range(len(v.metrics)) if i != p]


def importances(v: StudyView, objective: int | None = None) -> dict[str, float]:
    """Optuna's parameter importances (:func:`importance_evaluator`) for one objective (the primary by
    default) over the complete trials, most important first; {} where they cannot be computed (fewer than
    two trials, one value everywhere). Computed once per view (the importance figure fills it)."""
    cache = v.__dict__.setdefault("_importances", {})
    i = v.stored.primary_index if objective is None else objective
    if i not in cache:
        cache[i] = {}
        if len(v.complete) >= 2 and _params(v):
            ps = plot_study(v) if i == v.stored.primary_index else PlotStudy(v, i)
            try:
                with _quiet():
                    cache[i] = dict(optuna.importance.get_param_importances(ps, evaluator=importance_evaluator()[0]))
            except IMPORTANCE_ERRORS:
                pass
    return cache[i]


IMPORTANCE_ERRORS = (ValueError, RuntimeError, ZeroDivisionError, FloatingPointError)  # too little to tell apart


def importance_figure(v: StudyView) -> "go.Figure | None":
    """Optuna's importance plot, one bar group per objective (the primary first), the method in the title."""
    import optuna.visualization as ov

    if len(v.complete) < 2 or not _params(v):
        return None
    ev, method = importance_evaluator()
    cache = v.__dict__.setdefault("_importances", {})
    fig = None
    for i in _ordered_objectives(v):
        ps = plot_study(v) if i == v.stored.primary_index else PlotStudy(v, i)
        try:
            with _quiet():
                one = ov.plot_param_importances(ps, evaluator=ev, target_name=v.metrics[i])
        except IMPORTANCE_ERRORS:
            cache.setdefault(i, {})
            continue
        bars = list(one.data)
        # the bars run least important first (drawn bottom up): the cache keeps them most important first
        cache.setdefault(i, dict(zip(reversed(bars[0].y), reversed(bars[0].x))) if bars else {})
        if not bars:
            continue
        if fig is None:
            fig = one
        else:
            fig.add_traces(bars)
    if fig is None:
        return None
    for trace in fig.data:
        trace.showlegend = len(fig.data) > 1
    of = ", ".join(t.name for t in fig.data)
    fig.update_layout(title=f"Parameter importances ({method}, {of})", barmode="group",
                      height=160 + 26 * max(len(t.y) for t in fig.data) * len(fig.data))
    return fig


PARALLEL_MOST = 500  # Optuna draws one line (one trace) per trial


def parallel_figure(v: StudyView) -> "go.Figure | None":
    """Optuna's parallel coordinates of the complete trials against the primary objective (log parameters
    on a log10 axis); above :data:`PARALLEL_MOST` trials, that many spread over the ranking (:func:`spread`)."""
    import optuna.visualization as ov

    if not _params(v) or len(v.complete) < 2:
        return None
    drawn = spread(v, PARALLEL_MOST)
    with _quiet():
        fig = ov.plot_parallel_coordinate(PlotStudy(v, trials=drawn) if drawn is not v.complete else plot_study(v),
                                          target_name=v.monitor)
    which = (f"{len(drawn)} of {len(v.complete)} complete trials, evenly spaced from best to worst"
             if len(drawn) < len(v.complete) else f"{len(drawn)} complete trials")
    fig.update_layout(title=f"Parallel coordinates ({v.monitor}; {which})", height=480)
    return fig


SLICE_COLUMNS = 4


def slice_figure(v: StudyView) -> "go.Figure | None":
    """Optuna's slice plot of the primary objective against each parameter (log axes for log parameters),
    its one row of panels laid out in rows of :data:`SLICE_COLUMNS`."""
    import optuna.visualization as ov
    from plotly.subplots import make_subplots

    names = _params(v)
    if not names or not v.complete:
        return None
    with _quiet():
        fig = ov.plot_slice(plot_study(v), target_name=v.monitor)
    title = f"Slice plots ({v.monitor} vs each parameter, colour: trial number)"
    if len(names) <= SLICE_COLUMNS:
        fig.update_layout(title=title, height=420, width=None)
        return fig
    rows = math.ceil(len(names) / SLICE_COLUMNS)
    grid = make_subplots(rows=rows, cols=SLICE_COLUMNS, shared_yaxes="all", vertical_spacing=0.45 / rows)
    for k in range(len(names)):
        suffix = str(k + 1) if k else ""
        row, col = k // SLICE_COLUMNS + 1, k % SLICE_COLUMNS + 1
        for trace in fig.data:
            if (trace.xaxis or "x") == "x" + suffix:
                grid.add_trace(trace, row=row, col=col)
        src = fig.layout["xaxis" + suffix]  # Optuna's axis: its title, log or category type and order
        grid.update_xaxes(title_text=src.title.text, type=src.type, categoryorder=src.categoryorder,
                          categoryarray=src.categoryarray, row=row, col=col)
        if col == 1:
            grid.update_yaxes(title_text=v.monitor, row=row, col=col)
    for k in range(len(names), rows * SLICE_COLUMNS):  # the last row's empty cells
        grid.update_xaxes(visible=False, row=rows, col=k % SLICE_COLUMNS + 1)
        grid.update_yaxes(visible=False, row=rows, col=k % SLICE_COLUMNS + 1)
    grid.update_layout(title=title, height=320 * rows)
    return grid


RANK_MOST = 1000  # trials drawn in a rank plot (a hover text each, in every panel)


def rank_figure(v: StudyView, top: int = 3) -> "go.Figure | None":
    """Optuna's rank plot over the ``top`` most important parameters (:func:`importances`), each trial
    coloured by its rank on the primary objective; above :data:`RANK_MOST` complete trials, that many
    spread over the ranking, and the two most important parameters only (one panel)."""
    import optuna.visualization as ov

    names = _params(v)
    if len(names) < 2 or len(v.complete) < 2:
        return None
    ranked = [n for n in importances(v) if n in names]
    chosen = (ranked + [n for n in names if n not in ranked])[: 2 if len(v.complete) > RANK_MOST else top]
    drawn = spread(v, RANK_MOST)
    with _quiet():
        fig = ov.plot_rank(PlotStudy(v, trials=drawn) if drawn is not v.complete else plot_study(v), params=chosen,
                           target_name=v.monitor)
    which = f"; {len(drawn)} of {len(v.complete)} trials" if len(drawn) < len(v.complete) else ""
    fig.update_layout(title=f"Rank on {v.monitor} over the {len(chosen)} most important parameters{which}",
                      height=480 if len(chosen) == 2 else 240 * len(chosen))
    return fig


TIMELINE_ATTRS = (BASELINE, STOP_REASON)


def timeline_figure(v: StudyView) -> "go.Figure | None":
    """Optuna's timeline: each trial's start and duration, coloured by state (its hover keeps only the plan
    name and the stop reason of the user attrs)."""
    import optuna.visualization as ov

    if not v.trials:
        return None
    with _quiet():
        fig = ov.plot_timeline(PlotStudy(v, attrs=TIMELINE_ATTRS))
    fig.update_layout(title=f"Timeline ({len(v.trials)} trials, by state)", height=440)
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


FIGURES = (("fig-history", history_figure), ("fig-importances", importance_figure), ("fig-parallel", parallel_figure),
           ("fig-slice", slice_figure), ("fig-rank", rank_figure), ("fig-timeline", timeline_figure),
           ("fig-curves", curves_figure))


def report_figures(v: StudyView) -> list[tuple[str, "go.Figure"]]:
    """The report's figures in order, each with its HTML id (``fig-history``, ``fig-importances``,
    ``fig-parallel``, ``fig-slice``, ``fig-rank``, ``fig-timeline``, ``fig-curves``); those with nothing to
    draw are left out."""
    out = []
    for div_id, make in FIGURES:
        fig = make(v)
        if fig is not None:
            out.append((div_id, fig))
    return out
