"""``hpo report``: one self-contained HTML page that makes a study's result readable and checkable,
and the same learning curves and diagnosis attached to the study in optuna-dashboard.

Sections: summary; plans vs tuned (each named baseline against the best trial, improvement %);
multi-seed re-evaluation on the test split (when ``hpo reevaluate`` ran); optimisation history;
parameter importances (PED-ANOVA); parallel coordinates; slice plots; learning curves of the top trials
with their train/val gap; curve diagnosis. The store is read once; plotly.js is embedded once.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go
    from optuna.trial import FrozenTrial

MAX_CURVES = 5  # learning curves of this many top trials


class StudyView:
    """What the report needs from a stored study, read once."""

    def __init__(self, ostudy: "optuna.Study") -> None:
        from hpo.store.record import RECORD_ATTR

        from hpo.store.storage import TrialsSnapshot, light_trials

        self.study = ostudy
        # read once, without the curves and intermediate values (a 10,000-trial study is mostly those);
        # the few trials whose curves are drawn are fetched whole (full())
        self.trials = light_trials(ostudy)
        self.snapshot = TrialsSnapshot(ostudy, self.trials)
        self._full: dict[int, "FrozenTrial"] = {}
        self.record = ostudy.user_attrs.get(RECORD_ATTR) or {}
        spec = self.record.get("spec") or {}
        objs = spec.get("objectives") or ["value"]
        self.metrics = [o if isinstance(o, str) else o["metric"] for o in objs]
        if len(self.metrics) != len(ostudy.directions):
            self.metrics = [f"objective {i}" for i in range(len(ostudy.directions))]
        self.directions = [d.name.lower() for d in ostudy.directions]
        self.complete = [t for t in self.trials if t.state.name == "COMPLETE"]
        self.task = (spec.get("task") or {}).get("family", "?")
        self.reevaluation = ostudy.user_attrs.get("reevaluation")

    @property
    def monitor(self) -> str:
        return self.metrics[0]

    def sign(self, i: int = 0) -> float:
        return 1.0 if self.directions[i] == "minimize" else -1.0

    def full(self, t: "FrozenTrial") -> "FrozenTrial":
        """The trial with its curves (read from the store the first time)."""
        from hpo.store.storage import full_trial

        if t.number not in self._full:
            self._full[t.number] = full_trial(self.study, t)
        return self._full[t.number]

    def ranked(self) -> list["FrozenTrial"]:
        if len(self.directions) > 1:
            from hpo.analysis.export import pareto_front

            best = {t.number for t in pareto_front(self.complete, self.study.directions)}
            return [t for t in self.complete if t.number in best]
        return sorted(self.complete, key=lambda t: self.sign() * t.values[0])

    def best(self) -> "FrozenTrial | None":
        r = self.ranked()
        return r[0] if r else None



# ------------------------------------------------------------------------------ figures
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
    base = [t for t in done if t.user_attrs.get("baseline")]
    if base:
        fig.add_trace(go.Scatter(x=[t.number for t in base], y=[t.values[0] for t in base], mode="markers+text",
                                 text=[t.user_attrs["baseline"] for t in base], textposition="top center",
                                 marker={"symbol": "star", "size": 12}, name="baselines (plans)"))
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title=v.metrics[0], height=420)
    return fig


def importance_figure(v: StudyView) -> "go.Figure | None":
    import optuna
    import plotly.graph_objects as go

    if len(v.complete) < 2:
        return None
    fig = go.Figure()
    import warnings

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

    metric = v.monitor.split("_", 1)[1] if v.monitor.startswith("val_") else v.monitor
    chosen = [f for f in map(v.full, v.ranked()[:top]) if f.user_attrs.get("curves")]
    taken = {t.number for t in chosen}
    base = [f for f in map(v.full, [t for t in v.complete if t.user_attrs.get("baseline") and t.number not in taken])
            if f.user_attrs.get("curves")]
    chosen += base[: max(0, top + 3 - len(chosen))]
    if not chosen:
        return None
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35],
                        subplot_titles=(f"train (dashed) and val {metric}", f"gap: val - train {metric}"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
    for k, t in enumerate(chosen):
        c = t.user_attrs["curves"]
        ep = c.get("epoch") or list(range(1, len(c.get(f"val_{metric}", [])) + 1))
        tag = t.user_attrs.get("baseline")
        label = f"#{t.number}" + (f" {tag}" if tag else "")
        color = palette[k % len(palette)]
        tr, va = c.get(f"train_{metric}", []), c.get(f"val_{metric}", [])
        fig.add_trace(go.Scatter(x=ep, y=va, name=f"{label} val", line={"color": color}, legendgroup=label), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=tr, name=f"{label} train", line={"color": color, "dash": "dash"}, legendgroup=label, showlegend=False), row=1, col=1)
        gap = [(b - a) if a is not None and b is not None else None for a, b in zip(tr, va)]
        fig.add_trace(go.Scatter(x=ep, y=gap, name=f"{label} gap", line={"color": color}, legendgroup=label, showlegend=False), row=2, col=1)
    fig.update_layout(title="Learning curves of the top trials and the plans", height=620, xaxis2_title="epoch")
    return fig


# ------------------------------------------------------------------------------ tables
def plans_vs_tuned(v: StudyView) -> list[dict]:
    """Each named baseline's best finished trial against the best trial (single objective)."""
    best = v.best()
    if best is None or len(v.directions) > 1:
        return []
    rows = []
    by_name: dict[str, "FrozenTrial"] = {}
    for t in v.trials:
        name = t.user_attrs.get("baseline")
        if name and t.state.name in ("COMPLETE", "PRUNED") and (name not in by_name or by_name[name].state.name != "COMPLETE"):
            by_name[name] = t
    for name, t in sorted(by_name.items(), key=lambda kv: kv[1].number):
        value = t.values[0] if t.values else None
        row = {"plan": name, "trial": t.number, "state": t.state.name, "value": value, "best": best.values[0], "best_trial": best.number}
        if value is not None and value != 0:
            row["improvement_pct"] = (value - best.values[0]) / abs(value) * 100 * v.sign()
        rows.append(row)
    return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.5g}"
        return html.escape("" if x is None else str(x))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _redacted(label: str) -> str:
    """A storage URL as the report shows it: through the one redaction (callers pass it redacted already)."""
    from hpo.spec.urls import redact

    return redact(label) if "://" in label else label


def build_report(ostudy: "optuna.Study", out: str | Path, storage_label: str = "") -> Path:
    import plotly.offline

    from hpo.train.diagnose import diagnose_study

    v = StudyView(ostudy)
    best = v.best()
    counts: dict[str, int] = {}
    for t in v.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    parts: list[str] = []
    title = f"fusion-hpo report: {ostudy.study_name}"
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts.append(f"<p>task <b>{html.escape(v.task)}</b> · {len(v.trials)} trials ("
                 + ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items())) + ")"
                 + (f" · store {html.escape(_redacted(storage_label))}" if storage_label else "") + "</p>")
    if best is not None:
        vals = ", ".join(f"{m} = {x:.5g}" for m, x in zip(v.metrics, best.values))
        parts.append(f"<p>best: trial <b>#{best.number}</b> {html.escape(vals)}"
                     + (f" [{html.escape(best.user_attrs['baseline'])}]" if best.user_attrs.get("baseline") else "") + "</p>")

    rows = plans_vs_tuned(v)
    if rows:
        parts.append("<h2>Plans vs tuned</h2><p>Each named baseline (a hand-written plan, run inside the study) against the best trial; "
                     "improvement is how much better the best trial is than the plan (validation metric).</p>")
        parts.append(_table(["plan", "trial", "state", v.monitor, "best " + v.monitor, "best trial", "improvement %"],
                            [[r["plan"], f"#{r['trial']}", r["state"], r["value"], r["best"], f"#{r['best_trial']}", r.get("improvement_pct")] for r in rows]))
    if v.reevaluation:
        parts.append(reevaluation_html(v.reevaluation))

    figs = [history_figure(v), importance_figure(v), parallel_figure(v), slice_figure(v), curves_figure(v)]
    for fig in figs:
        if fig is not None:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False))

    diag = diagnose_study(v.trials, metric=v.monitor.split("_", 1)[1] if v.monitor.startswith("val_") else v.monitor,
                          direction=v.directions[0])
    parts.append("<h2>Curve diagnosis</h2>")
    parts.append(_table(["finding", "trials"], [[k.replace("_", " "), n] for k, n in sorted(diag["counts"].items(), key=lambda kv: -kv[1])]) if diag["counts"]
                 else "<p>No overfitting, plateau, wasted epochs, divergence or underfitting found.</p>")
    top = v.ranked()[:10]
    drows = []
    for t in top:
        for d in diag["trials"].get(t.number, []):
            drows.append([f"#{t.number}", d["kind"].replace("_", " "), d["message"], ", ".join(d["knobs"])])
    if drows:
        parts.append("<h3>Top trials</h3>" + _table(["trial", "finding", "evidence", "knobs the plans use against it"], drows))

    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
            f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def reevaluation_html(re: dict) -> str:
    metrics = re.get("metrics") or []
    rows = []
    for label, entry in re.get("configs", {}).items():
        row = [label, entry.get("trial"), len(entry.get("seeds", []))]
        for m in metrics:
            s = entry.get("summary", {}).get(m)
            row.append(f"{s['mean']:.5g} ± {s['std']:.2g}" if s else "")
        rows.append(row)
    out = [f"<h2>Re-evaluation on the test split ({re.get('n_seeds')} seeds each)</h2>",
           f"<p>Each config retrained with seeds {re.get('seeds')}; its best-val epoch evaluated on the held-out test split "
           "(the only place the test split is read). mean ± std over seeds.</p>",
           _table(["config", "trial", "seeds", *[f"test {m}" for m in metrics]], rows)]
    comps = re.get("comparisons") or []
    if comps:
        out.append(_table(["tuned", "vs plan", "metric", "tuned mean", "plan mean", "difference", "Welch p", "tuned better (p < 0.05)"],
                          [[c["tuned"], c["baseline"], c["metric"], c["tuned_mean"], c["baseline_mean"], c["diff"], c["p_value"], c["significant"]] for c in comps]))
    ens = re.get("ensemble")
    if ens:
        out.append("<p>Ensemble (mean prediction of the seed runs) on the test split: "
                   + ", ".join(f"{k} = {v:.5g}" for k, v in ens.get("metrics", {}).items()) + f" ({html.escape(ens.get('config', ''))})</p>")
    return "\n".join(out)


def publish_to_dashboard(ostudy: "optuna.Study") -> None:
    """Attach the learning-curve figure and the diagnosis note to the study in optuna-dashboard."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    from hpo.train.diagnose import diagnose_study, summary_text

    import warnings

    import optuna

    v = StudyView(ostudy)
    if not v.metrics[0].startswith("objective"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names(v.metrics)
    fig = curves_figure(v)
    if fig is not None:
        save_plotly_graph_object(ostudy, fig, graph_object_id="fusion-hpo-learning-curves")
    best = v.best()
    diag = diagnose_study(v.trials, metric=v.monitor.split("_", 1)[1] if v.monitor.startswith("val_") else v.monitor, direction=v.directions[0])
    note = summary_text(diag, best.number if best else None)
    rows = plans_vs_tuned(v)
    if rows:
        note += "\n\n## Plans vs tuned\n\n| plan | trial | " + v.monitor + " | improvement of the best trial |\n|---|---|---|---|\n"
        for r in rows:
            imp = f"{r['improvement_pct']:+.1f} %" if r.get("improvement_pct") is not None else "-"
            val = f"{r['value']:.5g}" if r["value"] is not None else r["state"].lower()
            note += f"| {r['plan']} | #{r['trial']} | {val} | {imp} |\n"
    save_note(ostudy, note)
