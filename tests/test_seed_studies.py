"""The five seeds re-encoded as staged studies (studies/*.yaml): every file validates with `hpo validate`, and
each carries the named runs, gates, targets, stages and next rules of its plan (../shared/seeds, TUNING_PLANS.md).

The data of most studies is not in the repository, so they are validated without it (``--no-data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.cli import main
from hpo.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.name for p in (ROOT / "studies").glob("*.yaml"))
SEED_STUDIES = ["hse_bandgap.yaml", "optb88vdw_bandgap.yaml", "metr_la.yaml", "los_loop.yaml", "face3d.yaml",
                "kiba.yaml", "davis.yaml"]


def _load(name: str):
    return load_study(ROOT / "studies" / name, check_data=False)


def _stage(study, name: str):
    return next(s for s in study.stages if s.name == name)


def _runs(stage) -> list[str]:
    return list(stage.study.run_baselines)


def _rules(stage) -> list[tuple[str | None, str]]:
    return [(r.when.source if r.when is not None else None, r.goto) for r in stage.next]


def _config(stage, name: str) -> dict:
    b = stage.study.space.baselines[name]
    return stage.study.space.resolve(b.params, b.overrides)


def _levels(study) -> dict[str, dict[str, float]]:
    return {t.name: {m: th for m, (th, _) in t.thresholds.items()} for t in study.targets}


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_file_validates(name, capsys):
    assert main(["validate", "--no-data", str(ROOT / "studies" / name)]) == 0
    assert f"{name}: valid" in capsys.readouterr().out


@pytest.mark.parametrize("name", SEED_STUDIES)
def test_seed_studies_are_staged_and_every_named_run_builds_and_fits_its_stage_budget(name):
    study = _load(name)
    assert len(study.stages) >= 2, "a seed's plan is a staged study"
    for stage in study.stages:
        runs = _runs(stage)
        assert stage.study.spec.budget.n_trials >= len(runs), f"{stage.name}: the budget must leave room for every named run"
        for run in runs:
            config = _config(stage, run)
            assert not stage.study.space.violated(config), (stage.name, run)
            stage.study.task_cls.split_config(config)  # a config the task can build


def test_seed_000_hse_bandgap_steps_strong_reg_and_gap_targets():
    study = _load("hse_bandgap.yaml")
    assert [s.name for s in study.stages] == ["step1_no_middle_fusion", "step2_strong_reg", "step3_smaller_model", "combined", "search"]
    step1, step2, step3, combined, search = study.stages
    assert _runs(step1) == ["current", "plan2_no_middle_fusion"]
    assert _rules(step1) == [("conservative", "step3_smaller_model"), (None, "step2_strong_reg")]
    assert _runs(step2) == ["hse_strong_reg", "plan1_regularisation"]
    strong = _config(step2, "hse_strong_reg")  # the seed's runs/hse_strong_reg command
    assert (strong["use_middle_fusion"], strong["weight_decay"], strong["fine_grained_dropout"], strong["cross_modal_dropout"],
            strong["graph_dropout"], strong["patience"], strong["lr"]) == (False, 1.0e-2, 0.45, 0.2, 0.3, 30, 5.0e-4)
    assert _runs(step3) == ["plan3_smaller_model", "plan4_lower_lr_cosine"]
    assert "combined_best_guess" in _runs(combined)
    assert {"ablation.lattice_perturbation_std=0.02", "ablation.mixup_alpha=0.2", "ablation.text_deletion_prob=0.1",
            "ablation.grad_clip=1.0"} <= set(_runs(combined))
    # "val 0.20-0.25 eV with a train/val gap < 0.05 eV", measured exactly (train split in eval mode)
    assert _levels(study)["conservative"] == {"val_mae": 0.25, "train_val_gap": 0.05}
    assert _levels(study)["aggressive"] == {"val_mae": 0.20, "train_val_gap": 0.05}
    assert combined.stop_at_target is None  # its one-knob table is run whole
    assert search.stop_at_target == "aggressive" and search.warm_start and search.study.gates[0].epoch == 40
    assert study.spec.training["train_eval"] is True


def test_seed_001_optb88vdw_eleven_experiments_phases_and_decision_table():
    study = _load("optb88vdw_bandgap.yaml")
    experiments = [f"exp{i}_" for i in range(1, 12)]
    named = set(study.space.baselines)
    for prefix in experiments:
        assert sum(n.startswith(prefix) for n in named) == 1, prefix
    ran = [r for s in study.stages for r in _runs(s)]
    for prefix in experiments:  # each experiment runs in one stage
        assert sum(r.startswith(prefix) for r in ran) == 1, prefix
    names = [s.name for s in study.stages]
    assert names[:4] == ["phase1_regularisation", "phase2_stronger_fusion", "phase3_weaker_global_attention", "phase4_aggressive"]
    assert {"finetune", "conservative"} <= set(names)
    phase2 = _stage(study, "phase2_stronger_fusion")
    # MAE down -> keep going; worse -> back to the conservative settings; unchanged -> phase 4
    assert _rules(phase2) == [("improvement > 0.01", "phase3_weaker_global_attention"), ("improvement < -0.01", "conservative"),
                              (None, "phase4_aggressive")]
    assert _rules(_stage(study, "phase3_weaker_global_attention"))[1:] == [("improvement < -0.01", "conservative"), (None, "phase4_aggressive")]
    exp9 = _config(_stage(study, "phase3_weaker_global_attention"), "exp9_no_global_attention")
    assert exp9["use_cross_modal_attention"] is False and "cross_modal_num_heads" not in exp9
    assert _config(_stage(study, "finetune"), "exp11_batch32")["batch_size"] == 32
    assert _stage(study, "finetune").warm_start
    assert _levels(study) == {"gap_within_2x": {"val_train_ratio": 2.0}}


def test_seed_002_metr_la_quick_test_gates_targets_experiments_and_stage2_grid():
    study = _load("metr_la.yaml")
    gates = {g.name: g for g in study.gates}
    assert gates["quick_test"].epoch == 10 and gates["quick_test"].continue_if.source == "val_mae < 4.0"
    assert gates["revert"].epoch == 10 and gates["revert"].stop_if.source == "val_mae > 4.5"
    assert gates["quick_test"].verdict({"val_mae": 4.21}) is not None and gates["quick_test"].verdict({"val_mae": 3.9}) is None
    assert _levels(study) == {"conservative": {"val_mae": 3.8}, "aggressive": {"val_mae": 3.5}}
    assert study.protect_baselines  # the Phase-1 baseline (~4.5 at epoch 10) trains its 150 epochs
    # only the search stages end at the target: the named-run stages (the ablation table) run whole
    assert {s.name for s in study.stages if s.stop_at_target == "aggressive"} == {"stage2_grid", "stage2_regularisation"}

    quick = _stage(study, "quick_test")
    assert {"phase1", "phase1_optimized", "onecycle", "cross_attn", "asymmetric_1133"} == set(_runs(quick))
    assert _rules(quick) == [("aggressive", "end"), ("best < 4.0", "experiments"), (None, "revert")]

    exp = _stage(study, "experiments")
    assert exp.study.spec.training["epochs"] == 50 and exp.study.gates == []
    runs = set(_runs(exp))
    lr_sweep = {"phase1"} | {f"ablation.lr={v}" for v in ("0.0001", "0.0003", "0.001", "0.002")}  # 5 values, phase1 = 5e-4
    fusion = {"phase1", "ablation.fusion_type=concat", "cross_attn"}                            # gated / concat / cross_attn
    depth = {"depth_1111", "phase1", "depth_3333"}                                               # uniform 1 / 2 / 3
    embed = {"phase1"} | {f"ablation.embed_dim={v}" for v in (48, 64, 128)}
    assert lr_sweep | fusion | depth | embed <= runs
    assert {"ablation.scheduler=onecycle", "ablation.weight_decay=0.0003", "ablation.dropout=0.12", "ablation.noise_std=0.01",
            "ablation.positional_encoding_type=rotary", "fusion_gated_residual_sigmoid", "batch64_accum2"} <= runs
    assert all(exp.study.space.baselines[r].ablation["knob"] == "lr" for r in lr_sweep - {"phase1"})
    assert _config(exp, "depth_3333")["temporal_depth_1"] == _config(exp, "depth_3333")["spatial_depth_2"] == 3

    grid = _stage(study, "stage2_grid")
    assert grid.study.spec.sampler.type == "grid"
    assert {p.name for p in grid.study.space.params} == {"lr", "embed_dim", "dropout"}
    assert grid.study.spec.budget.n_trials == len(grid.study.space.grid()["lr"]) * 4 * 3 == 60
    revert = _stage(study, "revert")
    assert {p.name for p in revert.study.space.params} == {"lr", "batch_size"} and revert.study.gates == []


def test_seed_002_pems_studies_work_with_a_user_provided_file():
    for name, fmt in [("pems_bay.yaml", "dcrnn_h5"), ("pems04.yaml", "pems_npz")]:
        study = _load(name)
        assert study.spec.task.dataset["format"] == fmt
        assert _runs(study.stages[0]) == ["phase1", "phase1_optimized"]
    text = (ROOT / "studies" / "pems_bay.yaml").read_text()
    assert "NOT shipped" in text  # says why the speeds are not in the repository


def test_seed_003_face3d_low_lr_restarts_stuck_gate_and_similarity_targets():
    study = _load("face3d.yaml")
    lr = next(p for p in study.space.params if p.name == "lr")
    assert lr.distribution().low <= 1.0e-5  # stage 3's lr is inside the space
    scheduler = next(p for p in study.space.params if p.name == "scheduler")
    assert "cosine_warm_restarts" in scheduler.distribution().choices
    quick = _stage(study, "plan1_quick")
    gate = quick.study.gates[0]
    assert (gate.name, gate.epoch, gate.continue_if.source) == ("stuck_at_075", 20, "val_cosine > 0.75")
    assert _rules(quick) == [("best > 0.75", "plan1_full"), (None, "plan2_capacity")]
    assert "plan1_warm_restarts" in _runs(_stage(study, "plan1_full"))
    restarts = _config(_stage(study, "plan1_full"), "plan1_warm_restarts")
    assert (restarts["scheduler"], restarts["T_0"], restarts["T_mult"]) == ("cosine_warm_restarts", 20, 2)
    capacity = _stage(study, "plan2_capacity")
    assert _config(capacity, "plan2_capacity")["d_model"] == 768 and _config(capacity, "plan2_capacity")["dim_feedforward"] == 3072
    finetune = _stage(study, "stage3_finetune")
    assert _config(finetune, "stage3_low_lr")["lr"] == 1.0e-5 and finetune.stop_at_target is None
    assert _stage(study, "stage3_search").stop_at_target == "sim_090"
    levels = _levels(study)
    assert [levels[k]["val_cosine"] for k in ("sim_080", "sim_085", "sim_090")] == [0.80, 0.85, 0.90]


@pytest.mark.parametrize("name", ["kiba.yaml", "davis.yaml"])
def test_seed_004_drug_target_comparison_and_guide_knobs(name):
    study = _load(name)
    guide = _stage(study, "guide")
    runs = _runs(guide)
    assert runs[:2] == ["seed_gated", "seed_standard"]  # trials 0 and 1: `hpo compare NAME/guide 0 1`
    assert {"ablation.weight_decay=0.01", "ablation.dropout_rate=0.3", "ablation.feature_dim=256", "ablation.fusion_layers=2",
            "ablation.batch_size=64"} <= set(runs)
    assert "--save-every 5" in (ROOT / "studies" / name).read_text()  # the seed's every-5-epochs checkpoints
    if name == "davis.yaml":
        assert _levels(study)["deepdta"]["val_mse"] == 0.261


def test_quickstart_stays_a_small_flat_study():
    study = _load("quickstart.yaml")
    assert study.stages == [] and study.spec.budget.n_trials <= 20 and study.spec.budget.max_epochs <= 30
