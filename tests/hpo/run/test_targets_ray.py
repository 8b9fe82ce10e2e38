"""stop_at_target on the Ray backend (a real local Ray cluster): the searcher suggests no trial once a trial
meets the level, as the local worker loop starts none."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STUDY = """
name: ray-target
task: {{family: toy, dataset: {{n_samples: 128}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 6}}
training: {{epochs: 2}}
targets:
  reachable: {{val_mae: 1000.0}}
stop_at_target: reachable
storage: sqlite:///{db}
artifacts: {art}
backend: ray
ray: {{cpus_per_trial: 1, max_concurrent: 1, scheduler: none}}
"""


def test_stop_at_target_ends_a_ray_study(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from hpo.run.backends import make_backend
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(db=tmp_path / "s.db", art=tmp_path / "art"))
    study = load_study(path)
    summary = make_backend("ray", address="local").run(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    assert summary.stopped_because == "target met"
    assert 1 <= summary.budget.used <= 2 < 6  # the one that met it (and at most one Tune had asked for already)
