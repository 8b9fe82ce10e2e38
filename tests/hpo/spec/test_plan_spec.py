"""The plan keys of a study file (stages, gates, targets, ablations, run_baselines, protected baselines,
primary objective): compiled as the plan says, and every bad one refused as ``file: key: rule``, exit 2,
before anything is stored."""

from __future__ import annotations

import textwrap

import pytest

from hpo.errors import SpecError
from hpo.spec import load_study
from tests.conftest import TOY_SPACE, hpo_cli, stored_studies

PLAN = """
name: plan
task: {family: toy, dataset: {n_samples: 96}}
space: space.yaml
objectives: [val_mae]
sampler: {type: random, seed: 0}
pruner: {type: median, n_startup_trials: 2}
budget: {n_trials: 4, max_epochs: 12}
training: {epochs: 6}
storage: sqlite:///DB
gates:
  - {name: quick_test, epoch: 2, continue_if: "val_mae < 4.0"}
  - {epoch: 3, stop_if: "val_mae > 4.5 or train_loss > 100"}
targets:
  conservative: {val_mae: 3.8}
  aggressive: {val_mae: 3.5, train_val_gap: 0.05}
ablations:
  baseline: current
  knobs: {lr: [1.0e-3, 3.0e-2], hidden: [8]}
stages:
  - name: quick
    training: {epochs: 3}
    budget: {n_trials: 3}
  - name: full
    narrow: {top: 2}
    warm_start: true
    training: {epochs: 9}
    baselines:
      wide: {extends: current, hidden: 8}
    stop_at_target: aggressive
    next:
      - {when: "improvement > 0.01 and not aggressive", goto: quick}
      - {goto: end}
"""


def write(tmp_path, text: str = PLAN, space: str = TOY_SPACE):
    (tmp_path / "space.yaml").write_text(textwrap.dedent(space))
    p = tmp_path / "plan.yaml"
    p.write_text(textwrap.dedent(text).replace("DB", str(tmp_path / "hpo.db")))
    return p


def problems(tmp_path, text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_study(write(tmp_path, text), check_data=False)
    return str(e.value).splitlines()


def test_a_staged_plan_compiles_each_stage_as_a_study_of_its_own(tmp_path):
    plan = load_study(write(tmp_path), check_data=False)
    quick, full = plan.stages
    assert (quick.name, quick.index, full.name, full.index) == ("quick", 0, "full", 1)
    # fidelity and budget merged over the study's
    assert quick.study.space.defaults["epochs"] == 3 and full.study.space.defaults["epochs"] == 9
    assert quick.study.spec.budget.n_trials == 3 and full.study.spec.budget.n_trials == 4
    assert quick.study.spec.budget.max_epochs == full.study.spec.budget.max_epochs == 12
    # the first stage runs the study's and space's baselines and the ablation; later ones only their own
    assert quick.study.run_baselines == ["current", "single_modality", "ablation.lr=0.001", "ablation.lr=0.03", "ablation.hidden=8"]
    assert full.study.run_baselines == ["wide"]
    assert full.narrow.top == 2 and full.warm_start and not quick.warm_start
    assert full.stop_at_target == "aggressive" and quick.stop_at_target is None
    assert [r.describe() for r in full.next] == ["when improvement > 0.01 and not aggressive -> goto quick", "-> goto end"]
    assert full.next[0].matches({"improvement": 0.05, "aggressive": False})
    assert not full.next[0].matches({"improvement": None, "aggressive": False})  # no previous: no match, no crash
    assert quick.study.gates[0].name == "quick_test" and [g.describe() for g in full.study.gates] == [g.describe() for g in quick.study.gates]


def test_ablation_runs_are_named_baselines_with_their_facts(tmp_path):
    plan = load_study(write(tmp_path), check_data=False)
    b = plan.space.baselines
    assert b["ablation.lr=0.03"].params["lr"] == 3.0e-2 and b["ablation.lr=0.03"].params["hidden"] == 16
    assert b["ablation.lr=0.03"].ablation == {"knob": "lr", "value": 3.0e-2, "seed": None}
    assert b["current"].ablation == {"knob": None, "value": None, "seed": None}  # the reference row, run once
    seeded = load_study(write(tmp_path, PLAN.replace("hidden: [8]}", "hidden: [8]}\n  seeds: [0, 1]")), check_data=False)
    names = seeded.stages[0].study.run_baselines
    assert "ablation.baseline.seed0" in names and "ablation.hidden=8.seed1" in names and "ablation.lr=0.001.seed1" in names
    assert seeded.space.baselines["ablation.hidden=8.seed1"].overrides.get("seed") == 1


def test_gates_and_targets_judge_metrics(tmp_path):
    plan = load_study(write(tmp_path), check_data=False)
    quick_test, second = plan.gates
    assert quick_test.verdict({"val_mae": 3.9}) is None
    assert quick_test.verdict({"val_mae": 4.2}) == "gate quick_test at epoch 2: continue_if val_mae < 4.0 failed (val_mae=4.2)"
    assert "stop_if val_mae > 4.5 or train_loss > 100 held" in second.verdict({"val_mae": 1.0, "train_loss": 500.0})
    assert "not available" in second.verdict({"val_mae": float("nan"), "train_loss": 1.0})  # cannot be judged: stops
    conservative, aggressive = plan.targets
    assert conservative.met({"val_mae": 3.8}) and not conservative.met({"val_mae": 3.81})
    assert not aggressive.met({"val_mae": 3.4, "train_val_gap": 0.2}) and aggressive.met({"val_mae": 3.4, "train_val_gap": 0.01})
    assert aggressive.met_on_test({"test_mae": 3.0, "train_val_gap": 0.0}) and not aggressive.met_on_test({"val_mae": 3.0, "train_val_gap": 0.0})
    assert aggressive.describe() == "val_mae <= 3.5, train_val_gap <= 0.05"


@pytest.mark.parametrize("old, new, expected", [
    ('continue_if: "val_mae < 4.0"', 'continue_if: "val_mea < 4.0"', "gates.0.continue_if: must name a known metric of task toy"),
    ('continue_if: "val_mae < 4.0"', 'continue_if: "val_mae <"', "gates.0.continue_if: must be a valid expression"),
    ('continue_if: "val_mae < 4.0"', 'continue_if: null', "gates.0: must set stop_if or continue_if"),
    ("epoch: 2,", "epoch: 0,", "gates.0.epoch: must be greater than or equal to 1"),
    ("epoch: 3,", "epoch: 30,", "gates.1.epoch: must be at most budget.max_epochs (12)"),
    ("conservative: {val_mae: 3.8}", "conservative: {val_maex: 3.8}", "targets.conservative.val_maex: must name a known metric"),
    ("conservative: {val_mae: 3.8}", "conservative: {}", "targets.conservative: must map at least one metric"),
    ("stop_at_target: aggressive", "stop_at_target: heroic", "stages.1.stop_at_target: must name a known target level"),
    ("baseline: current", "baseline: nonesuch", "ablations.baseline: must name a known baseline"),
    ("lr: [1.0e-3, 3.0e-2]", "lr: [1.0e-3, 3.0]", "ablations.knobs.lr.1: must lie in params.lr's range"),
    ("hidden: [8]", "hiddne: [8]", "ablations.knobs.hiddne: must name a known config key of task toy"),
    ("hidden: [8]", "hidden: [8, 8]", "ablations.knobs.hidden: must not list a value twice"),
    ("goto: quick", "goto: quik", "stages.1.next.0.goto: must name a known stage (or end)"),
    ("when: \"improvement > 0.01 and not aggressive\"", "when: \"improvment > 0\"", "stages.1.next.0.when: must name a known stage result"),
    ("training: {epochs: 9}", "training: {epochs: nine}", "stages.1.training.epochs:"),
    ("budget: {n_trials: 3}", "budget: {n_trials: 0}", "stages.0.budget.n_trials:"),
    ("wide: {extends: current, hidden: 8}", "wide: {extends: current, hidden: 9}", "stages.1.baselines.wide.hidden:"),
    ("  - name: full\n", "  - name: quick\n", "stages.1.name: must be unique among the stages"),
    ("  - name: quick\n    training: {epochs: 3}", "  - name: quick\n    narrow: {top: 2}", "stages.0.narrow: needs a previous stage"),
    ("warm_start: true", "warm_start: true\n    space: space.yaml", "stages.1.narrow: and space: are exclusive"),
    ("storage:", "run_baselines: [current, nonesuch]\nstorage:", "run_baselines.1: must name a known baseline"),
    ("objectives: [val_mae]", "objectives: [{metric: val_mae, primary: true}, {metric: val_loss, primary: true}]", "objectives.1.primary: must be set on one objective only"),
    ("objectives: [val_mae]", "objectives: [train_mae, {metric: val_mae}]", "objectives.0: must be a validation metric"),
])
def test_bad_plan_keys_are_refused_at_their_key(tmp_path, old, new, expected):
    assert old in PLAN
    lines = problems(tmp_path, PLAN.replace(old, new, 1))
    assert any(expected in line for line in lines), lines
    assert all(line.startswith(str(tmp_path / "plan.yaml")) or "space.yaml" in line for line in lines), lines


def test_multi_objective_studies_prune_on_the_primary_with_snapshot_pruners_only(tmp_path):
    mo = PLAN.replace("objectives: [val_mae]", "objectives: [val_mae, {metric: val_rmse, primary: true}]")
    plan = load_study(write(tmp_path, mo), check_data=False)
    assert plan.primary.metric == "val_rmse" and plan.monitor == plan.primary and plan.primary_index == 1
    lines = problems(tmp_path, mo.replace("type: median, n_startup_trials: 2", "type: hyperband"))
    assert any("pruner.type: must be one of median, percentile, threshold, patient, none for a multi-objective study" in x for x in lines), lines
    lines = problems(tmp_path, mo.replace("    training: {epochs: 9}", "    training: {epochs: 9}\n    pruner: {type: successive_halving}"))
    assert any("stages.1.pruner.type: must be one of median" in x for x in lines), lines


def test_validate_refuses_a_bad_plan_with_exit_2_and_stores_nothing(tmp_path):
    path = write(tmp_path, PLAN.replace("goto: quick", "goto: quik"))
    for cmd in ("validate", "run"):
        r = hpo_cli(cmd, str(path), cwd=tmp_path, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "stages.1.next.0.goto: must name a known stage (or end): end, full, quick (did you mean 'quick'?), but got 'quik'" in r.stderr
        assert "Traceback" not in r.stderr
    assert stored_studies(tmp_path / "hpo.db") == []


def test_a_later_stage_need_not_hold_the_study_baselines_it_does_not_run(tmp_path):
    text = PLAN.replace("storage:", "baselines:\n  big_lr: {lr: 3.0e-2, hidden: 16, use_second_modality: false, dropout: 0.0}\nstorage:").replace(
        "wide: {extends: current, hidden: 8}", "wide: {lr: 1.0e-2, hidden: 8}").replace(
        "    narrow: {top: 2}\n", "    space: {params: {lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}, hidden: [8, 16]}}\n")
    plan = load_study(write(tmp_path, text), check_data=False)
    full = plan.stages[1]
    assert "big_lr" not in full.raw["baselines"] and "wide" in full.study.run_baselines
    assert "big_lr" in plan.stages[0].study.run_baselines  # the first stage runs it
    # a stage that does run it must hold it: its value is checked against that stage's space
    lines = problems(tmp_path, text.replace("    warm_start: true\n", "    warm_start: true\n    run_baselines: [big_lr]\n"))
    assert any("baselines.big_lr.lr: must lie in params.lr's range" in x for x in lines), lines
