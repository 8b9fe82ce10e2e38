"""A stage's result and the choice of the next stage.

:func:`stage_values` measures a finished stage on its own trials (warm-start copies of earlier stages'
trials are not its own): ``best`` (its best primary objective over its COMPLETE trials), ``previous`` (the
best of the stage that ran before it in the plan, None for the first), ``baseline`` (the best of its
baseline trials, None without one), ``improvement`` (relative improvement of ``best`` over ``previous`` in
the objective's direction: positive is better; None without a previous value or when it is 0), ``trials``
(COMPLETE trials) and one bool per target level (met by one of its trials).

:func:`decide` evaluates the stage's ``next`` rules in order on those values: the first whose ``when``
holds (or that has none) wins; a comparison with a missing value (None) does not hold. No rule matching
(or no rules) goes to the following stage, or ends the plan after the last one. The decision is what is
recorded on the stage study (user attr ``STAGE``): ``{"next", "rule", "values"}``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from hpo.spec.stages import END
from hpo.store.record import BASELINE, WARM_START_OF

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpo.spec import Study
    from hpo.spec.stages import Stage

logger = logging.getLogger(__name__)

DEFAULT_RULE = "default"  # the decision's rule when no next rule matched
RUNNING, DONE = "running", "done"  # a stage study's state (study user attr STAGE["state"])


def own_complete(trials: Sequence["FrozenTrial"]) -> list["FrozenTrial"]:
    """The COMPLETE trials a stage trained itself (not the warm-start copies of earlier stages' trials)."""
    return [t for t in trials if t.state.name == "COMPLETE" and WARM_START_OF not in t.user_attrs and t.values]


def best_value(trials: Sequence["FrozenTrial"], index: int, direction: str) -> float | None:
    """The best value of objective ``index`` over these trials' (COMPLETE, own) values; None without any."""
    values = [t.values[index] for t in own_complete(trials) if len(t.values) > index]
    if not values:
        return None
    return min(values) if direction == "minimize" else max(values)


def improvement(best: float | None, previous: float | None, direction: str) -> float | None:
    """Relative improvement of ``best`` over ``previous``: positive when better in ``direction``."""
    if best is None or previous is None or previous == 0:
        return None
    gain = (previous - best) if direction == "minimize" else (best - previous)
    return gain / abs(previous)


def stage_values(study: "Study", trials: Sequence["FrozenTrial"], previous: float | None) -> dict[str, Any]:
    """The values the stage's ``next`` rules read (see the module docstring)."""
    index, direction = study.primary_index, study.primary.direction
    best = best_value(trials, index, direction)
    baselines = [t for t in trials if t.user_attrs.get(BASELINE)]
    values: dict[str, Any] = {
        "best": best,
        "previous": previous,
        "baseline": best_value(baselines, index, direction),
        "improvement": improvement(best, previous, direction),
        "trials": len(own_complete(trials)),
    }
    values.update(levels_met(study, trials))
    return values


def levels_met(study: "Study", trials: Sequence["FrozenTrial"]) -> dict[str, bool]:
    """Target level -> whether one of the stage's own trials meets it on validation."""
    from hpo.run.targets import targets_met

    return {row["level"]: bool(row["met"]) for row in targets_met(study, list(trials))}


def decide(stage: "Stage", stages: Sequence["Stage"], values: dict[str, Any]) -> dict[str, Any]:
    """The next stage (a name, or ``end``), the rule that chose it, and the values it was chosen on."""
    for rule in stage.next:
        if rule.matches(values):
            return {"next": rule.goto, "rule": rule.describe(), "values": values}
        if rule.when is not None and any(values.get(n) is None for n in rule.when.names):
            logger.info("stage %s: rule %r does not hold: %s has no value", stage.name, rule.describe(),
                        ", ".join(sorted(n for n in rule.when.names if values.get(n) is None)))
    following = next((s.name for s in stages if s.index == stage.index + 1), END)
    return {"next": following, "rule": DEFAULT_RULE, "values": values}


def describe_decision(decision: dict | None) -> str:
    """``next: refine (when improvement > 0.01 -> goto refine)`` / ``next: end (default)``."""
    if not decision:
        return "not decided"
    return f"next: {decision.get('next')} ({decision.get('rule')})"
