"""What the HTML report and the dashboard read from a stored study: :class:`StudyView`, the trials read
once (light: without curves and intermediate values; the few whose curves are drawn read whole), the
success targets (:mod:`hpo.run.targets`) and the "plans vs tuned" rows both show.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from hpo.store.record import BASELINE, NOT_TRAINED, REEVALUATION, STOP_DETAIL, STOP_REASON

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


class StudyView:
    """What the report needs from a stored study, read once."""

    def __init__(self, ostudy: "optuna.Study") -> None:
        from hpo.store.storage import TrialsSnapshot
        from hpo.store.stored import StoredStudy

        self.study = ostudy
        self.stored = StoredStudy(ostudy)
        # read once, without the curves and intermediate values (a 10,000-trial study is mostly those);
        # the few trials whose curves are drawn are fetched whole (full())
        self.trials = self.stored.light_trials()
        self.snapshot = TrialsSnapshot(ostudy, self.trials)
        self._full: dict[int, "FrozenTrial"] = {}
        self.metrics = self.stored.metrics
        self.directions = self.stored.directions
        self.complete = [t for t in self.trials if t.state.name == "COMPLETE"]
        self.task = self.stored.family or "?"
        self.reevaluation = ostudy.user_attrs.get(REEVALUATION)

    @property
    def monitor(self) -> str:
        """The primary objective's metric (``primary: true``, else the first)."""
        return self.metrics[self.stored.primary_index]

    @property
    def monitor_direction(self) -> str:
        return self.directions[self.stored.primary_index]

    @property
    def metric(self) -> str:
        """The monitored metric without its split (``val_mae`` -> ``mae``): the curves' name for it."""
        return self.monitor.split("_", 1)[1] if self.monitor.startswith("val_") else self.monitor

    def sign(self, i: int = 0) -> float:
        return 1.0 if self.directions[i] == "minimize" else -1.0

    def full(self, t: "FrozenTrial") -> "FrozenTrial":
        """The trial with its curves (read from the store the first time)."""
        if t.number not in self._full:
            self._full[t.number] = self.stored.full(t)
        return self._full[t.number]

    @cached_property
    def targets(self) -> list[dict]:
        """One row per success-target level (:func:`hpo.run.targets.targets_met`); [] without ``targets:``."""
        from hpo.run.targets import targets_met

        return targets_met(self.stored, self.trials, reevaluation=self.reevaluation)

    def ranked(self) -> list["FrozenTrial"]:
        if len(self.directions) > 1:
            best = {t.number for t in self.stored.pareto(self.complete)}
            return [t for t in self.complete if t.number in best]
        return sorted(self.complete, key=lambda t: self.sign() * t.values[0])

    def best(self) -> "FrozenTrial | None":
        r = self.ranked()
        return r[0] if r else None


def plans_vs_tuned(v: StudyView) -> list[dict]:
    """Each named baseline's best finished trial against the best trial (single objective)."""
    best = v.best()
    if best is None or len(v.directions) > 1:
        return []
    rows = []
    by_name: dict[str, "FrozenTrial"] = {}
    rank = {"COMPLETE": 3, "PRUNED": 2, "FAIL": 1}
    for t in v.trials:  # per plan: its complete trial, else pruned, else failed (a failed plan is reported as such)
        name = t.user_attrs.get(BASELINE)
        if not name or t.state.name not in rank or t.user_attrs.get(STOP_REASON) in NOT_TRAINED:
            continue
        if name not in by_name or rank[t.state.name] >= rank[by_name[name].state.name]:
            by_name[name] = t
    for name, t in sorted(by_name.items(), key=lambda kv: kv[1].number):
        value = t.values[0] if t.values else None
        state = t.state.name if t.state.name != "FAIL" else f"FAIL: {str(t.user_attrs.get(STOP_DETAIL) or t.user_attrs.get(STOP_REASON) or '?')[:120]}"
        row = {"plan": name, "trial": t.number, "state": state, "value": value, "best": best.values[0], "best_trial": best.number}
        if value is not None and value != 0:
            row["improvement_pct"] = (value - best.values[0]) / abs(value) * 100 * v.sign()
        rows.append(row)
    return rows
