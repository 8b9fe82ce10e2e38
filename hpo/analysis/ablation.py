"""The ablation report of a stored study: one row per (knob, value) of its ``ablations:`` runs.

An ablation run is a trial whose user attr ``ABLATION`` is ``{"knob": key or None, "value": v, "seed": s}``
(``knob`` None: the baseline the ablation is around). :func:`ablation_rows` groups those trials into rows:
the baseline row first, then every knob in the order of the recorded spec's ``ablations.knobs`` and its
values in their listed order (rows of knobs or values the trials hold but the spec no longer lists come
after, in trial order). A row gives the runs that completed (``n``), the mean and standard deviation over
its seeds of every objective (the primary one, marked ``primary: true`` in the spec or else the first, also
at the top of the row), the primary mean's difference from the baseline row's (absolute and in %, and
whether it is better in the objective's direction), and the runs that did not complete with their state
and stop reason. :func:`ablation_text` prints the rows; :func:`ablation_html` is the report's section (the
table and, per knob, the primary metric per value with error bars and the baseline as a horizontal line).

Every function reads a :class:`~hpo.store.stored.StoredStudy`, an
:class:`~hpo.analysis.view.StudyView` (its trials, already read, are used as they are) or an
``optuna.Study``; a study without ablation runs gives no rows, no lines and an empty HTML string.

Trials left out: those told from an earlier stage (``WARM_START_OF``, never trained here), duplicate
enqueues (stop reason ``surplus``) and failed or interrupted trials that another trial runs again (its
``RERUN_OF``, or a heartbeat retry's ``RETRY_HISTORY``); a re-run without an ``ABLATION`` attr of its own
counts for the run it repeats.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from hpo.store.record import ABLATION, RERUN_OF, RETRY_HISTORY, SPEC, STOP_DETAIL, STOP_REASON, StopReason
from hpo.store.stored import primary_of

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from optuna.trial import FrozenTrial

    from hpo.store.stored import StoredStudy

ABLATIONS_KEY = "ablations"  # the study file's key (hpo.spec.schema.StudySpec.ablations) as the record holds it
PROTECT_KEY = "protect_baselines"  # the study file's key (StudySpec.protect_baselines; default true)
BASELINE_LABEL = "baseline"
PENDING_STATES = ("RUNNING", "WAITING")


# -- reading -----------------------------------------------------------------------------------------
def _source(source: Any) -> tuple["StoredStudy", list["FrozenTrial"]]:
    """(the stored study, its trials) of a StudyView (trials already read), a StoredStudy or an optuna.Study."""
    from hpo.store.stored import StoredStudy

    if hasattr(source, "stored") and hasattr(source, "trials"):  # StudyView
        return source.stored, list(source.trials)
    stored = source if isinstance(source, StoredStudy) else StoredStudy(source)
    return stored, stored.light_trials()


def _key(value: Any) -> tuple:
    """A value as rows are matched on: bools apart from numbers, 2 the same as 2.0."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    return ("other", json.dumps(value, sort_keys=True, default=str))


def run_label(knob: str | None, value: Any) -> str:
    """``baseline`` or ``KNOB=VALUE``: a row's name, its runs' trial names without ``ablation.`` and the seed."""
    from hpo.spec.ablations import PREFIX, run_name

    return BASELINE_LABEL if knob is None else run_name(knob, value)[len(PREFIX):]


def value_label(value: Any) -> str:
    """A knob value as the rows and axes show it, as in the runs' names (``0.0001``, ``true``, ``gated``)."""
    return run_label("knob", value).partition("=")[2]


def _superseded(trials: Sequence["FrozenTrial"]) -> set[int]:
    """Numbers of the trials another trial runs again (re-runs of interrupted ones, heartbeat retries)."""
    out: set[int] = set()
    for t in trials:
        out.update((t.system_attrs or {}).get(RETRY_HISTORY, []))
        if RERUN_OF in t.user_attrs:
            out.add(t.user_attrs[RERUN_OF])
    return out


def ablation_trials(trials: Sequence["FrozenTrial"]) -> list[tuple[dict, "FrozenTrial"]]:
    """(ablation attr, trial) for every ablation run that counts (see the module's docstring), by number."""
    from hpo.store.stored import is_told

    by_number = {t.number: t for t in trials}
    superseded = _superseded(trials)
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        attr = _ablation_of(t, by_number)
        if attr is None or is_told(t) or t.number in superseded:
            continue
        if t.user_attrs.get(STOP_REASON) == StopReason.SURPLUS.value:
            continue
        out.append((attr, t))
    return out


def _ablation_of(t: "FrozenTrial", by_number: dict[int, "FrozenTrial"]) -> dict | None:
    """The trial's ablation attr, or that of the trial it re-runs (following re-runs of re-runs)."""
    seen: set[int] = set()
    while t is not None and t.number not in seen:
        attr = t.user_attrs.get(ABLATION)
        if isinstance(attr, dict):
            return attr
        seen.add(t.number)
        t = by_number.get(t.user_attrs.get(RERUN_OF))
    return None


# -- rows --------------------------------------------------------------------------------------------
def _summary(values: list[float]) -> dict[str, Any]:
    """mean and std (sample std; 0.0 for one run, as the re-evaluation reports it) of ``values``."""
    if not values:
        return {"mean": None, "std": None, "values": []}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def _not_completed(attr: dict, t: "FrozenTrial") -> dict[str, Any]:
    return {"trial": t.number, "seed": attr.get("seed"), "state": t.state.name,
            "stop_reason": t.user_attrs.get(STOP_REASON), "stop_detail": t.user_attrs.get(STOP_DETAIL)}


def _row(knob: str | None, value: Any, runs: list[tuple[dict, "FrozenTrial"]], metrics: list[str], primary: int,
         expected: int) -> dict[str, Any]:
    done = [(a, t) for a, t in runs if t.state.name == "COMPLETE" and t.values]
    summaries = {m: _summary([t.values[i] for _, t in done]) for i, m in enumerate(metrics)}
    main = summaries[metrics[primary]]
    return {
        "knob": knob, "value": value, "label": run_label(knob, value),
        "n": len(done), "expected": max(expected, len(done)),
        "seeds": [a.get("seed") for a, _ in done], "trials": [t.number for _, t in done],
        "metric": metrics[primary], "mean": main["mean"], "std": main["std"], "metrics": summaries,
        "not_completed": [_not_completed(a, t) for a, t in runs if t.state.name not in ("COMPLETE", *PENDING_STATES)],
        "pending": [t.number for _, t in runs if t.state.name in PENDING_STATES],
        "delta": None, "delta_pct": None, "better": None,
    }


def _add_deltas(row: dict, base: dict, directions: list[str], metrics: list[str]) -> None:
    """The row's difference from the baseline row, per objective (primary at the top of the row)."""
    for i, m in enumerate(metrics):
        s, b = row["metrics"][m], base["metrics"][m]
        if s["mean"] is None or b["mean"] is None:
            s.update(delta=None, delta_pct=None, better=None)
            continue
        delta = s["mean"] - b["mean"]
        sign = 1.0 if directions[i] == "minimize" else -1.0
        s.update(delta=delta, delta_pct=delta / abs(b["mean"]) * 100 if b["mean"] else None, better=sign * delta < 0)
    p = row["metrics"][row["metric"]]
    row.update(delta=p.get("delta"), delta_pct=p.get("delta_pct"), better=p.get("better"))


def _ordered_keys(spec_ablation: dict, found: Iterable[tuple[str | None, Any]]) -> list[tuple[str | None, Any]]:
    """(knob, value) of every row: the baseline, the spec's knobs and values in order, then any others found."""
    keys: list[tuple[str | None, Any]] = [(None, None)]
    for knob, values in (spec_ablation.get("knobs") or {}).items():
        keys += [(knob, v) for v in values]
    seen = {(k, _key(v) if k is not None else None) for k, v in keys}
    for knob, value in found:
        norm = (knob, _key(value) if knob is not None else None)
        if norm not in seen:
            seen.add(norm)
            keys.append((knob, value))
    return keys


def ablation_spec(stored: "StoredStudy") -> dict:
    """The recorded spec's ``ablations:`` mapping (``{}`` without one)."""
    return (stored.record.get(SPEC) or {}).get(ABLATIONS_KEY) or {}


def ablation_rows(source: Any) -> list[dict[str, Any]]:
    """One row per (knob, value) of the study's ablation runs, baseline first (``[]`` without any run).

    Each row: ``knob`` (None for the baseline), ``value``, ``label``, ``n`` (runs that completed),
    ``expected`` (one per seed), ``seeds`` and ``trials`` of the completed runs, ``metric`` (the primary
    objective), ``mean`` / ``std`` of it over the seeds, ``metrics`` ({objective: {mean, std, values,
    delta, delta_pct, better}}), ``delta`` / ``delta_pct`` / ``better`` of the primary mean against the
    baseline row's (None where either has no completed run), ``not_completed`` ([{trial, seed, state,
    stop_reason, stop_detail}]) and ``pending`` (numbers of runs still waiting or running).
    """
    stored, trials = _source(source)
    runs = ablation_trials(trials)
    if not runs:
        return []
    spec = ablation_spec(stored)
    metrics, directions = stored.metrics, stored.directions
    primary = primary_of(stored.record.get(SPEC) or {}, len(metrics))
    expected = len(spec.get("seeds") or []) or 1
    groups: dict[tuple, list] = {}
    for attr, t in runs:
        knob = attr.get("knob")
        groups.setdefault((knob, _key(attr.get("value")) if knob is not None else None), []).append((attr, t))
    keys = _ordered_keys(spec, [(a.get("knob"), a.get("value")) for a, _ in runs])
    rows = [_row(k, v, groups.get((k, _key(v) if k is not None else None), []), metrics, primary, expected) for k, v in keys]
    for row in rows:
        _add_deltas(row, rows[0], directions, metrics)
    return rows


# -- text --------------------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 5) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _mean_std(s: dict) -> str:
    return "-" if s["mean"] is None else f"{_num(s['mean'])} ± {_num(s['std'], 2)}"


def _delta(row: dict) -> tuple[str, str]:
    """(delta, delta %) as shown: blank on the baseline row itself and where a mean is missing."""
    if row["delta"] is None or row["knob"] is None:
        return "", ""
    pct = "" if row["delta_pct"] is None else f"{row['delta_pct']:+.1f} %"
    return f"{row['delta']:+.4g}", pct


def _failure(run: dict) -> str:
    seed = "" if run["seed"] is None else f" seed {run['seed']}"
    why = run["stop_reason"] or "no stop reason"
    detail = f": {run['stop_detail']}" if run["stop_detail"] else ""
    return f"#{run['trial']}{seed} {run['state'].lower()} ({why}{detail})"


def _header(stored: "StoredStudy", rows: list[dict]) -> str:
    spec = ablation_spec(stored)
    i = stored.metrics.index(rows[0]["metric"])
    seeds = spec.get("seeds") or []
    over = f"mean ± std over seeds {', '.join(map(str, seeds))}" if seeds else "one run each"
    base = f" around baseline {spec['baseline']!r}" if spec.get("baseline") else ""
    return f"Ablation{base} ({rows[0]['metric']}, {stored.directions[i]}; {over}; delta against the baseline row)"


def ablation_text(source: Any) -> list[str]:
    """The ablation table as lines of text (``[]`` without ablation runs); runs that did not complete are
    listed under their row."""
    stored, trials = _source(source)
    rows = ablation_rows(_Read(stored, trials))
    if not rows:
        return []
    others = [m for m in stored.metrics if m != rows[0]["metric"]]
    table = [["run", "runs", rows[0]["metric"], "delta", "delta %", *others]]
    for r in rows:
        table.append([r["label"], f"{r['n']}/{r['expected']}", _mean_std(r), *_delta(r),
                      *[_mean_std(r["metrics"][m]) for m in others]])
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    lines = [_header(stored, rows)]
    for k, line in enumerate(table):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        if k:
            row = rows[k - 1]
            lines += [f"      not completed: {_failure(run)}" for run in row["not_completed"]]
            if row["pending"]:
                lines.append("      still to run: " + ", ".join(f"#{n}" for n in row["pending"]))
    return lines


class _Read:
    """A study already read (stored study + trials), passed on so the store is read once."""

    def __init__(self, stored: "StoredStudy", trials: list["FrozenTrial"]) -> None:
        self.stored, self.trials = stored, trials


# -- HTML --------------------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table class='ablation'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ablation_table_html(stored: "StoredStudy", rows: list[dict]) -> str:
    others = [m for m in stored.metrics if m != rows[0]["metric"]]
    body = []
    for r in rows:
        failed = "; ".join(_failure(run) for run in r["not_completed"])
        if r["pending"]:
            failed = "; ".join(filter(None, [failed, "still to run: " + ", ".join(f"#{n}" for n in r["pending"])]))
        body.append([r["label"], f"{r['n']}/{r['expected']}", _mean_std(r), *_delta(r),
                     *[_mean_std(r["metrics"][m]) for m in others], failed])
    return _table(["run", "runs completed", f"{rows[0]['metric']} (mean ± std)", "delta", "delta %",
                   *[f"{m} (mean ± std)" for m in others], "not completed"], body)


def knob_figure(rows: list[dict], knob: str) -> "go.Figure":
    """The primary metric per value of ``knob`` (error bars: std over seeds; dots: each run), the baseline
    row's mean as a dashed horizontal line (its std as a band)."""
    import plotly.graph_objects as go

    base, mine = rows[0], [r for r in rows if r["knob"] == knob]
    metric = base["metric"]
    xs = [value_label(r["value"]) for r in mine]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[r["mean"] for r in mine], mode="markers+lines", name="mean over seeds",
                             error_y={"type": "data", "array": [r["std"] or 0.0 for r in mine], "visible": True},
                             marker={"size": 10}, hovertemplate=f"{knob}=%{{x}}<br>{metric} %{{y}}<extra></extra>"))
    runs = [(value_label(r["value"]), y) for r in mine for y in r["metrics"][metric]["values"]]
    if runs:
        fig.add_trace(go.Scatter(x=[x for x, _ in runs], y=[y for _, y in runs], mode="markers", name="each run",
                                 marker={"size": 5, "opacity": 0.5}))
    if base["mean"] is not None:
        fig.add_hline(y=base["mean"], line_dash="dash", annotation_text=f"baseline {_num(base['mean'])}",
                      annotation_position="top left")
        if base["std"]:
            fig.add_hrect(y0=base["mean"] - base["std"], y1=base["mean"] + base["std"], opacity=0.12, line_width=0)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=xs)
    fig.update_layout(title=f"Ablation: {knob} ({metric} per value, std over seeds)", xaxis_title=knob,
                      yaxis_title=metric, height=380)
    return fig


def ablation_html(source: Any, include_plotlyjs: bool | str = False) -> str:
    """The report's ablation section: heading, the table and one figure per knob (``""`` without ablation
    runs). plotly.js is not included unless asked (the report embeds it once for the page)."""
    stored, trials = _source(source)
    rows = ablation_rows(_Read(stored, trials))
    if not rows:
        return ""
    protected = (stored.record.get(SPEC) or {}).get(PROTECT_KEY, True)
    guard = ("never stopped by the pruner or a gate (protect_baselines)" if protected
             else "stopped by the pruner and the gates like any trial (protect_baselines: false)")
    parts = ["<h2>Ablations</h2>", f"<p>{html.escape(_header(stored, rows))}. One knob changed at a time, each run a named "
             f"trial, {guard}.</p>", ablation_table_html(stored, rows)]
    knobs = list(dict.fromkeys(r["knob"] for r in rows[1:]))
    for i, knob in enumerate(knobs):
        fig = knob_figure(rows, knob)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs if i == 0 else False,
                                 div_id=f"ablation-figure-{i}"))
    return "<section class='ablation'>" + "\n".join(parts) + "</section>"
