"""Search space and study validation: every error found before any trial, as file: key: rule, but got X."""

import textwrap

import pytest

from hpo.errors import SpecError
from hpo.spec import load_study

SPACE_OK = """
params:
  lr: {type: float, low: 1e-4, high: 1e-2, log: true}
  hidden: {type: categorical, choices: [8, 16, 32]}
  depth: {type: int, low: 1, high: 3}
  use_second_modality: {type: bool}
  fusion: {type: categorical, choices: [concat, gated, sum], when: use_second_modality}
  dropout: {type: float, low: 0.0, high: 0.3, step: 0.1}
fixed: {epochs: 4}
derived: {batch_size: "hidden * 2"}
constraints: ["hidden >= depth"]
baselines:
  current: {lr: 1.0e-3, hidden: 16, depth: 1, use_second_modality: true, fusion: gated, dropout: 0.0}
  single: {extends: current, use_second_modality: false, patience: 3}
"""

STUDY = """
name: t
task: {family: toy, dataset: {n_samples: 64}}
space: space.yaml
objectives: [val_mae]
budget: {n_trials: 3}
"""


def write(tmp_path, space=SPACE_OK, study=STUDY):
    (tmp_path / "space.yaml").write_text(textwrap.dedent(space))
    p = tmp_path / "study.yaml"
    p.write_text(textwrap.dedent(study))
    return p


def errors(tmp_path, space=SPACE_OK, study=STUDY) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_study(write(tmp_path, space, study))
    assert info.value.exit_code == 2
    return info.value.lines()


def test_valid_study_compiles(tmp_path):
    s = load_study(write(tmp_path))
    assert s.space.param_names == ["lr", "hidden", "depth", "use_second_modality", "fusion", "dropout"]
    assert [o.direction for o in s.objectives] == ["minimize"]
    single = s.space.baselines["single"]
    assert "fusion" not in single.params  # inherited but inactive once the switch is off
    assert single.overrides == {"patience": 3}
    config = s.space.resolve(single.params, single.overrides)
    assert config["batch_size"] == 32 and config["epochs"] == 4 and config["patience"] == 3
    assert "fusion" not in config


def test_inclusive_bounds_and_step_grid(tmp_path):
    s = load_study(write(tmp_path))
    assert s.space.param("dropout").grid_values() == [0.0, 0.1, 0.2, 0.3]
    assert s.space.param("depth").contains(3) and not s.space.param("depth").contains(4)
    assert s.space.param("lr").contains(1e-2) and not s.space.param("lr").contains(1.01e-2)


@pytest.mark.parametrize(
    "original, broken, expected",
    [
        ("lr: {type: float, low: 1e-4", "lr: {type: float, low: 0", "params.lr.low: must be > 0 with log: true, but got 0"),
        ("depth: {type: int, low: 1,", "depth: {type: int, low: 5,", "params.depth.high: must be >= low (5), but got 3"),
        ("depth: {type: int,", "depth: {type: integer,", "params.depth.type: must name a known type: bool, categorical, float, int (did you mean 'int'?), but got 'integer'"),
        ("  hidden:", "  hiden:", "params.hiden: must name a known config key of task toy:"),
        ("when: use_second_modality", "when: use_second_modalty", "params.fusion.when: names 'use_second_modalty', which is not a parameter declared before 'fusion' nor a config key (did you mean 'use_second_modality'?)"),
        ('"hidden * 2"', '"hidden * "', "derived.batch_size: must be a valid expression"),
        ("high: 0.3, step: 0.1", "high: 0.35, step: 0.1", "params.dropout.high: must be low plus a whole number of steps (0.1) so that both bounds are included, but got 0.35"),
        ("fixed: {epochs: 4}", "fixd: {epochs: 4}", "fixd: is not a known key; valid keys here: baselines, constraints, derived, description, fixed, params (did you mean 'fixed'?)"),
        ("fixed: {epochs: 4}", "fixed: {epochs: four}", "fixed.epochs: must be a valid integer, but got 'four'"),
        ("current: {lr: 1.0e-3", "current: {lr: 5.0e-2", "baselines.current.lr: must lie in params.lr's range [0.0001, 0.01] log (widen the range to measure this baseline inside the study), but got 0.05"),
        ("single: {extends: current", "single: {extends: curent", "baselines.single.extends: must name a known baseline: current, single (did you mean 'current'?), but got 'curent'"),
        ("fusion: gated, dropout", "fusion: fancy, dropout", "baselines.current.fusion: must lie in params.fusion's range {concat, gated, sum}"),
        ("hidden: {type: categorical, choices: [8, 16, 32]}", "hidden: {type: categorical, choices: [8, 16, 8]}", "params.hidden.choices.2: must not repeat an earlier choice, but got 8"),
        ("hidden: {type: categorical, choices: [8, 16, 32]}", "hidden: {type: float, low: 8, high: 32}", "params.hidden.type: must be int or categorical: hidden is an integer key, but got 'float'"),
    ],
)
def test_space_errors(tmp_path, original, broken, expected):
    assert original in SPACE_OK
    lines = errors(tmp_path, space=SPACE_OK.replace(original, broken, 1))
    assert any(line.split("space.yaml: ", 1)[-1].startswith(expected) for line in lines), lines
    assert all("space.yaml: " in line for line in lines), lines


def test_all_problems_reported_together(tmp_path):
    space = SPACE_OK.replace("low: 1e-4", "low: 0").replace("high: 3}", "high: 0}").replace("hidden >= depth", "hidden >= ")
    lines = errors(tmp_path, space=space)
    assert len(lines) >= 3, lines


def test_when_must_name_an_earlier_parameter(tmp_path):
    space = SPACE_OK.replace("use_second_modality: {type: bool}", "use_second_modality: {type: bool, when: \"fusion == 'sum'\"}")
    lines = errors(tmp_path, space=space)
    assert any("names 'fusion', which is declared after 'use_second_modality'" in line for line in lines), lines


def test_study_errors(tmp_path):
    study = STUDY.replace("objectives: [val_mae]", "objectives: [val_mea]\nsampler: {type: tpe, seedd: 1}\npruner: {type: medain}") \
        .replace("family: toy", "family: toy").replace("n_trials: 3", "n_trials: 0")
    lines = errors(tmp_path, study=study)
    text = "\n".join(lines)
    assert "study.yaml: sampler.seedd: is not a known key" in text and "(did you mean 'seed'?)" in text
    assert "study.yaml: pruner.type: must name a known type" in text and "(did you mean 'median'?), but got 'medain'" in text
    assert "study.yaml: budget.n_trials: must be greater than or equal to 1, but got 0" in text


def test_unknown_task_and_metric(tmp_path):
    lines = errors(tmp_path, study=STUDY.replace("family: toy", "family: tyo"))
    assert any("task.family: must name a known task:" in l and "(did you mean 'toy'?), but got 'tyo'" in l for l in lines), lines
    lines = errors(tmp_path, study=STUDY.replace("[val_mae]", "[val_mea]"))
    assert any("objectives.0: must name a known metric of task toy" in l and "(did you mean 'val_mae'?)" in l for l in lines), lines


def test_multi_objective_prunes_on_the_primary_with_snapshot_pruners_only(tmp_path):
    # #15: a multi-objective study prunes on its primary objective (it could not prune at all before);
    # pruners that need the study's single direction are still refused
    study = STUDY.replace("objectives: [val_mae]", "objectives: [val_mae, {metric: train_val_gap, direction: minimize}]\npruner: {type: hyperband}")
    lines = errors(tmp_path, study=study)
    assert any(l.endswith("pruner.type: must be one of median, percentile, threshold, patient, none for a multi-objective study "
                          "(they prune on the primary objective; the others need the study's single direction), but got 'hyperband'") for l in lines), lines
    for ok_pruner in ("{type: median}", "{type: none}", "{type: patient, patience: 2, wrapped: {type: percentile, percentile: 50}}"):
        ok = load_study(write(tmp_path, study=study.replace("{type: hyperband}", ok_pruner)))
        assert ok.directions == ["minimize", "minimize"] and ok.primary.metric == "val_mae"


def test_training_keys_are_typed(tmp_path):
    lines = errors(tmp_path, study=STUDY + "training: {scheduler: cosin, batch_size: 1.5}\n")
    text = "\n".join(lines)
    assert "training.scheduler: must be 'onecycle', 'cosine', 'cosine_warm_restarts', 'lambda', 'step' or 'none', but got 'cosin'" in text
    assert "training.batch_size: must be a valid integer, but got 1.5" in text


def test_invalid_default_config_names_the_key_and_its_file(tmp_path):
    """A value that passes its type but not the config's rules is reported at the key that set it: in
    the space file's ``fixed:`` (that file named), or in the study's ``training:``."""
    lines = errors(tmp_path, space=SPACE_OK.replace("fixed: {epochs: 4}", "fixed: {epochs: 4, grad_accum_steps: 0}"))
    assert any(x.startswith(f"{tmp_path / 'space.yaml'}: fixed.grad_accum_steps: must make a valid config: grad_accum_steps must be >= 1")
               for x in lines), lines
    lines = errors(tmp_path, study=STUDY + "training: {eval_every: 0}\n")
    assert any(x.startswith(f"{tmp_path / 'study.yaml'}: training.eval_every: must make a valid config: eval_every must be >= 1")
               for x in lines), lines


def test_set_overrides(tmp_path):
    s = load_study(write(tmp_path), sets=["budget.n_trials=7", "task.dataset.n_samples=80"])
    assert s.spec.budget.n_trials == 7 and s.dataset.n_samples == 80


def test_constraint_rejects_baseline(tmp_path):
    space = SPACE_OK.replace("hidden >= depth", "hidden >= 100")
    lines = errors(tmp_path, space=space)
    assert any("baselines.current: must meet the constraint `hidden >= 100`" in l for l in lines), lines


def test_inactive_param_in_baseline_is_an_error(tmp_path):
    space = SPACE_OK.replace("single: {extends: current, use_second_modality: false, patience: 3}",
                             "single: {extends: current, use_second_modality: false, fusion: sum}")
    lines = errors(tmp_path, space=space)
    assert any("baselines.single.fusion: is inactive in this baseline" in l for l in lines), lines


def test_study_level_baselines_extend_the_space_ones(tmp_path):
    study = STUDY + "baselines:\n  plan_a: {extends: current, dropout: 0.2, epochs: 3}\n"
    s = load_study(write(tmp_path, study=study))
    assert list(s.space.baselines)[-1] == "plan_a"
    a = s.space.baselines["plan_a"]
    assert a.params["dropout"] == 0.2 and a.params["fusion"] == "gated" and a.overrides == {"epochs": 3}
    clash = STUDY + "baselines:\n  current: {lr: 1.0e-3, hidden: 16, depth: 1, use_second_modality: false, dropout: 0.0}\n"
    lines = errors(tmp_path, study=clash)
    assert any(l.endswith("study.yaml: baselines.current: is also a baseline of the search space (space.yaml); give it another name") or
               "study.yaml: baselines.current: is also a baseline of the search space" in l for l in lines), lines
    bad = STUDY + "baselines:\n  plan_b: {extends: current, dropout: 0.9}\n"
    lines = errors(tmp_path, study=bad)
    assert any("study.yaml: baselines.plan_b.dropout: must lie in params.dropout's range [0.0, 0.3] step 0.1" in l for l in lines), lines


def test_dataset_errors_name_the_valid_keys_of_the_format(tmp_path):
    lines = errors(tmp_path, study=STUDY.replace("dataset: {n_samples: 64}", "dataset: {n_sample: 64}"))
    assert any("study.yaml: task.dataset.n_sample: is not a known key; valid keys here: format, n_samples, noise, seed (did you mean 'n_samples'?)" in l
               for l in lines), lines


def test_resolve_extends_one_reading_for_loader_and_narrow():
    from hpo.spec.space import resolve_extends

    plans = {"child": {"extends": "base", "b": 2}, "base": {"a": 1, "b": 1}, "loop1": {"extends": "loop2", "x": 1},
             "loop2": {"extends": "loop1", "y": 1}, "orphan": {"extends": "nobody", "z": 1}, "me": {"extends": "me", "w": 1}}
    # lenient (hpo narrow): a bad parent is ignored; parents come first
    lenient = resolve_extends(plans)
    assert list(lenient)[:2] == ["base", "child"]
    assert lenient["child"] == {"a": 1, "b": 2}
    assert lenient["loop1"] == {"y": 1, "x": 1} and lenient["loop2"] == {"y": 1}
    assert lenient["orphan"] == {"z": 1} and lenient["me"] == {"w": 1}
    # strict (the loader): a bad parent is reported and the plan left out
    seen = []
    strict = resolve_extends(plans, report=lambda name, rule, parent: seen.append((name, rule, parent)))
    assert sorted(strict) == ["base", "child"]
    assert seen[0] == ("loop2", "must not form a cycle: loop1 -> loop2 -> loop1", "loop1")
    assert seen[1][0] == "orphan" and seen[1][1].startswith("must name a known baseline")
    assert seen[2] == ("me", "must not form a cycle: me -> me", "me")
    assert resolve_extends(plans, merge=lambda merged, own: own)["child"] == {"b": 2}
