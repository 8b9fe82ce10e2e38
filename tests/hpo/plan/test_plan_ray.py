"""A staged plan on the Ray backend (a real local Ray cluster): the same stages, names and decisions as locally."""

from __future__ import annotations

import pytest

from tests.conftest import hpo_cli
from tests.hpo.plan.plans import stage_attr, stage_trials, write_plan

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_two_stage_plan_runs_on_ray_with_its_fidelity_warm_start_and_decision(tmp_path):
    pytest.importorskip("ray")
    path = write_plan(tmp_path, """
        - name: quick
          training: {epochs: 2}
          budget: {n_trials: 3}
        - name: full
          warm_start: true
          training: {epochs: 4}
          budget: {n_trials: 2}
          next: [{goto: end}]
        """, extra="backend: ray\nray: {cpus_per_trial: 1, scheduler: none}\n")
    r = hpo_cli("run", str(path), "--address", "local", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    quick, full = stage_trials(tmp_path, "toyplan/quick"), stage_trials(tmp_path, "toyplan/full")
    trained = [t for t in full if "warm_start_of" not in t.user_attrs]
    assert sum(t.state.name == "COMPLETE" for t in quick) == 3
    assert len(trained) == 2 and all(t.state.name == "COMPLETE" for t in trained)
    assert {t.user_attrs["epochs_run"] for t in trained} == {4}
    assert {t.user_attrs["epochs_run"] for t in quick if t.state.name == "COMPLETE"} == {2}
    assert len([t for t in full if "warm_start_of" in t.user_attrs]) == 3  # quick's three, told, not trained
    assert stage_attr(tmp_path, "toyplan/quick")["state"] == "done" and stage_attr(tmp_path, "toyplan/full")["decision"]["next"] == "end"
