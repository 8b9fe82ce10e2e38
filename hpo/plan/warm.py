"""Warm start: tell a stage's sampler the COMPLETE trials of the stages that ran before it (not retrained).

Each earlier trial that fits the stage's space is added to the stage study as a COMPLETE trial with its
values, its params restricted to the stage's parameters and those parameters' distributions in the stage's
space, and the user attr ``WARM_START_OF = "PLAN/STAGE#N"`` (the study and number it copies). A trial
fits when every parameter it shares with the stage's space lies in that parameter's distribution there,
it shares at least one, and it has as many values as the stage has objectives. Copies of copies are
never made (an earlier stage's own warm-start copies are skipped). Such trials never trained in the
stage: the budget (:mod:`hpo.run.budget`), best/export (:mod:`hpo.store.stored`) and targets
(:mod:`hpo.run.targets`) leave them out; the sampler sees them like any finished trial, the pruner does
not (they have no intermediate values). Telling is done once per stage study: a study that already
holds a warm-start copy is left as it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from hpo.store.record import WARM_START_OF

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.spec import Study

logger = logging.getLogger(__name__)


def warm_started(ostudy: "optuna.Study") -> bool:
    """Whether the study already holds warm-start copies (telling is done once)."""
    return any(WARM_START_OF in t.user_attrs for t in ostudy.get_trials(deepcopy=False))


def fitting(study: "Study", trial: "FrozenTrial") -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(params, distributions) of ``trial`` in ``study``'s space, or None when it does not fit."""
    defs = {p.name: p for p in study.space.params}
    shared = {k: v for k, v in trial.params.items() if k in defs}
    if not shared or len(trial.values or ()) != len(study.directions):
        return None
    if not all(defs[k].contains(v) for k, v in shared.items()):
        return None
    return shared, {k: defs[k].distribution() for k in shared}


def tell_earlier(ostudy: "optuna.Study", study: "Study", earlier: Sequence["optuna.Study"]) -> int:
    """Add the fitting COMPLETE trials of the ``earlier`` stage studies to ``ostudy`` (once); return how many."""
    import optuna
    from optuna.trial import TrialState

    if warm_started(ostudy):
        logger.debug("study %s: already warm-started", ostudy.study_name)
        return 0
    told: list[optuna.trial.FrozenTrial] = []
    skipped = 0
    for source in earlier:
        for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if WARM_START_OF in t.user_attrs:
                continue
            fit = fitting(study, t)
            if fit is None:
                skipped += 1
                continue
            params, distributions = fit
            told.append(optuna.trial.create_trial(
                state=TrialState.COMPLETE, values=list(t.values), params=params, distributions=distributions,
                user_attrs={WARM_START_OF: f"{source.study_name}#{t.number}"}))
    if told:
        ostudy.add_trials(told)
    logger.info("study %s: warm start: told %d trial(s) of %s%s", ostudy.study_name, len(told),
                ", ".join(s.study_name for s in earlier) or "no earlier stage",
                f" ({skipped} outside this stage's space)" if skipped else "")
    return len(told)
