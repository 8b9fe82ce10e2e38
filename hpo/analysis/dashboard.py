"""What fusion-hpo attaches to a study in optuna-dashboard: the objective metric names, the learning-curve
figure of the top trials and the plans (:func:`~hpo.analysis.figures.curves_figure`), and a note with the
curve diagnosis and the plans-vs-tuned table (``hpo run`` at the end, ``hpo report``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

CURVES_GRAPH_ID = "fusion-hpo-learning-curves"


def publish_to_dashboard(ostudy: "optuna.Study") -> None:
    """Attach the learning-curve figure and the diagnosis note to the study in optuna-dashboard."""
    import warnings

    import optuna
    from optuna_dashboard import save_note, save_plotly_graph_object

    from hpo.analysis.figures import curves_figure
    from hpo.analysis.view import StudyView, plans_vs_tuned
    from hpo.analysis.diagnosis import diagnose_study, summary_text

    v = StudyView(ostudy)
    if not v.metrics[0].startswith("objective"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names(v.metrics)
    fig = curves_figure(v)
    if fig is not None:
        save_plotly_graph_object(ostudy, fig, graph_object_id=CURVES_GRAPH_ID)
    best = v.best()
    diag = diagnose_study(v.trials, metric=v.metric, direction=v.monitor_direction)
    note = summary_text(diag, best.number if best else None)
    rows = plans_vs_tuned(v)
    if rows:
        note += "\n\n## Plans vs tuned\n\n| plan | trial | " + v.monitor + " | improvement of the best trial |\n|---|---|---|---|\n"
        for r in rows:
            imp = f"{r['improvement_pct']:+.1f} %" if r.get("improvement_pct") is not None else "-"
            val = f"{r['value']:.5g}" if r["value"] is not None else r["state"].lower()
            note += f"| {r['plan']} | #{r['trial']} | {val} | {imp} |\n"
    save_note(ostudy, note)
