"""What the CLI prints for people: :func:`out` (progress-bar safe), the progress bar, and the printers of a run
(the start banner, one line per trial, the closing summary).

Library code logs; only these printers write to standard output.
"""

from __future__ import annotations

import sys


class ProgressState:
    """The one tqdm bar of this process, if any (log lines and :func:`out` write through it)."""

    bar = None


def out(line: str = "") -> None:
    """Print a line for people, keeping a progress bar (if any) intact."""
    bar = ProgressState.bar
    if bar is not None:
        bar.write(line)
    else:
        print(line, flush=True)


class Progress:
    """A tqdm bar on a terminal (nothing otherwise)."""

    def __enter__(self):
        return self

    def start(self, total: int, initial: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            ProgressState.bar = tqdm(total=total, initial=initial, unit="trial", dynamic_ncols=True, leave=False)

    def update(self) -> None:
        if ProgressState.bar is not None:
            ProgressState.bar.update(1)

    def __exit__(self, *exc):
        if ProgressState.bar is not None:
            ProgressState.bar.close()
            ProgressState.bar = None
        return False


def duration(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def start_printer(study, bar=None):
    """The ``on_start`` callback of a run: the study, its budget and workers (and the bar's total)."""

    def on_start(info: dict) -> None:
        from hpo.spec.urls import redact

        b = info["budget"]
        ds = study.record.get("dataset", {})
        fmt = ds.get("format", "?") if isinstance(ds, dict) else "?"
        out(f"study {info['study_name']} · {redact(info['storage'])} · task {study.task_cls.name} ({fmt}"
            + (f", target {study.spec.task.target}" if study.spec.task.target else "") + ")")
        places = info["placements"]
        where = ", ".join(f"gpu {p.gpu}" if p.gpu is not None else "cpu" for p in places)
        budget = f"{info['n_trials']} trials" if info["n_trials"] is not None else "no trial limit"
        if info["timeout"]:
            budget += f", timeout {info['timeout']:g}s"
        out(f"budget {budget} ({b.used} done, {b.running} running, {b.waiting} queued) · sampler {study.spec.sampler.type} · "
            f"pruner {study.spec.pruner.type} · {len(places)} worker(s): {where}, {places[0].threads} thread(s) each")
        if info["enqueued_baselines"]:
            out(f"enqueued baselines: {', '.join(info['enqueued_baselines'])}")
        if info["requeued"]:
            out(f"re-queued interrupted trials: {', '.join(f'#{n}' for n in info['requeued'])}")
        if bar is not None and info["n_trials"] is not None:
            bar.start(total=info["n_trials"], initial=min(b.used, info["n_trials"]))

    return on_start


def trial_printer(study, bar=None):
    """The ``on_trial`` callback of a run: one line per finished trial (and a step of the bar)."""
    from hpo.run.study import best_trials
    from hpo.store.record import NOT_TRAINED, STOP_REASON, StopReason

    metrics = [o.metric for o in study.objectives]

    def on_trial(ostudy, trial) -> None:
        out(describe_trial(trial, metrics, best_trials(ostudy) if not study.multi_objective else ()))
        reason = trial.user_attrs.get(STOP_REASON)
        if bar is not None and reason not in NOT_TRAINED and reason != StopReason.INTERRUPTED:
            bar.update()

    return on_trial


def print_summary(study, summary, opts) -> None:
    """The end of ``hpo run``: counts, cache use, the best trials and config, and the next commands."""
    from hpo.analysis.export import exported
    from hpo.spec.urls import redact
    from hpo.spec.yaml_io import dump_yaml
    from hpo.store.record import CHECKPOINT, CONFIG
    from hpo.store.stored import load_stored_study

    b = summary.budget
    out(f"\ndone ({summary.stopped_because}): {b.used} trials trained ({b.complete} complete, {b.pruned} pruned, {b.failed} failed)"
        + (f", {b.rejected} rejected by constraints" if b.rejected else "")
        + (f", {b.rerun} re-run" if b.rerun else "")
        + f" in {duration(summary.seconds)}")
    c = summary.cache
    if c is not None and c.lookups:
        out(f"data cache: {c.misses} built ({c.build_seconds:.1f}s), {c.disk_hits} loaded from disk, {c.memory_hits} reused in memory"
            f" (hit rate {c.hit_rate:.0%})")
    print_targets(summary.targets)
    url = study.storage_url(opts.storage)
    if summary.best:
        ostudy = load_stored_study(url, summary.study_name)
        for best in summary.best[:5]:
            trial = ostudy.trials[best["number"]]
            doc = exported(ostudy, trial, url)
            vals = ", ".join(f"{k}={v:.5g}" for k, v in doc["source"]["values"].items())
            tag = f" [{best['baseline']}]" if best["baseline"] else ""
            out(f"best: trial #{trial.number}{tag} {vals}")
        first = ostudy.trials[summary.best[0]["number"]]
        out("best config:")
        out("  " + dump_yaml(first.user_attrs.get(CONFIG, {})).rstrip().replace("\n", "\n  "))
        if first.user_attrs.get(CHECKPOINT):
            out(f"checkpoint: artifact {first.user_attrs[CHECKPOINT]} in {study.artifacts_dir(opts.artifacts)}")
    else:
        out("no complete trial yet")
    storage_flag = f" --storage {redact(summary.storage)}" if opts.storage or study.spec.storage else ""
    out(f"store:     {redact(summary.storage)} (study {summary.study_name!r})")
    out(f"dashboard: hpo dashboard{storage_flag}   # then open http://127.0.0.1:8080")
    out(f"export:    hpo export {summary.study_name}{storage_flag} --format yaml --out best.yaml")


def print_targets(rows, indent: str = "") -> None:
    """The success targets, one line per level: met or not, by which trial, the value, and the test
    verdict (``test: not re-evaluated`` before ``hpo reevaluate``). Nothing for a study without targets."""
    from hpo.run.targets import describe_target

    if not rows:
        return
    met = sum(r["met"] for r in rows)
    out(f"{indent}targets: {met} of {len(rows)} met on validation")
    for row in rows:
        out(f"{indent}  {describe_target(row)}")


def describe_trial(t, metrics, best=()) -> str:
    """``#12 COMPLETE val_mae=0.4123 | best #7 0.3981 | 23 epochs, early_stopped | 14.2s [current]``"""
    from hpo.store.record import BASELINE, EPOCHS_RUN, FAIL_REASON, SECONDS, STOP_DETAIL, STOP_REASON

    state = t.state.name
    reason = t.user_attrs.get(STOP_REASON, "")
    parts = [f"#{t.number:<3d} {state:<8s}"]
    if t.values:
        parts.append(" ".join(f"{m}={_fmt(v)}" for m, v in zip(metrics, t.values)))
    elif t.intermediate_values:
        step, value = max(t.intermediate_values.items())
        parts.append(f"{metrics[0]}={_fmt(value)}@{step}")
    detail = t.user_attrs.get(STOP_DETAIL) or t.system_attrs.get(FAIL_REASON, "")
    if state == "COMPLETE":
        detail = f"{t.user_attrs.get(EPOCHS_RUN, '?')} epochs, {reason.replace('_', ' ')}"
    if best and state == "COMPLETE" and len(best) == 1:
        parts.append(f"best #{best[0].number} {_fmt(best[0].values[0])}")
    parts.append(detail[:160])
    if t.user_attrs.get(SECONDS) is not None:
        parts.append(f"{t.user_attrs[SECONDS]:.1f}s")
    tag = t.user_attrs.get(BASELINE)
    line = " | ".join(p for p in parts if p)
    return line + (f" [{tag}]" if tag else "")


def _fmt(v) -> str:
    import math

    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.5g}"
