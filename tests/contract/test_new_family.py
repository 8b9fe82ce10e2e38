"""A new family is added by copying the toy family and declaring one entry point, with no edit to ``hpo/``.

The test copies ``models/toy/`` to a package ``myfam`` in a temporary site folder (its imports of
``models.toy`` rewritten, its task registered as ``myfam``), writes the package's ``myfam-0.1.dist-info``
(``METADATA`` and an ``entry_points.txt`` in the group ``fusion_hpo.tasks``), puts the folder on
``PYTHONPATH`` and drives the real CLI in subprocesses: the task is found through the entry point,
``hpo validate`` accepts a study of it, ``hpo run`` completes its trials and ``hpo export`` names the
family. Everything the commands write (store, artifacts, data cache, the copied package) lies under
``tmp_path``: the subprocesses run there and bytecode is not written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from hpo.tasks import ENTRY_POINT_GROUP
from tests.conftest import ROOT, hpo_cli

N_TRIALS = 3

STUDY = """
name: myfam_study
task: {{family: myfam, dataset: {{n_samples: 96}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
    fusion: {{type: categorical, choices: [concat, gated, sum]}}
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: {n_trials}}}
training: {{epochs: 2, batch_size: 16}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


def copy_toy_family(site: Path) -> Path:
    """``models/toy`` -> ``site/myfam`` registered as ``myfam``, plus its dist-info with the entry point."""
    package = site / "myfam"
    shutil.copytree(ROOT / "models" / "toy", package, ignore=shutil.ignore_patterns("__pycache__"))
    registered = 0
    for path in package.rglob("*.py"):
        text = path.read_text().replace("models.toy", "myfam")
        text, n = re.subn(r'@register_task\("toy"\)', '@register_task("myfam")', text)
        registered += n
        path.write_text(text)
    assert registered == 1, "the toy family registers exactly one task"
    dist = site / "myfam-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myfam\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmyfam = myfam.task:ToyTask\n")
    return package


def env_with(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.slow
def test_a_copied_family_registers_through_an_entry_point_and_runs_a_study(tmp_path):
    assert not tmp_path.resolve().is_relative_to(ROOT.resolve())  # nothing below is written in the repository
    site = tmp_path / "site"
    copy_toy_family(site)
    work = tmp_path / "work"
    work.mkdir()
    env = env_with(site)

    probe = textwrap.dedent("""
        from hpo.tasks import available_task_names, get_task
        cls = get_task("myfam")
        print("myfam" in available_task_names(), cls.__module__, cls.name, "tiny" in cls.presets)
    """)
    r = subprocess.run([sys.executable, "-c", probe], cwd=work, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "myfam.task", "myfam", "True"], r.stdout  # the copy, not models.toy

    study = work / "study.yaml"
    db = work / "store" / "hpo.db"
    study.write_text(textwrap.dedent(STUDY.format(n_trials=N_TRIALS, db=db, artifacts=work / "artifacts")))
    r = hpo_cli("validate", study, cwd=work, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])

    r = hpo_cli("run", study, cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "best config:" in r.stdout

    url = f"sqlite:///{db}"
    r = hpo_cli("status", "--storage", url, cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("myfam_study "))
    assert row[1:6] == [str(N_TRIALS), "0", "0", "0", "0"], r.stdout  # complete, pruned, failed, running, queued

    r = hpo_cli("export", "myfam_study", "--storage", url, "--out", work / "best.yaml", cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    best = yaml.safe_load((work / "best.yaml").read_text())
    assert best["task"]["family"] == "myfam" and {"lr", "hidden", "fusion"} <= set(best["config"])

    written = {p.relative_to(work).parts[0] for p in work.rglob("*")}
    assert written <= {"study.yaml", "store", "artifacts", "runs", "best.yaml"}, written  # runs/: the data cache
