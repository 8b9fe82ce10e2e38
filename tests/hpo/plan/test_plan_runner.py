"""Staged plans of the toy family end to end on a real SQLite store: stages in order with their own
fidelity and names, narrowing, warm start, next rules, going back, the loop guard and deadlines."""

from __future__ import annotations

import pytest

from hpo.run.budget import budget_of
from hpo.store.record import BASELINE, CONFIG, RECORD_ATTR, WARM_START_OF
from tests.hpo.plan.plans import run, stage_attr, stage_trials, write_plan

pytestmark = pytest.mark.slow


def test_two_stages_run_in_order_with_their_own_fidelity_and_names(tmp_path):
    path = write_plan(tmp_path, """
        - name: quick
          training: {epochs: 2}
        - name: full
          training: {epochs: 4}
          budget: {n_trials: 2}
    """)
    summary = run(path, tmp_path)
    assert summary.finished and [r.study_name for r in summary.stages] == ["toyplan/quick", "toyplan/full"]
    quick, full = stage_trials(tmp_path, "toyplan/quick"), stage_trials(tmp_path, "toyplan/full")
    assert budget_of(quick).used == 3 and budget_of(full).used == 2  # each stage's own budget
    assert {t.user_attrs[CONFIG]["epochs"] for t in quick} == {2}
    assert {t.user_attrs[CONFIG]["epochs"] for t in full} == {4}
    assert max(t.datetime_complete for t in quick) <= min(t.datetime_start for t in full)  # in order
    # the first stage runs the study's baselines, later ones none of the inherited
    assert [t.user_attrs.get(BASELINE) for t in quick].count("current") == 1
    assert not any(t.user_attrs.get(BASELINE) for t in full)
    a, b = stage_attr(tmp_path, "toyplan/quick"), stage_attr(tmp_path, "toyplan/full")
    assert (a["plan"], a["index"], a["name"], a["state"]) == ("toyplan", 0, "quick", "done")
    assert a["decision"]["next"] == "full" and a["decision"]["rule"] == "default"
    values = a["decision"]["values"]
    assert values["trials"] == 3 and values["previous"] is None and values["improvement"] is None
    assert values["best"] == min(t.value for t in quick) and values["baseline"] is not None
    assert b["decision"]["next"] == "end" and b["decision"]["values"]["previous"] == values["best"]
    assert summary.stages[1].best == b["decision"]["values"]["best"]

    again = run(path, tmp_path)  # a finished plan is not run again
    assert again.finished and not any(r.ran for r in again.stages)
    assert len(stage_trials(tmp_path, "toyplan/quick")) == len(quick)


def test_narrow_stage_searches_a_narrower_space_and_warm_starts_from_stage_one(tmp_path):
    path = write_plan(tmp_path, """
        - name: wide
          training: {epochs: 2}
          budget: {n_trials: 4}
        - name: narrow
          narrow: {top: 2, margin: 0.1, promote: true}
          warm_start: true
          budget: {n_trials: 3}
    """)
    summary = run(path, tmp_path)
    assert summary.finished
    wide, narrow = stage_trials(tmp_path, "toyplan/wide"), stage_trials(tmp_path, "toyplan/narrow")
    # the stage's space is stage 1's narrowed around its top trials, and recorded with the stage study
    from hpo.store.stored import load_stored_study

    ostudy = load_stored_study(f"sqlite:///{tmp_path / 'hpo.db'}", "toyplan/narrow")
    lr = ostudy.user_attrs[RECORD_ATTR]["spec"]["space"]["params"]["lr"]
    assert 1.0e-3 <= lr["low"] and lr["high"] <= 3.0e-2 and (lr["high"] - lr["low"]) < (3.0e-2 - 1.0e-3)
    own = [t for t in narrow if WARM_START_OF not in t.user_attrs]
    assert all(lr["low"] <= t.params["lr"] <= lr["high"] for t in own)
    narrowed = stage_attr(tmp_path, "toyplan/narrow")["narrowed"]
    assert narrowed["from"] == "toyplan/wide" and len(narrowed["top"]) == 2
    # promote: the top trials are re-trained first in this stage
    top = sorted((t for t in wide if t.state.name == "COMPLETE"), key=lambda t: t.value)[:2]
    promoted = {t.user_attrs.get(BASELINE) for t in own if t.user_attrs.get(BASELINE)}
    expected = {t.user_attrs.get(BASELINE) or f"phase1_trial_{t.number}" for t in top}
    assert promoted == expected and set(narrowed["promote"]) == expected

    # warm start: the stage-1 trials that fit the narrowed space are told, not trained, not counted
    told = [t for t in narrow if WARM_START_OF in t.user_attrs]
    fitting = [t for t in wide if t.state.name == "COMPLETE" and lr["low"] <= t.params["lr"] <= lr["high"]]
    assert sorted(t.user_attrs[WARM_START_OF] for t in told) == sorted(f"toyplan/wide#{t.number}" for t in fitting)
    assert told and all(t.state.name == "COMPLETE" and CONFIG not in t.user_attrs for t in told)
    assert sorted(t.value for t in told) == sorted(t.value for t in fitting)
    b = budget_of(narrow)
    assert b.used == 3 and b.told == len(told) and len(narrow) == 3 + len(told)  # the sampler's study holds them
    assert summary.stages[1].told == len(told)
    # best, export and the decision are the stage's own trials
    from hpo.store.stored import StoredStudy

    best = StoredStudy(ostudy).best(1)[0]
    assert WARM_START_OF not in best.user_attrs
    assert stage_attr(tmp_path, "toyplan/narrow")["decision"]["values"]["trials"] == 3
    assert summary.stages[1].summary.best[0]["number"] == best.number


def test_next_rules_jump_over_a_stage_and_end_on_a_target(tmp_path):
    path = write_plan(tmp_path, """
        - name: a
          training: {epochs: 1}
          budget: {n_trials: 2}
          next:
            - {when: "improvement > 0.0", goto: b}
            - {when: "trials >= 2 and best < 1000", goto: c}
        - name: b
          budget: {n_trials: 1}
        - name: c
          budget: {n_trials: 1}
          next:
            - {when: "hopeless", goto: b}
            - {when: "easy", goto: end}
            - {goto: b}
    """, extra="targets: {easy: {val_mae: 1000.0}, hopeless: {val_mae: 0.0}}\n")
    summary = run(path, tmp_path)
    assert [r.name for r in summary.stages] == ["a", "c"] and summary.finished
    from hpo.plan.status import stage_studies

    assert [n for n, _ in stage_studies(f"sqlite:///{tmp_path / 'hpo.db'}", "toyplan")] == ["toyplan/a", "toyplan/c"]
    a = stage_attr(tmp_path, "toyplan/a")["decision"]
    # improvement is None in the first stage: the rule that compares it does not hold (and does not crash)
    assert a["next"] == "c" and a["rule"] == "when trials >= 2 and best < 1000 -> goto c"
    c = stage_attr(tmp_path, "toyplan/c")["decision"]
    assert c["next"] == "end" and c["rule"] == "when easy -> goto end"
    assert c["values"]["easy"] is True and c["values"]["hopeless"] is False
    assert c["values"]["previous"] == a["values"]["best"] and c["values"]["improvement"] is not None
    assert "chose end" in summary.stopped_because


def test_going_back_runs_a_new_study_and_the_loop_guard_stops_the_plan(tmp_path):
    path = write_plan(tmp_path, """
        - name: again
          training: {epochs: 1}
          budget: {n_trials: 1}
          warm_start: true
          next:
            - {goto: again}
        - name: never
    """)
    summary = run(path, tmp_path)
    assert [r.study_name for r in summary.stages] == ["toyplan/again", "toyplan/again~2", "toyplan/again~3"]
    assert not summary.finished and "at most 3 times" in summary.stopped_because
    for name in ("toyplan/again", "toyplan/again~2", "toyplan/again~3"):
        assert budget_of(stage_trials(tmp_path, name)).used == 1
    # each run of the stage warm-starts from the runs before it on the path
    assert budget_of(stage_trials(tmp_path, "toyplan/again~3")).told == 2
    assert stage_attr(tmp_path, "toyplan/again~2")["visit"] == 2
    again = run(path, tmp_path)  # replayed from the store: nothing runs, the guard says the same
    assert not any(r.ran for r in again.stages) and again.stopped_because == summary.stopped_because


def test_a_stage_stopped_by_its_deadline_is_not_decided_and_resumes_with_the_space_it_was_given(tmp_path):
    path = write_plan(tmp_path, """
        - name: first
          training: {epochs: 1}
          budget: {n_trials: 3}
        - name: second
          narrow: {top: 2}
          training: {epochs: 10}
          budget: {n_trials: 12, timeout: 0.5}
    """)
    summary = run(path, tmp_path)
    assert [r.name for r in summary.stages] == ["first", "second"] and summary.stages[1].state == "stopped"
    assert not summary.finished and "not decided" in summary.stopped_because and "second" in summary.stopped_because
    attr = stage_attr(tmp_path, "toyplan/second")
    assert attr["state"] == "running" and "decision" not in attr
    assert 0 < budget_of(stage_trials(tmp_path, "toyplan/second")).used < 12
    from hpo.store.stored import load_stored_study

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    space = load_stored_study(url, "toyplan/second").user_attrs[RECORD_ATTR]["spec"]["space"]
    # a late trial lands in the first stage (another worker's): narrowing now would give another space
    import optuna

    first = load_stored_study(url, "toyplan/first")
    lr = first.trials[0].distributions["lr"]
    first.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=-1.0, params={"lr": lr.high, "hidden": 8},
        distributions={"lr": lr, "hidden": first.trials[0].distributions["hidden"]}))

    resumed = run(path, tmp_path, timeout=600)  # --timeout applies per stage, over the stage's budget.timeout
    assert resumed.finished and [(r.name, r.ran) for r in resumed.stages] == [("first", False), ("second", True)]
    second = load_stored_study(url, "toyplan/second")
    assert second.user_attrs[RECORD_ATTR]["spec"]["space"] == space  # the stage means what it meant
    assert budget_of(second.get_trials()).used == 12  # its budget, finished exactly
