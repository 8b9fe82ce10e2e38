"""Real studies of the toy task end to end on a real SQLite store (in-process API)."""


import optuna
import pytest

from hpo.run.budget import budget_of
from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.run.placement import plan_workers
from hpo.spec import load_study
from hpo.store.storage import open_storage

pytestmark = pytest.mark.slow


def _trials(study):
    storage = open_storage(study.storage_url(), heartbeat=False)
    return optuna.load_study(study_name=study.name, storage=storage).get_trials()


def test_study_runs_with_baselines_curves_and_checkpoints(toy_study, tmp_path):
    study = load_study(toy_study(n_trials=6))
    summary = run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    trials = _trials(study)
    b = budget_of(trials)
    assert b.used == 6 and b.running == 0 and b.waiting == 0
    assert summary.best and summary.best[0]["number"] in [t.number for t in trials]
    # baselines are the first trials, tagged with their names
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["current", "single_modality"]
    single = trials[1]
    # a parameter whose `when:` is false is neither sampled nor stored
    assert single.params["use_second_modality"] is False and "fusion" not in single.params
    assert "fusion" not in single.user_attrs["config"]
    for t in trials:
        assert t.user_attrs["stop_reason"] in ("completed", "early_stopped", "pruned")
        curves = t.user_attrs["curves"]
        assert len(curves["train_mae"]) == len(curves["val_mae"]) == t.user_attrs["epochs_run"]
        assert t.user_attrs["config"]["batch_size"] == 2 * t.user_attrs["config"]["hidden"]  # derived
        if t.state.name == "COMPLETE":
            assert t.value == t.user_attrs["metrics"]["val_mae"] == min(v for v in curves["val_mae"] if v is not None)
            assert (tmp_path / "artifacts" / t.user_attrs["checkpoint"]).exists()
            assert t.intermediate_values and max(t.intermediate_values) == t.user_attrs["epochs_run"]


def test_resume_does_not_duplicate_baselines(toy_study, tmp_path):
    path = toy_study(n_trials=3)
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    assert budget_of(_trials(study)).used == 3
    run_study(load_study(path, ["budget.n_trials=5"]), RunOptions(cache_dir=str(tmp_path / "cache")))
    trials = _trials(study)
    assert budget_of(trials).used == 5
    tags = [t.user_attrs.get("baseline") for t in trials if t.user_attrs.get("baseline")]
    assert sorted(tags) == ["current", "single_modality"]
    summary = run_study(load_study(path, ["budget.n_trials=5"]), RunOptions(cache_dir=str(tmp_path / "cache")))
    assert summary.stopped_because == "budget" and len(_trials(study)) == 5  # nothing left to do


def test_constraints_crashes_and_divergence_are_recorded_and_the_study_goes_on(toy_study, tmp_path):
    space = """
    params:
      depth: {type: int, low: 0, high: 2}
      lr: {type: categorical, choices: [1.0e-2, 1.0e6]}
      hidden: [8, 16]
    constraints:
      - {expr: "hidden > 8 or depth != 2", message: "hidden 8 needs depth < 2"}
    baselines:
      crash: {depth: 0, lr: 1.0e-2, hidden: 16}
      diverge: {depth: 1, lr: 1.0e6, hidden: 16}
      ok: {depth: 1, lr: 1.0e-2, hidden: 16}
    """
    path = toy_study(n_trials=6, space=space, extra="sampler: {type: random, seed: 0}\n")
    path.write_text(path.read_text().replace("sampler: {type: tpe, seed: 3, n_startup_trials: 3}\n", ""))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    trials = _trials(study)
    by_tag = {t.user_attrs.get("baseline"): t for t in trials}
    crash = by_tag["crash"]
    assert crash.state.name == "FAIL" and crash.user_attrs["stop_reason"] == "failed"
    assert "mat1 and mat2 shapes cannot be multiplied" in crash.user_attrs["stop_detail"]
    diverge = by_tag["diverge"]
    assert diverge.state.name == "PRUNED" and diverge.user_attrs["stop_reason"] == "diverged"
    assert "non-finite" in diverge.user_attrs["stop_detail"]
    assert by_tag["ok"].state.name == "COMPLETE"
    rejected = [t for t in trials if t.user_attrs.get("stop_reason") == "constraint"]
    for t in rejected:
        assert t.state.name == "PRUNED" and "hidden 8 needs depth < 2" in t.user_attrs["stop_detail"]
        assert "curves" not in t.user_attrs  # rejected before training
    b = budget_of(trials)
    assert b.used == 6 and b.rejected == len(rejected)  # rejections do not use the budget


def test_multi_objective_study(toy_study, tmp_path):
    path = toy_study(n_trials=4)
    text = path.read_text().replace("objectives: [val_mae]", "objectives: [val_mae, {metric: train_val_gap, direction: minimize}]")
    text = text.replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}", "pruner: {type: none}")
    text = text.replace("sampler: {type: tpe, seed: 3, n_startup_trials: 3}", "sampler: {type: nsga2, seed: 3, population_size: 4}")
    path.write_text(text)
    study = load_study(path)
    summary = run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    trials = _trials(study)
    assert all(t.state.name == "COMPLETE" and len(t.values) == 2 for t in trials)
    assert summary.best  # Pareto front
    for t in trials:
        m = t.user_attrs["metrics"]
        assert t.values == [m["val_mae"], m["train_val_gap"]]


def test_sampler_and_pruner_choices_run(toy_study, tmp_path):
    for sampler, pruner in [
        ("{type: grid}", "{type: hyperband, min_resource: 1, reduction_factor: 2}"),
        ("{type: gp, n_startup_trials: 2}", "{type: successive_halving}"),
        ("{type: cmaes}", "{type: patient, patience: 1, wrapped: {type: percentile, percentile: 50}}"),
        ("{type: random}", "{type: threshold, upper: 0.9, n_warmup_steps: 1}"),
        ("{type: tpe}", "{type: wilcoxon}"),
    ]:
        name = sampler.split()[1].strip("},")
        space = None
        if name == "grid":  # a grid needs every parameter finite
            from tests.conftest import TOY_SPACE

            space = TOY_SPACE.replace("lr: {type: float, low: 1e-3, high: 3e-2, log: true}", "lr: [1.0e-3, 1.0e-2]")
        path = toy_study(name=f"s-{name}", n_trials=3, **({"space": space} if space else {}))
        text = path.read_text().replace("sampler: {type: tpe, seed: 3, n_startup_trials: 3}", f"sampler: {sampler}")
        text = text.replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}", f"pruner: {pruner}")
        path.write_text(text)
        study = load_study(path)
        summary = run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
        assert summary.budget.used == 3, (sampler, pruner, summary)


def test_plan_workers_one_trial_per_gpu():
    assert plan_workers(None, ["0", "1", "3"], cpus=12) == [
        plan_workers(3, ["0", "1", "3"], 12)[i] for i in range(3)
    ]
    p = plan_workers(None, ["0", "1", "3"], cpus=12)
    assert [x.gpu for x in p] == ["0", "1", "3"] and all(x.threads == 4 for x in p)
    cpu = plan_workers(2, [], cpus=2)
    assert [x.gpu for x in cpu] == [None, None] and all(x.threads == 1 for x in cpu)
    shared = plan_workers(4, ["0", "1"], cpus=8)
    assert [x.gpu for x in shared] == ["0", "1", "0", "1"]
    assert plan_workers(None, [], cpus=2)[0].threads == 2


def test_prune_oracle_decides_as_optuna_does():
    """The per-epoch pruning shortcut gives Optuna's own decisions on the same trials."""
    import random

    from hpo.search.prune_oracle import PruneOracle

    rng = random.Random(0)
    for pruner in (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
                   optuna.pruners.PercentilePruner(25.0, n_startup_trials=2, interval_steps=2),
                   optuna.pruners.ThresholdPruner(upper=0.8, n_warmup_steps=1),
                   optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=2), patience=2)):
        study = optuna.create_study(pruner=pruner)
        for _ in range(8):
            t = study.ask()
            for e in range(1, 11):
                t.report(rng.random(), e)
            study.tell(t, rng.random())
        for _ in range(5):
            t = study.ask()
            oracle, values = PruneOracle.for_pruner(study), {}
            assert oracle is not None
            for e in range(1, 11):
                v = rng.random()
                t.report(v, e)
                values[e] = v
                assert oracle.should_prune(t, values) == t.should_prune(), (pruner, e)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    assert PruneOracle.for_pruner(optuna.create_study(pruner=optuna.pruners.HyperbandPruner())) is None


def test_workers_that_all_die_at_start_are_an_error_not_a_finished_study(toy_study, tmp_path):
    """A script that starts several workers without the ``if __name__ == "__main__"`` guard: every
    spawned worker dies while starting. The run must fail saying so, not report a finished study."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from hpo.run.backends.local import run_study\nfrom hpo.run.options import RunOptions\nfrom hpo.spec import load_study\n"
        f"run_study(load_study({str(toy_study(n_trials=4))!r}), RunOptions(workers=2, cache_dir={str(tmp_path / 'c')!r}))\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode != 0
    assert "all 2 workers exited with an error" in r.stderr


def test_deferred_values_write_everything_once_per_flush_and_nothing_when_empty():
    from hpo.run.handles import DeferredValues

    writes = []
    d = DeferredValues(writes.append, every=3600.0)
    d.add(1, 0.5)
    d.add(2, 0.4)
    assert not d.due and writes == []  # kept in memory until flushed
    d.flush()
    d.flush()  # nothing pending: no write
    assert writes == [{1: 0.5, 2: 0.4}]
    d.add(3, 0.3)
    d.every = 0.0
    assert d.due
    d.flush()
    assert writes == [{1: 0.5, 2: 0.4}, {3: 0.3}]  # each value written once
