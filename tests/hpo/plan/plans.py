"""Small staged toy plans on a real SQLite store in tmp_path, and reading their stage studies back."""

from __future__ import annotations

import textwrap
from pathlib import Path

PLAN = """
name: {name}
task: {{family: toy, dataset: {{n_samples: 120}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
  baselines:
    current: {{lr: 1.0e-2, hidden: 16}}
objectives: [val_mae]
sampler: {{type: tpe, seed: 3, n_startup_trials: 2}}
pruner: {{type: none}}
budget: {{n_trials: 3}}
training: {{epochs: 3, batch_size: 32}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


def write_plan(tmp_path: Path, stages: str, *, name: str = "toyplan", extra: str = "") -> Path:
    """A toy plan file in ``tmp_path`` (its store ``tmp_path/hpo.db``) with the ``stages:`` YAML given."""
    text = textwrap.dedent(PLAN.format(name=name, db=tmp_path / "hpo.db", artifacts=tmp_path / "artifacts"))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text + textwrap.dedent(extra) + "stages:\n" + textwrap.indent(textwrap.dedent(stages).strip() + "\n", "  "))
    return path


def stage_trials(tmp_path: Path, study_name: str):
    """Every trial of a stage study in the plan's store."""
    import optuna

    from hpo.store.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'hpo.db'}", heartbeat=False)
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def stage_attr(tmp_path: Path, study_name: str) -> dict:
    """The study user attr STAGE of a stage study."""
    import optuna

    from hpo.store.record import STAGE
    from hpo.store.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'hpo.db'}", heartbeat=False)
    return optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(STAGE)


def run(path: Path, tmp_path: Path, **opts):
    """Run the plan in this process with the local backend (one worker); its PlanSummary."""
    from hpo.plan.runner import run_plan
    from hpo.run.backends import make_backend
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    study = load_study(path)
    options = RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False, **opts)
    return run_plan(study, options, backend=make_backend("local"))
