"""Both execution backends write the same record: the same tiny toy study run by the local backend (a worker
in this process) and by the Ray backend (a local Ray cluster) leaves trials with the same user-attr keys,
stop reasons and config keys, and the same study record (:mod:`hpo.store.record`)."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from hpo.run.backends.local import LocalBackend
from hpo.run.options import RunOptions
from hpo.store.record import FORMAT, FORMAT_VERSION, RAY_NODE, RECORD_ATTR, STOP_REASONS, WORKER_INDEX

# where a trial ran: the local worker's number (``hpo run``), the Ray node id (Ray); each backend's own
PLACEMENT = {WORKER_INDEX, RAY_NODE}

STUDY = """
name: contract-{backend}
task: {{family: toy, dataset: {{n_samples: 128}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
  baselines:
    current: {{lr: 1.0e-2, hidden: 16}}
    small: {{extends: current, hidden: 8}}
objectives: [val_mae]
sampler: {{type: random, seed: 1}}
pruner: {{type: none}}
budget: {{n_trials: 3, max_epochs: 3}}
training: {{epochs: 3}}
storage: sqlite:///{db}
artifacts: {art}
ray: {{cpus_per_trial: 1, scheduler: none}}
"""


def run_backend(backend, name: str, tmp_path) -> dict:
    """Run the toy study with ``backend``; return what it stored, as key sets."""
    from hpo.spec import load_study

    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(STUDY.format(backend=name, db=tmp_path / f"{name}.db", art=tmp_path / f"art-{name}")))
    study = load_study(path)
    summary = backend.run(study, RunOptions(cache_dir=str(tmp_path / "cache"), device="cpu"))
    assert summary.budget.used == 3, summary
    ostudy = optuna.load_study(study_name=f"contract-{name}", storage=f"sqlite:///{tmp_path / f'{name}.db'}")
    trials = ostudy.get_trials()
    return {
        "study": sorted(ostudy.user_attrs[RECORD_ATTR]),
        "format": ostudy.user_attrs[RECORD_ATTR][FORMAT],
        "states": sorted(t.state.name for t in trials),
        "stop_reasons": sorted(t.user_attrs.get("stop_reason") for t in trials),
        # where a trial ran is the backend's own (PLACEMENT); every other key is common to both
        "keys": sorted({tuple(sorted(set(t.user_attrs) - PLACEMENT)) for t in trials}),
        "placement": sorted({tuple(sorted(set(t.user_attrs) & PLACEMENT)) for t in trials}),
        "config_keys": sorted({tuple(sorted(t.user_attrs["config"])) for t in trials}),
        "baselines": {t.user_attrs["baseline"]: (t.state.name, t.user_attrs["stop_reason"], sorted(t.user_attrs["config"]))
                      for t in trials if "baseline" in t.user_attrs},
    }


@pytest.fixture(scope="module")
def local_record(tmp_path_factory):
    return run_backend(LocalBackend(), "local", tmp_path_factory.mktemp("local"))


@pytest.mark.slow
def test_the_local_backend_writes_the_record_schema(local_record):
    assert local_record["format"] == FORMAT_VERSION
    assert {"spec", "dataset", "format"} <= set(local_record["study"])
    assert local_record["states"] == ["COMPLETE"] * 3
    assert set(local_record["stop_reasons"]) <= set(STOP_REASONS)
    sampled, enqueued = sorted(local_record["keys"], key=len)  # a sampled trial's keys; a baseline's add what it was enqueued with
    assert {"config", "curves", "metrics", "stop_reason", "stop_detail", "checkpoint", "checkpoint_sha256",
            "sampler_seed", "worker", "diagnosis"} <= set(sampled)
    assert set(enqueued) - set(sampled) == {"baseline", "overrides"}
    assert set(local_record["baselines"]) == {"current", "small"}


@pytest.mark.ray
@pytest.mark.slow
def test_the_ray_backend_writes_the_same_record_as_the_local_one(local_record, tmp_path):
    pytest.importorskip("ray")
    from hpo.run.backends.ray import RayBackend

    ray_record = run_backend(RayBackend("local"), "ray", tmp_path)
    assert ray_record["placement"] == [(RAY_NODE,)]  # every Ray trial says which node it ran on
    assert local_record["placement"] in ([()], [(WORKER_INDEX,)])  # and no local trial has a Ray node
    assert {k: v for k, v in ray_record.items() if k != "placement"} == {
        k: v for k, v in local_record.items() if k != "placement"}
