"""The Ray Tune backend on a real local Ray cluster: the same study, space, store and trial body."""

from pathlib import Path

import optuna
import pytest

from tests.conftest import hpo_cli

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
name: ray-toy
task: {{family: toy, dataset: {{n_samples: 256}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    use_second_modality: {{type: bool}}
    fusion: {{type: categorical, choices: [concat, gated], when: use_second_modality}}
    hidden: [8, 16]
  derived: {{batch_size: "2 * hidden"}}
  constraints: ["hidden > 8 or lr < 2.0e-2"]
  baselines:
    current: {{lr: 1.0e-2, use_second_modality: true, fusion: concat, hidden: 16}}
    single: {{extends: current, use_second_modality: false}}
objectives: [val_mae]
sampler: {{type: tpe, seed: 1, n_startup_trials: 3}}
budget: {{n_trials: 6, max_epochs: 8}}
training: {{epochs: 8}}
storage: sqlite:///{db}
artifacts: {art}
backend: ray
ray: {{cpus_per_trial: 1, grace_period: 2, reduction_factor: 2}}
"""


def test_ray_backend_runs_the_same_study(tmp_path):
    pytest.importorskip("ray")
    path = tmp_path / "ray.yaml"
    path.write_text(STUDY.format(db=tmp_path / "ray.db", art=tmp_path / "art"))
    r = hpo_cli("run", path, "--address", "local", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    trials = optuna.load_study(study_name="ray-toy", storage=f"sqlite:///{tmp_path / 'ray.db'}").get_trials()
    assert len([t for t in trials if t.user_attrs.get("stop_reason") not in ("constraint",)]) >= 6
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["current", "single"]
    single = trials[1]
    assert "fusion" not in single.params and "fusion" not in single.user_attrs["config"]  # conditional, as locally
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete
    for t in trials:
        if t.user_attrs.get("stop_reason") == "constraint":
            continue
        c = t.user_attrs["config"]
        assert c["batch_size"] == 2 * c["hidden"]  # derived values, as locally
        assert t.user_attrs["curves"]["val_mae"] and t.intermediate_values  # curves per epoch in the store
        assert max(t.intermediate_values) == len(t.user_attrs["curves"]["val_mae"])
    for t in complete:
        assert (tmp_path / "art" / t.user_attrs["checkpoint"]).exists()
        assert t.value == t.user_attrs["metrics"]["val_mae"] and t.user_attrs["diagnosis"] is not None
    stopped = [t for t in trials if t.state.name == "PRUNED" and t.user_attrs["stop_reason"] == "pruned"]
    assert all("ASHA" in t.user_attrs["stop_detail"] for t in stopped)
    # trials really ran concurrently (ray #46965: OptunaSearch can collapse concurrency to 1)
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.datetime_complete)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans


def test_ray_backend_without_a_tune_scheduler_stores_every_epoch(tmp_path):
    """With no Tune scheduler the workers do not report epochs to Tune (a round trip each); they write
    every epoch to the store themselves, so curves and intermediate values are as with a scheduler."""
    pytest.importorskip("ray")
    path = tmp_path / "ray.yaml"
    path.write_text(STUDY.format(db=tmp_path / "ray.db", art=tmp_path / "art"))
    r = hpo_cli("run", path, "--address", "local", "--trials", "3", "--set", "ray.scheduler=none", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    trials = optuna.load_study(study_name="ray-toy", storage=f"sqlite:///{tmp_path / 'ray.db'}").get_trials()
    trained = [t for t in trials if t.user_attrs.get("stop_reason") != "constraint"]
    assert len(trained) >= 3 and all(t.state.name == "COMPLETE" for t in trained)  # nothing stops them early
    for t in trained:
        curve = t.user_attrs["curves"]["val_mae"]
        assert sorted(t.intermediate_values) == list(range(1, 9)) == t.user_attrs["curves"]["epoch"]
        assert [t.intermediate_values[e] for e in range(1, 9)] == pytest.approx(curve)
        assert t.value == min(curve)


@pytest.mark.parametrize(("resources", "cpus", "gpus", "expected"), [
    ({"CPU": 64.0, "GPU": 8.0}, 4, 0, 16),  # a cluster's CPUs, not the driver's
    ({"CPU": 64.0, "GPU": 8.0}, 4, 1, 8),  # one trial per GPU: the GPUs bound it
    ({"CPU": 6.0, "GPU": 8.0}, 2, 1, 3),  # the CPUs bound it
    ({"CPU": 3.0}, 1, 0.5, 1),  # a GPU trial on a cluster without GPUs: at least one (Tune then waits for one)
    ({"CPU": 1.0}, 4, 0, 1),
])
def test_ray_concurrency_is_sized_by_the_cluster(resources, cpus, gpus, expected):
    from hpo.run.backends.ray import concurrency

    assert concurrency(resources, cpus, gpus) == expected


def test_a_broken_ray_tune_is_one_line_naming_the_cause_and_nothing_is_written(tmp_path):
    """Tune's own error says only "some dependencies are missing"; the backend names the import that failed (here
    a pyarrow that needs a newer numpy, as pyarrow 26 on numpy 1.x), exit 2, before the study exists."""
    pytest.importorskip("ray")
    import os

    fake = tmp_path / "shadow" / "pyarrow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("pyarrow requires NumPy 2.0 or newer, found 1.24.0")\n')
    path = tmp_path / "ray.yaml"
    path.write_text(STUDY.format(db=tmp_path / "ray.db", art=tmp_path / "art"))
    r = hpo_cli("run", path, "--address", "local", cwd=tmp_path, timeout=300,
                env={"PYTHONPATH": os.pathsep.join([str(fake.parent), str(Path(__file__).resolve().parents[1])])})
    assert r.returncode == 2, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert "pyarrow requires NumPy 2.0 or newer" in err[-1] and "ray[tune]" in err[-1], err[-3:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "ray.db").exists() and not (tmp_path / "art").exists()
