"""Multi-objective studies prune and gate on their primary objective (toy family, real SQLite, the local
backend): the primary's intermediate values are stored, the pruner decides on them as it would for a
single-objective study in the primary's direction, and the trials that complete keep every objective."""

from __future__ import annotations

import random

import optuna
import pytest

from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.search.prune_oracle import PruneOracle
from hpo.spec import load_study
from hpo.store import record as R
from hpo.store.storage import open_storage

NO_BASELINES = """
params:
  lr: {type: float, low: 1e-4, high: 5e-2, log: true}
  hidden: [8, 16]
"""
# val_rmse first, the primary second: what prunes is the declared primary, not the first objective
OBJECTIVES = "objectives: [val_rmse, {metric: val_mae, primary: true}]"


def run(toy_study, tmp_path, pruner: str, n_trials: int, space: str | None = None, extra: str = "") -> list:
    """Run a two-objective toy study (random sampler, 6 epochs) with ``pruner``; its trials."""
    path = toy_study(n_trials=n_trials, extra=extra, **({"space": space} if space else {}))
    text = path.read_text().replace("objectives: [val_mae]", OBJECTIVES)
    text = text.replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}", f"pruner: {pruner}")
    path.write_text(text.replace("sampler: {type: tpe, seed: 3, n_startup_trials: 3}", "sampler: {type: random, seed: 0}"))
    study = load_study(path)
    assert study.multi_objective and study.primary.metric == "val_mae"
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    storage = open_storage(study.storage_url(), heartbeat=False)
    return optuna.load_study(study_name=study.name, storage=storage).get_trials()


def primary_curve(t) -> dict:
    curves = t.user_attrs[R.CURVES]
    return {e: v for e, v in zip(curves["epoch"], curves["val_mae"]) if v is not None}


def assert_complete_with_both_values(t) -> None:
    m = t.user_attrs[R.METRICS]
    assert t.state.name == "COMPLETE" and t.values == [m["val_rmse"], m["val_mae"]]


@pytest.mark.slow
def test_a_threshold_pruner_prunes_a_multi_objective_study_on_its_primary(toy_study, tmp_path):
    trials = run(toy_study, tmp_path, "{type: threshold, upper: 0.0, n_warmup_steps: 2}", n_trials=4)
    by_name = {t.user_attrs.get(R.BASELINE): t for t in trials}
    sampled = [t for t in trials if R.BASELINE not in t.user_attrs]
    assert len(sampled) == 2
    for t in sampled:
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "pruned"
        assert t.user_attrs[R.STOP_DETAIL].startswith("pruned at epoch 2: val_mae=")
        assert t.intermediate_values == primary_curve(t) and sorted(t.intermediate_values) == [1, 2]  # the primary's only
    for name in ("current", "single_modality"):  # protected: trained on, with both objectives' values
        assert_complete_with_both_values(by_name[name])
        assert by_name[name].intermediate_values == primary_curve(by_name[name])
        assert by_name[name].user_attrs[R.GATE_WAIVED][0].startswith("pruned at epoch 2: val_mae=")


@pytest.mark.slow
def test_a_median_pruner_prunes_a_multi_objective_study_and_the_survivors_keep_both_values(toy_study, tmp_path):
    trials = run(toy_study, tmp_path, "{type: median, n_startup_trials: 2, n_warmup_steps: 1}", n_trials=10,
                 space=NO_BASELINES)
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and len(complete) >= 2
    for t in pruned:
        assert t.user_attrs[R.STOP_REASON] == "pruned" and t.user_attrs[R.EPOCHS_RUN] < 6
        assert t.intermediate_values == primary_curve(t)
    for t in complete:
        assert_complete_with_both_values(t)
        assert t.intermediate_values == primary_curve(t)


@pytest.mark.slow
def test_a_gate_stops_multi_objective_trials_on_the_primary(toy_study, tmp_path):
    trials = run(toy_study, tmp_path, "{type: none}", n_trials=3, space=NO_BASELINES,
                 extra='gates: [{name: g, epoch: 2, stop_if: "val_mae > 0"}]\n')
    for t in trials:
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "gate"
        assert t.intermediate_values == primary_curve(t) and sorted(t.intermediate_values) == [1, 2]


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_oracle_prunes_a_multi_objective_study_as_optuna_prunes_its_primary_alone(direction):
    """The oracle over a two-objective study, in the primary's direction, gives Optuna's own decisions on a
    single-objective study holding the same trials with the primary's values."""
    rng = random.Random(1)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    single = optuna.create_study(direction=direction, pruner=pruner)
    multi = optuna.create_study(directions=[direction, "minimize"], pruner=pruner)
    for _ in range(6):
        s, m = single.ask(), multi.ask()
        for e in range(1, 8):
            v = rng.random()
            s.report(v, e)
            multi._storage.set_trial_intermediate_value(m._trial_id, e, v)  # as the trial body writes it
        final = rng.random()
        single.tell(s, final)
        multi.tell(m, [final, rng.random()])
    oracle = PruneOracle.for_pruner(multi, direction=direction)
    assert oracle is not None and oracle.direction.name.lower() == direction
    decisions = []
    for _ in range(4):
        s, m, values = single.ask(), multi.ask(), {}
        for e in range(1, 8):
            v = rng.random()
            s.report(v, e)
            values[e] = v
            decisions.append(oracle.should_prune(m, values))
            assert decisions[-1] == s.should_prune(), (direction, e)
        single.tell(s, state=optuna.trial.TrialState.PRUNED)
        multi.tell(m, state=optuna.trial.TrialState.PRUNED)
    assert any(decisions) and not all(decisions)


RAY_STUDY = """
name: ray-mo
task: {{family: toy, dataset: {{n_samples: 128}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
  baselines:
    current: {{lr: 1.0e-2, hidden: 16}}
{objectives}
sampler: {{type: random, seed: 1}}
pruner: {pruner}
gates: {gates}
budget: {{n_trials: 3, max_epochs: 4}}
training: {{epochs: 4}}
storage: sqlite:///{db}
artifacts: {art}
backend: ray
ray: {{cpus_per_trial: 1}}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_under_ray_a_multi_objective_study_prunes_on_its_primary_and_spares_its_baseline(tmp_path, monkeypatch):
    """One local Ray cluster: a two-objective study (FIFO under Tune) with a pruner that prunes every epoch
    is pruned in the workers on its primary; then a single-objective study under ASHA whose gate stops every
    sampled trial, while the protected baseline trains on past both."""
    pytest.importorskip("ray")
    import ray

    from hpo.run.backends.ray import RayBackend

    monkeypatch.chdir(tmp_path)  # Tune writes its runs/ray folder here

    def run_ray(name: str, **keys) -> list:
        path = tmp_path / f"{name}.yaml"
        path.write_text(RAY_STUDY.format(db=tmp_path / f"{name}.db", art=tmp_path / "art", **keys).replace("ray-mo", name))
        RayBackend("local").run(load_study(path), RunOptions(cache_dir=str(tmp_path / "cache"), device="cpu", checkpoints=False))
        return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / f'{name}.db'}").get_trials()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        mo = run_ray("ray-mo", objectives=OBJECTIVES, pruner="{type: threshold, upper: 0.0, n_warmup_steps: 2}", gates="[]")
        so = run_ray("ray-so", objectives="objectives: [val_mae]", pruner="{type: none}",
                     gates='[{name: g, epoch: 2, stop_if: "val_mae > 0"}]')
    finally:
        ray.shutdown()
    baseline, *sampled = mo
    assert baseline.user_attrs[R.BASELINE] == "current" and len(sampled) == 2
    assert_complete_with_both_values(baseline)
    assert baseline.user_attrs[R.GATE_WAIVED][0].startswith("pruned at epoch 2: val_mae=")
    for t in sampled:
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "pruned", t.user_attrs.get(R.STOP_DETAIL)
        assert t.intermediate_values == primary_curve(t) and sorted(t.intermediate_values) == [1, 2]
    baseline, *sampled = so
    assert baseline.state.name == "COMPLETE" and baseline.user_attrs[R.EPOCHS_RUN] == 4
    assert baseline.user_attrs[R.GATE_WAIVED][0].startswith("gate g at epoch 2: stop_if val_mae > 0 held")
    for t in sampled:
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "gate" and t.user_attrs[R.EPOCHS_RUN] == 2
