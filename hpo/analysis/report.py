"""``hpo report``: one self-contained HTML page that makes a study's result readable and checkable.

Sections: summary; success targets (per level: met or not, by which trial, on validation and on test);
plans vs tuned (each named baseline against the best trial, improvement %);
multi-seed re-evaluation on the test split (when ``hpo reevaluate`` ran); ablations (one knob at a time around a
baseline, :mod:`~hpo.analysis.ablation`); the figures of
:mod:`~hpo.analysis.figures` (the optimisation history with the plans marked; Optuna's own importances,
parallel coordinates, slice, rank and timeline plots; learning curves of the top trials with their
train/val gap); curve diagnosis. The store is read
once (:class:`~hpo.analysis.view.StudyView`); plotly.js is embedded once. The same curves and diagnosis go
to optuna-dashboard through :mod:`~hpo.analysis.dashboard`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hpo.analysis.view import StudyView, plans_vs_tuned
from hpo.store.record import BASELINE

if TYPE_CHECKING:
    import optuna


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

    from hpo.analysis.ablation import ablation_html
    from hpo.analysis.figures import report_figures
    from hpo.analysis.diagnosis import diagnose_study

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
                     + (f" [{html.escape(best.user_attrs[BASELINE])}]" if best.user_attrs.get(BASELINE) else "") + "</p>")

    if v.targets:
        parts.append(targets_html(v.targets))

    rows = plans_vs_tuned(v)
    if rows:
        parts.append("<h2>Plans vs tuned</h2><p>Each named baseline (a hand-written plan, run inside the study) against the best trial; "
                     "improvement is how much better the best trial is than the plan (validation metric).</p>")
        parts.append(_table(["plan", "trial", "state", v.monitor, "best " + v.monitor, "best trial", "improvement %"],
                            [[r["plan"], f"#{r['trial']}", r["state"], r["value"], r["best"], f"#{r['best_trial']}", r.get("improvement_pct")] for r in rows]))
    if v.reevaluation:
        parts.append(reevaluation_html(v.reevaluation))

    parts.append(ablation_html(v))  # "" for a study without ablation runs

    for div_id, fig in report_figures(v):  # each in a scrolling box: a wide slice or rank plot stays inside the page
        parts.append("<div class='figure' style='overflow-x:auto'>"
                     + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id) + "</div>")

    diag = diagnose_study(v.trials, metric=v.metric, direction=v.monitor_direction)
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


def targets_html(rows: list[dict]) -> str:
    """The success targets: per level, met or not on validation, by which trial, the value, the best trial
    meeting it (or the closest), and the verdict on test (``not re-evaluated`` before ``hpo reevaluate``)."""
    from hpo.run.targets import describe_test, format_values

    table = []
    for r in rows:
        first = f"#{r['trial']} ({format_values(r['value'])})" if r["met"] else ""
        best = f"#{r['best_trial']} ({format_values(r['best_value'])})" if r["best_trial"] is not None else "no complete trial"
        level = r["level"] + (" (stop_at_target)" if r.get("stops") else "")
        table.append([level, r["rule"], "met" if r["met"] else "not met", first, best, describe_test(r["test"])])
    met = sum(r["met"] for r in rows)
    return (f"<h2>Targets</h2><p>{met} of {len(rows)} levels met on validation (a level is met by a complete trial whose "
            "metrics at its best epoch meet every threshold; on test by a re-evaluated config, mean over seeds).</p>"
            + _table(["level", "rule", "validation", "first met by", "best meeting (or closest)", "test"], table))


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
