"""Gates: rules on a trial's metrics at one epoch that decide its fate ("at epoch 10 continue only if
val_mae < 4.0; stop if > 4.5"), compiled from ``gates:`` of a study or stage (:class:`hpo.spec.schema.GateSpec`).

A gate reads the metrics of the epoch it is applied after (``val_mae``, ``train_loss``, ...): every name in its
expressions must be a metric of the task. A trial that a gate stops is PRUNED with stop reason ``gate`` and the
rule in its stop detail (:mod:`hpo.run.trial`); a protected baseline is not stopped (the verdict is recorded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hpo.errors import name_rule
from hpo.spec.expr import Expression, ExpressionError

if TYPE_CHECKING:
    from hpo.spec.schema import GateSpec
    from hpo.tasks import Task

Adder = Callable[..., None]


@dataclass(frozen=True)
class Gate:
    """One compiled gate: applied after epoch ``epoch`` (1-based)."""

    name: str
    epoch: int
    stop_if: Expression | None = None
    continue_if: Expression | None = None

    def verdict(self, metrics: Mapping[str, Any]) -> str | None:
        """The stop detail when this gate stops a trial with these metrics of its epoch, else None.

        A metric the expression needs but the epoch lacks, or a non-finite one, stops the trial too
        (a gate that cannot be judged does not wave a trial through)."""
        names = set(self.stop_if.names if self.stop_if else ()) | set(self.continue_if.names if self.continue_if else ())
        missing = sorted(n for n in names if not _finite(metrics.get(n)))
        values = ", ".join(f"{n}={metrics[n]:.5g}" for n in sorted(names) if _finite(metrics.get(n)))
        head = f"gate {self.name} at epoch {self.epoch}: "
        if missing:
            return head + f"{', '.join(missing)} not available or not finite, so the rule cannot be judged" + (f" ({values})" if values else "")
        if self.stop_if is not None and _truth(self.stop_if, metrics):
            return head + f"stop_if {self.stop_if.source} held ({values})"
        if self.continue_if is not None and not _truth(self.continue_if, metrics):
            return head + f"continue_if {self.continue_if.source} failed ({values})"
        return None

    def describe(self) -> str:
        rules = [f"stop if {self.stop_if.source}" if self.stop_if else "", f"continue only if {self.continue_if.source}" if self.continue_if else ""]
        return f"{self.name}: at epoch {self.epoch}, " + "; ".join(r for r in rules if r)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _truth(expr: Expression, metrics: Mapping[str, Any]) -> bool:
    try:
        return bool(expr.evaluate(metrics))
    except ExpressionError:
        return False


def compile_gates(gates: Sequence["GateSpec"], task_cls: type["Task"], add: Adder, prefix: str = "gates",
                  max_epochs: int | None = None) -> list[Gate]:
    """Check and compile gates; problems go to ``add(path, message, got)``."""
    names = task_cls.objective_names()
    out: list[Gate] = []
    seen: set[str] = set()
    for i, g in enumerate(gates):
        path = f"{prefix}.{i}"
        name = g.name or f"gate{i}"
        if name in seen:
            add(f"{path}.name", "must be unique among the gates", name)
        seen.add(name)
        if g.stop_if is None and g.continue_if is None:
            add(path, "must set stop_if or continue_if (an expression over the epoch's metrics)", has_got=False)
            continue
        if max_epochs is not None and g.epoch > max_epochs:
            add(f"{path}.epoch", f"must be at most the trials' epochs ({max_epochs}), or the gate never applies", g.epoch)
        exprs = {}
        for key in ("stop_if", "continue_if"):
            source = getattr(g, key)
            if source is None:
                continue
            try:
                expr = Expression(source)
            except ExpressionError as e:
                add(f"{path}.{key}", f"must be a valid expression ({e})", source)
                continue
            unknown = sorted(expr.names - set(names))
            if unknown:
                add(f"{path}.{key}", name_rule(f"metric of task {task_cls.name}", unknown[0], names), unknown[0])
                continue
            if not expr.names:
                add(f"{path}.{key}", "must name at least one metric (e.g. val_mae < 4.0)", source)
                continue
            exprs[key] = expr
        if len(exprs) == (g.stop_if is not None) + (g.continue_if is not None):
            out.append(Gate(name, g.epoch, exprs.get("stop_if"), exprs.get("continue_if")))
    return out
