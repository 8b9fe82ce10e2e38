"""The plan's parts on real objects (a loaded plan, real SQLite studies), without training: the next-rule
decision, the stage values, which earlier trials fit a stage, telling them once, and how the budget and
the best/selection readers treat told trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.plan.decide import best_value, decide, improvement, stage_values
from hpo.plan.warm import fitting, tell_earlier
from hpo.run.budget import budget_of
from hpo.spec import load_study
from hpo.store.record import BASELINE, METRICS, STAGE, WARM_START_OF
from hpo.store.stored import StoredStudy
from tests.hpo.plan.plans import write_plan

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def plan(tmp_path):
    return load_study(write_plan(tmp_path, """
        - name: a
          next:
            - {when: "improvement > 0.01", goto: c}
            - {when: "easy and trials >= 2", goto: end}
        - name: b
          space:
            params:
              lr: {type: float, low: 1.0e-2, high: 2.0e-2}
              hidden: [16]
        - name: c
    """, extra="targets: {easy: {val_mae: 0.5}}\n"), check_data=False)


def _trial(value, lr=1.0e-2, hidden=16, study=None, **attrs):
    """A COMPLETE trial in the plan's space (or in ``study``'s space: as that stage would have sampled it)."""
    dists = ({p.name: p.distribution() for p in study.space.params} if study is not None else
             {"lr": FloatDistribution(1.0e-3, 3.0e-2, log=True), "hidden": optuna.distributions.CategoricalDistribution([8, 16])})
    return create_trial(state=TrialState.COMPLETE, values=[value], params={"lr": lr, "hidden": hidden},
                        distributions=dists, user_attrs={METRICS: {"val_mae": value}, **attrs})


def test_rules_in_order_a_missing_value_does_not_hold_and_the_default_is_the_following_stage(plan):
    a, b, c = plan.stages
    first = {"best": 0.4, "previous": None, "baseline": None, "improvement": None, "trials": 2, "easy": True}
    d = decide(a, plan.stages, first)
    assert d == {"next": "end", "rule": "when easy and trials >= 2 -> goto end", "values": first}
    better = {**first, "improvement": 0.2}
    assert decide(a, plan.stages, better)["next"] == "c"  # the first matching rule wins
    assert decide(a, plan.stages, {**first, "easy": False}) == {"next": "b", "rule": "default", "values": {**first, "easy": False}}
    assert decide(c, plan.stages, first)["next"] == "end"  # after the last stage: end


def test_stage_values_on_own_trials_only(plan):
    trials = [_trial(0.6, **{BASELINE: "current"}), _trial(0.45), _trial(0.1, **{WARM_START_OF: "toyplan/x#0"}),
              create_trial(state=TrialState.PRUNED, params={}, distributions={})]
    values = stage_values(plan.stages[0].study, trials, previous=0.5)
    assert values == {"best": 0.45, "previous": 0.5, "baseline": 0.6, "improvement": pytest.approx(0.1),
                      "trials": 2, "easy": True}
    assert stage_values(plan.stages[0].study, trials[:1], previous=None)["easy"] is False


def test_improvement_is_positive_when_better_in_the_objectives_direction():
    assert improvement(0.9, 1.0, "minimize") == pytest.approx(0.1)
    assert improvement(1.1, 1.0, "minimize") == pytest.approx(-0.1)
    assert improvement(1.1, 1.0, "maximize") == pytest.approx(0.1)
    assert improvement(-0.5, -1.0, "maximize") == pytest.approx(0.5)
    assert improvement(None, 1.0, "minimize") is None and improvement(1.0, None, "minimize") is None
    assert improvement(1.0, 0.0, "minimize") is None
    assert best_value([_trial(3.0), _trial(2.0)], 0, "maximize") == 3.0 and best_value([], 0, "minimize") is None


def test_an_earlier_trial_fits_a_stage_when_its_shared_params_lie_in_the_stages_space(plan):
    b = plan.stages[1].study
    params, dists = fitting(b, _trial(0.3, lr=1.5e-2, hidden=16))
    assert params == {"lr": 1.5e-2, "hidden": 16} and dists["lr"] == FloatDistribution(1.0e-2, 2.0e-2)
    assert fitting(b, _trial(0.3, lr=5.0e-3)) is None  # lr outside the stage's range
    assert fitting(b, _trial(0.3, hidden=8)) is None  # a category the stage dropped
    unrelated = create_trial(state=TrialState.COMPLETE, values=[0.3], params={"depth": 2},
                             distributions={"depth": optuna.distributions.IntDistribution(1, 3)})
    assert fitting(b, unrelated) is None  # nothing in common


def _study(tmp_path, name, staged=True):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'parts.db'}")
    s = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    if staged:
        s.set_user_attr(STAGE, {"plan": "toyplan", "index": 0, "name": name, "state": "running"})
    return s


def test_told_trials_are_added_once_and_left_out_of_budget_best_and_light_reads(tmp_path, plan):
    earlier = _study(tmp_path, "toyplan/a")
    earlier.add_trials([_trial(0.2, lr=1.2e-2), _trial(0.3, lr=5.0e-3), _trial(0.25, lr=1.9e-2, **{WARM_START_OF: "x#1"})])
    here = _study(tmp_path, "toyplan/b")
    here.add_trial(_trial(0.4, lr=1.5e-2, study=plan.stages[1].study))
    assert tell_earlier(here, plan.stages[1].study, [earlier]) == 1  # only #0 fits; a copy is never copied again
    assert tell_earlier(here, plan.stages[1].study, [earlier]) == 0  # once per stage study
    trials = here.get_trials()
    told = [t for t in trials if WARM_START_OF in t.user_attrs]
    assert [t.user_attrs[WARM_START_OF] for t in told] == ["toyplan/a#0"] and told[0].value == 0.2
    assert told[0].distributions["lr"] == FloatDistribution(1.0e-2, 2.0e-2)  # the stage's distribution
    b = budget_of(trials)
    assert (b.used, b.complete, b.told) == (1, 1, 1)
    stored = StoredStudy(here)
    assert [t.value for t in stored.best(5)] == [0.4]  # the told 0.2 is better, but was not trained here
    assert [t.value for t in stored.light_trials()] == [0.4]
    assert sorted(t.value for t in stored.light_trials(told=True)) == [0.2, 0.4]
    assert [t.value for t in stored.light_trials(without_user_attrs=None)] == [0.4]
    flat = _study(tmp_path, "flat", staged=False)  # a flat study: read as before
    flat.add_trial(_trial(0.7))
    assert [t.value for t in StoredStudy(flat).best()] == [0.7]
