"""Success targets of a study, measured on its trials: which levels are met, by which trial, on
validation and (after ``hpo reevaluate``) on test.

A level (:class:`hpo.spec.targets.TargetLevel`) is met on validation by a trial that counts
(:func:`counts`: COMPLETE and trained in this study, not a warm-started copy of an earlier stage's
trial) whose stored metrics at its best epoch (user attr ``metrics``) meet every threshold; the trial
that met it first is the lowest-numbered one. On test, a level is met by a re-evaluated config whose
test metrics (mean over seeds) meet the same thresholds with ``val_x`` read as ``test_x``.

The same rows are computed from a live :class:`~hpo.spec.Study` (the worker loop, the run summary) and
from a stored study read without its YAML (``hpo status``, the report): the levels are then rebuilt from
the recorded spec (``record["spec"]["targets"]`` and the objectives' directions).

The worker loop stops with :data:`STOPPED_AT_TARGET` once a trial meets ``stop_at_target`` and records
the study user attr ``targets_met`` (level -> the first trial that met it) as levels are met.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from hpo.spec.targets import TargetLevel, as_test_metric, levels_from_record
from hpo.store.record import BASELINE, METRICS, REEVALUATION, TARGETS_MET, WARM_START_OF

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.store.stored import StoredStudy

logger = logging.getLogger(__name__)

STOPPED_AT_TARGET = "target met"  # why a run stopped (RunSummary.stopped_because) when stop_at_target was met
NOT_REEVALUATED = "test: not re-evaluated"


# -- which trials count, and which meet a level -----------------------------------------------------
def counts(trial: "FrozenTrial") -> bool:
    """Whether a trial can meet a target: COMPLETE, with metrics, trained here (not a warm-start copy)."""
    return (trial.state.name == "COMPLETE" and WARM_START_OF not in trial.user_attrs
            and isinstance(trial.user_attrs.get(METRICS), dict))


def meets(level: TargetLevel, trial: "FrozenTrial") -> bool:
    """Whether this trial meets the level on validation (its metrics at the best epoch)."""
    return counts(trial) and level.met(trial.user_attrs[METRICS])


def first_meeting(level: TargetLevel, trials: Iterable["FrozenTrial"]) -> "FrozenTrial | None":
    """The lowest-numbered trial that meets the level, None when none does."""
    return min((t for t in trials if meets(level, t)), key=lambda t: t.number, default=None)


def level_named(levels: Sequence[TargetLevel], name: str | None) -> TargetLevel | None:
    """The level called ``name`` (None for no name or an unknown one)."""
    return next((lv for lv in levels if lv.name == name), None) if name else None


# -- the levels of a study, live or stored ------------------------------------------------------------
def levels_of(source: Any) -> list[TargetLevel]:
    """The target levels, in order, of a live Study (``study.targets``), a stored study (StoredStudy,
    optuna.Study or anything with ``.stored``: rebuilt from its record), or a list of levels."""
    if isinstance(source, (list, tuple)):
        return list(source)
    stored = _stored(source)
    if stored is None:
        return list(source.targets)
    return stored_levels(stored)


def stored_levels(stored: "StoredStudy") -> list[TargetLevel]:
    """The levels of a stored study from its recorded spec (no levels for a study without ``targets:``)."""
    targets = stored.spec.get("targets")
    if not targets or not isinstance(targets, dict):
        return []
    directions = dict(zip(stored.metrics, stored.directions))
    return levels_from_record(targets, directions, _natural_direction(stored))


def stop_level_of(source: Any) -> str | None:
    """The study's ``stop_at_target`` level name (live or stored), None without one."""
    stored = _stored(source)
    if stored is None:
        return source.stop_at_target
    return stored.spec.get("stop_at_target")


def _stored(source: Any) -> "StoredStudy | None":
    """The StoredStudy behind a stored source; None for a live Study."""
    from hpo.store.stored import StoredStudy

    if isinstance(source, StoredStudy):
        return source
    if isinstance(getattr(source, "stored", None), StoredStudy):  # the report's StudyView
        return source.stored
    if hasattr(source, "study_name") and hasattr(source, "user_attrs"):  # an optuna.Study
        return StoredStudy(source)
    return None


def _natural_direction(stored: "StoredStudy"):
    """The task's natural direction of a metric, where the family is installed (else None: minimize)."""
    try:
        return stored.task_class.direction_of
    except Exception as e:  # a stored study of a family not installed here: thresholds still read
        logger.debug("study %s: no task class for target directions (%s)", stored.name, e)
        return None


# -- the rows: one per level ----------------------------------------------------------------------------
def targets_met(source: Any, trials: Sequence["FrozenTrial"], *, reevaluation: dict | None = None) -> list[dict]:
    """One row per level of ``source`` (see :func:`levels_of`), in order: ``level``, ``rule`` (e.g.
    ``val_mae <= 3.8``), ``stops`` (it is the study's ``stop_at_target``), ``met`` (on validation), ``trial`` and ``value`` (the first trial that met it and
    its values of the level's metrics; None when not met), ``best_trial`` and ``best_value`` (the best
    trial by the level's first metric among those that meet it; when none does, the closest one that
    counts, or None), and ``test``: None when not re-evaluated, else ``{"met", "config", "trial",
    "value", "met_by"}`` (the first re-evaluated config that meets it, else the first one, usually the
    tuned best). ``reevaluation`` defaults to the stored study's (user attr ``reevaluation``)."""
    levels = levels_of(source)
    if not levels:
        return []
    stop_at = None if isinstance(source, (list, tuple)) else stop_level_of(source)
    if reevaluation is None:
        stored = _stored(source)
        reevaluation = stored.study.user_attrs.get(REEVALUATION) if stored is not None else None
    eligible = [t for t in trials if counts(t)]
    return [_row(level, eligible, reevaluation, stops=level.name == stop_at) for level in levels]


def _row(level: TargetLevel, eligible: list["FrozenTrial"], reevaluation: dict | None, *, stops: bool) -> dict:
    meeting = [t for t in eligible if level.met(t.user_attrs[METRICS])]
    first = min(meeting, key=lambda t: t.number, default=None)
    best = _best(level, meeting or eligible)
    return {
        "level": level.name, "rule": level.describe(), "stops": stops, "met": first is not None,
        "trial": first.number if first else None, "value": _values(level, first) if first else None,
        "best_trial": best.number if best else None, "best_value": _values(level, best) if best else None,
        "test": test_verdict(level, reevaluation),
    }


def _best(level: TargetLevel, trials: list["FrozenTrial"]) -> "FrozenTrial | None":
    """The trial best in the level's first metric (in its direction); trials lacking it come last."""
    metric, (_, direction) = next(iter(level.thresholds.items()))
    sign = 1.0 if direction == "minimize" else -1.0

    def key(t: "FrozenTrial") -> tuple:
        v = t.user_attrs[METRICS].get(metric)
        ok = isinstance(v, (int, float)) and v == v
        return (0, sign * v, t.number) if ok else (1, 0.0, t.number)

    return min(trials, key=key, default=None)


def _values(level: TargetLevel, trial: "FrozenTrial") -> dict[str, Any]:
    metrics = trial.user_attrs[METRICS]
    return {m: metrics.get(m) for m in level.thresholds}


def test_verdict(level: TargetLevel, reevaluation: dict | None) -> dict | None:
    """Whether the re-evaluated configs meet the level on test (mean over seeds); None when the study
    was not re-evaluated."""
    configs = (reevaluation or {}).get("configs") or {}
    if not configs:
        return None
    checked = [(label, entry, reevaluated_metrics(entry)) for label, entry in configs.items()]
    met_by = [label for label, _, metrics in checked if level.met_on_test(metrics)]
    label, entry, metrics = next((c for c in checked if c[0] in met_by), checked[0])
    return {"met": bool(met_by), "config": label, "trial": entry.get("trial"), "met_by": met_by,
            "n_seeds": len(entry.get("seeds") or entry.get("runs") or []),
            "value": {as_test_metric(m): metrics.get(as_test_metric(m)) for m in level.thresholds}}


def reevaluated_metrics(entry: dict) -> dict[str, float]:
    """One re-evaluated config's metrics, mean over its seeds: ``test_x`` (its test summary) and the
    ``val_x`` of its runs' best epochs (so a level naming a non-split metric still reads it)."""
    out: dict[str, float] = {}
    runs = entry.get("runs") or []
    for name in {k for r in runs for k in (r.get("val") or {})}:
        vals = [r["val"][name] for r in runs if isinstance((r.get("val") or {}).get(name), (int, float))]
        if vals:
            out[name] = sum(vals) / len(vals)
    for m, s in (entry.get("summary") or {}).items():
        if isinstance(s, dict) and isinstance(s.get("mean"), (int, float)):
            out[f"test_{m}"] = s["mean"]
    return out


# -- what people read ------------------------------------------------------------------------------------
def describe_target(row: dict) -> str:
    """One line per level, e.g. ``conservative (val_mae <= 3.8): met by trial #3 (val_mae=3.71); best #5
    (val_mae=3.62) · test: met by tuned_rank1_trial5 (test_mae=3.65, mean of 3 seeds)``."""
    head = f"{row['level']} ({row['rule']}{'; stop_at_target' if row.get('stops') else ''}): "
    if row["met"]:
        head += f"met by trial #{row['trial']} ({format_values(row['value'])})"
        if row["best_trial"] != row["trial"]:
            head += f"; best #{row['best_trial']} ({format_values(row['best_value'])})"
    elif row["best_trial"] is not None:
        head += f"not met (closest: trial #{row['best_trial']}, {format_values(row['best_value'])})"
    else:
        head += "not met (no complete trial yet)"
    return f"{head} · {describe_test(row['test'])}"


def describe_test(test: dict | None) -> str:
    """The test half of a row: ``test: met by LABEL (...)``, ``test: not met (LABEL: ...)`` or
    ``test: not re-evaluated``."""
    if test is None:
        return NOT_REEVALUATED
    seeds = f", mean of {test['n_seeds']} seeds" if test.get("n_seeds") else ""
    if test["met"]:
        return f"test: met by {test['config']} ({format_values(test['value'])}{seeds})"
    return f"test: not met ({test['config']}: {format_values(test['value'])}{seeds})"


def format_values(values: dict | None) -> str:
    """``val_mae=3.71, val_rmse=4.2`` (n/a for a missing or non-numeric value)."""

    def fmt(v: Any) -> str:
        return f"{v:.5g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"

    return ", ".join(f"{m}={fmt(v)}" for m, v in (values or {}).items())


# -- the worker loop's side: record what was met, and whether to stop -----------------------------------
def record_met(ostudy: "optuna.Study", levels: Sequence[TargetLevel], trial: "FrozenTrial") -> dict[str, int]:
    """Record in the study user attr ``targets_met`` each level this trial meets that is not recorded
    yet with a lower trial number (several workers merge: the lowest number stays); return the levels
    newly recorded."""
    new = {lv.name: trial.number for lv in levels if meets(lv, trial)}
    if not new:
        return {}
    have = dict(ostudy.user_attrs.get(TARGETS_MET) or {})
    changed = {k: n for k, n in new.items() if k not in have or have[k] > n}
    if changed:
        ostudy.set_user_attr(TARGETS_MET, {**have, **changed})
        for name, n in changed.items():
            logger.info("study %s: target %s met by trial #%d", ostudy.study_name, name, n)
    return changed


def stop_met(levels: Sequence[TargetLevel], stop_at: str | None, trials: Iterable["FrozenTrial"]) -> "FrozenTrial | None":
    """The first trial meeting the ``stop_at_target`` level (the study is over), None if none or no such level."""
    level = level_named(levels, stop_at)
    return first_meeting(level, trials) if level is not None else None


def target_reached(levels: Sequence[TargetLevel], stop_at: str | None, trials: Sequence["FrozenTrial"]) -> "FrozenTrial | None":
    """The trial that ends the study by ``stop_at_target``, once no named run (baseline, ablation run) is still
    queued: those are the yardstick the result is read against, so a target ends the search, not the plan's
    own runs. None while the study goes on. Every backend asks this before it starts a trial."""
    first = stop_met(levels, stop_at, trials)
    if first is None or any(t.state.name == "WAITING" and BASELINE in t.user_attrs for t in trials):
        return None
    return first
