"""Success targets: named levels of a study ("conservative: val_mae 3.8, aggressive: 3.5"), compiled from
``targets:`` (level -> {metric: threshold}).

A level is met by metrics where every one of its metrics is at least as good as its threshold, in the
metric's direction (the objective's direction when the metric is an objective, else the metric's natural
one). On test (after ``hpo reevaluate``) the same thresholds apply to ``test_<x>`` for each ``val_<x>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hpo.errors import name_rule

if TYPE_CHECKING:
    from hpo.tasks import Task

Adder = Callable[..., None]


@dataclass(frozen=True)
class TargetLevel:
    """One named level: metric -> (threshold, direction)."""

    name: str
    thresholds: dict[str, tuple[float, str]]

    def met(self, metrics: Mapping[str, Any]) -> bool:
        """Whether these metrics (keyed like ``val_mae``) meet every threshold of the level."""
        return all(_meets(metrics.get(m), t, d) for m, (t, d) in self.thresholds.items())

    def met_on_test(self, metrics: Mapping[str, Any]) -> bool:
        """The same thresholds on test metrics: ``test_x`` for ``val_x`` (other metrics as named)."""
        return all(_meets(metrics.get(as_test_metric(m)), t, d) for m, (t, d) in self.thresholds.items())

    def describe(self) -> str:
        return ", ".join(f"{m} {'<=' if d == 'minimize' else '>='} {t:g}" for m, (t, d) in self.thresholds.items())


def as_test_metric(metric: str) -> str:
    """``val_mae`` -> ``test_mae``; other names unchanged (``train_val_gap`` is not a split metric)."""
    return "test_" + metric[4:] if metric.startswith("val_") else metric


def _meets(value: Any, threshold: float, direction: str) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value <= threshold if direction == "minimize" else value >= threshold


def levels_from_record(targets: Mapping[str, Mapping[str, Any]], directions: Mapping[str, str],
                       natural: Callable[[str], str | None] | None = None) -> list[TargetLevel]:
    """Levels from a recorded spec (a stored study read without its task checks): ``directions`` of the
    objectives; other metrics use ``natural`` (default: minimize, unless the name says otherwise)."""
    out = []
    for level, metrics in (targets or {}).items():
        th = {}
        for m, t in (metrics or {}).items():
            d = directions.get(m) or (natural(m) if natural else None) or "minimize"
            th[m] = (float(t), d)
        out.append(TargetLevel(level, th))
    return out


def compile_targets(targets: Mapping[str, Mapping[str, Any]], objectives: Sequence[Any], task_cls: type["Task"],
                    add: Adder, prefix: str = "targets") -> list[TargetLevel]:
    """Check and compile ``targets:``; ``objectives`` are the study's (metric, direction)."""
    directions = {o.metric: o.direction for o in objectives}
    names = task_cls.objective_names()
    out = []
    for level, metrics in targets.items():
        path = f"{prefix}.{level}"
        if not metrics:
            add(path, "must map at least one metric to its threshold, e.g. {val_mae: 3.8}", metrics)
            continue
        th, ok = {}, True
        for m, t in metrics.items():
            if m not in names:
                add(f"{path}.{m}", name_rule(f"metric of task {task_cls.name}", m, names), m)
                ok = False
                continue
            d = directions.get(m) or task_cls.direction_of(m)
            if d is None:
                add(f"{path}.{m}", f"must be an objective or a metric with a known direction (declare {m} as an objective)", m)
                ok = False
                continue
            if isinstance(t, float) and not math.isfinite(t):
                add(f"{path}.{m}", "must be a finite number", t)
                ok = False
                continue
            th[m] = (float(t), d)
        if ok:
            out.append(TargetLevel(level, th))
    return out
