"""CLI habits (#16): global flags on either side of the command, ``$HPO_STORAGE``, ``hpo status --format json``,
``hpo completion bash|zsh``, ``--set`` refusing a change of kind, one version, ``py.typed``, and the built-in
``models`` package refusing to be shadowed by a user's own ``models/`` folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpo.cli import build_parser, main
from hpo.errors import SpecError, UsageError
from hpo.spec.study import apply_sets
from tests.conftest import ROOT, hpo_cli, stored_studies
from tests.hpo.plan.plans import write_plan

STUDY = """
name: {name}
task: {{family: toy, dataset: {{n_samples: 64}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
  baselines:
    current: {{lr: 1.0e-2, hidden: 8}}
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 1}}
training: {{epochs: 2, batch_size: 32}}
targets:
  reachable: {{val_mae: 1000.0}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name="toy", db=tmp_path / "file.db", artifacts=tmp_path / "artifacts")))
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Commands run in this process write their data cache (and a default store) under the current folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_env_storage(monkeypatch):
    monkeypatch.delenv("HPO_STORAGE", raising=False)


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# 1. global flags before and after the command ------------------------------------------------------------

@pytest.mark.parametrize("argv, verbose, quiet, debug", [
    (["run", "s.yaml", "-v"], 1, False, False),
    (["-v", "run", "s.yaml"], 1, False, False),
    (["-v", "run", "s.yaml", "-v"], 2, False, False),
    (["run", "-vv", "s.yaml"], 2, False, False),
    (["status", "-q"], 0, True, False),
    (["export", "toy", "--debug", "--verbose"], 1, False, True),
    (["--debug", "status"], 0, False, True),
    (["status"], 0, False, False),
])
def test_global_flags_parse_on_either_side(argv, verbose, quiet, debug):
    from hpo.cli import _merge_global_flags

    args = build_parser().parse_args(argv)
    _merge_global_flags(args)
    assert (args.verbose, args.quiet, args.debug) == (verbose, quiet, debug)
    assert not any(k.startswith("sub_") for k in vars(args))


@pytest.mark.slow
def test_global_flags_after_the_command_work_for_real(study_file, tmp_path, capsys, no_env_storage):
    code, _, err = _cli(capsys, "create", study_file, "-q")
    assert code == 0 and "INFO " not in err  # -q after the command: only warnings and errors
    code, _, err = _cli(capsys, "create", study_file, "--study-name", "toy2", "-vv")
    assert code == 0 and "A new study created" in err  # -vv after the command: Optuna's own info lines too
    code, _, err = _cli(capsys, "status", "--storage", f"sqlite:///{tmp_path / 'file.db'}", "nope")
    assert code == 2 and "error:" in err and "must name a known study" in err  # printed as one line
    with pytest.raises(UsageError):  # --debug after the command: the error is raised (traceback), not printed
        main(["status", "nope", "--storage", f"sqlite:///{tmp_path / 'file.db'}", "--debug"])


def test_global_flag_after_the_command_in_a_subprocess(study_file):
    r = hpo_cli("validate", study_file, "--no-data", "-v")
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


# 2. HPO_STORAGE ----------------------------------------------------------------------------------------

def test_hpo_storage_precedence(study_file, tmp_path, capsys, monkeypatch):
    env_db, flag_db, file_db = tmp_path / "env.db", tmp_path / "flag.db", tmp_path / "file.db"
    monkeypatch.setenv("HPO_STORAGE", f"sqlite:///{env_db}")
    code, out, _ = _cli(capsys, "create", study_file)  # HPO_STORAGE beats the study file's storage:
    assert code == 0 and str(env_db) in out
    assert stored_studies(env_db) == ["toy"] and stored_studies(file_db) == []
    code, out, _ = _cli(capsys, "create", study_file, "--storage", f"sqlite:///{flag_db}")  # --storage beats both
    assert code == 0 and stored_studies(flag_db) == ["toy"]
    code, out, _ = _cli(capsys, "status", "--format", "json")  # a command without a study file reads it too
    assert code == 0 and json.loads(out)["storage"] == f"sqlite:///{env_db}"
    monkeypatch.delenv("HPO_STORAGE")
    code, out, _ = _cli(capsys, "create", study_file)  # no variable: the study file's
    assert code == 0 and stored_studies(file_db) == ["toy"]


def test_study_storage_url_reads_the_variable(study_file, monkeypatch):
    from hpo.spec import DEFAULT_STORAGE, load_study

    study = load_study(study_file, check_data=False)
    file_url = study.spec.storage
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///env.db")
    assert study.storage_url("sqlite:///flag.db") == "sqlite:///flag.db"
    assert study.storage_url() == "sqlite:///env.db"
    monkeypatch.setenv("HPO_STORAGE", "")
    assert study.storage_url() == file_url
    bare = study_file.with_name("bare.yaml")
    bare.write_text("".join(line for line in study_file.read_text().splitlines(True) if not line.startswith("storage:")))
    assert load_study(bare, check_data=False).storage_url() == DEFAULT_STORAGE
    monkeypatch.setenv("HPO_STORAGE", "postgresql://user:hunter2@db/hpo")
    with pytest.raises(UsageError) as e:
        study.storage_url()
    assert "hunter2" not in str(e.value) and "***" in str(e.value)


@pytest.mark.parametrize("command", ["create", "status"])
def test_hpo_storage_with_a_password_is_refused(command, study_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HPO_STORAGE", "postgresql+psycopg://user:hunter2@localhost/hpo")
    argv = [command, study_file] if command == "create" else [command]
    code, out, err = _cli(capsys, *argv)
    assert code == 2
    assert "HPO_STORAGE" in err and "hunter2" not in err + out and "***" in err
    assert stored_studies(tmp_path / "file.db") == []  # nothing written anywhere


# 3. hpo status --format json ---------------------------------------------------------------------------

def test_status_json_lists_counts_targets_and_plan_stages(tmp_path, capsys, no_env_storage):
    plan = write_plan(tmp_path, """
        - name: quick
          budget: {n_trials: 2}
        - name: long
          budget: {n_trials: 2}
    """, extra="targets:\n  reachable: {val_mae: 1000.0}\n")
    code, _, err = _cli(capsys, "create", plan)
    assert code == 0, err
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    code, out, _ = _cli(capsys, "status", "--storage", url, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["storage"] == url
    (study,) = doc["studies"]
    assert study["name"] == "toyplan/quick" and study["plan"] == "toyplan" and study["directions"] == ["minimize"]
    assert (study["complete"], study["queued"], study["best"]) == (0, 1, None)  # the baseline, enqueued
    assert [t["level"] for t in study["targets"]] == ["reachable"] and study["targets"][0]["met"] is False
    (p,) = doc["plans"]
    assert p["name"] == "toyplan" and [s["study"] for s in p["stages"]] == ["toyplan/quick"]
    assert p["stages"][0]["waiting"] == 1 and p["stages"][0]["state"] == "running"
    code, table, _ = _cli(capsys, "status", "--storage", url)  # the table stays the default
    assert code == 0 and table.splitlines()[1].split()[:2] == ["study", "complete"] and "plan toyplan" in table


@pytest.mark.slow
def test_status_json_best_after_a_real_run(study_file, tmp_path, no_env_storage):
    url = f"sqlite:///{tmp_path / 'file.db'}"
    r = hpo_cli("run", study_file, "--threads", "1", "--no-checkpoints", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = hpo_cli("status", "--format", "json", env={"HPO_STORAGE": url}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (study,) = json.loads(r.stdout)["studies"]
    assert study["complete"] == 1 and study["best"]["trial"] == 0 and study["best"]["direction"] == "minimize"
    assert isinstance(study["best"]["value"], float) and study["targets"][0]["met"] is True


# 4. hpo completion bash|zsh ----------------------------------------------------------------------------

def _bash_script(capsys) -> str:
    code, out, _ = _cli(capsys, "completion", "bash")
    assert code == 0
    return out


def test_bash_completion_is_valid_and_names_every_command(capsys, tmp_path):
    from hpo.cli._registry import COMMANDS

    script = _bash_script(capsys)
    path = tmp_path / "hpo.bash"
    path.write_text(script)
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "complete " in script and "-F _hpo_hpo hpo" in script
    for name in COMMANDS:
        assert f"        {name}) _hpo_hpo_{name}" in script, name


def test_bash_completion_completes(capsys, tmp_path):
    script = tmp_path / "hpo.bash"
    script.write_text(_bash_script(capsys))
    (tmp_path / "s.yaml").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()

    def complete(*words: str) -> list[str]:
        line = " ".join(f'"{w}"' for w in words)
        r = subprocess.run(["bash", "-c", f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
                            '_hpo_hpo; printf "%s\\n" "${COMPREPLY[@]}"'],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return sorted(filter(None, r.stdout.splitlines()))

    assert complete("hpo", "sta") == ["status"]
    assert complete("hpo", "-v", "run", "") == ["s.yaml", "sub"]  # a study file: YAML files and folders
    assert complete("hpo", "status", "--format", "") == ["json", "table"]
    assert complete("hpo", "run", "s.yaml", "--sto") == ["--storage"]
    assert "--debug" in complete("hpo", "export", "--")  # the global flags, after the command too


def test_zsh_completion(capsys, tmp_path):
    code, script, _ = _cli(capsys, "completion", "zsh")
    assert code == 0 and script.startswith("#compdef hpo")
    for name in ("run", "status", "completion", "export"):
        assert f"'{name}:" in script and f"_hpo_hpo_{name}()" in script
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: the script's syntax is not checked")
    path = tmp_path / "_hpo"
    path.write_text(script)
    r = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["zsh", "-f", "-c", f'autoload -Uz compinit && compinit -u -d {tmp_path}/zcd; source {path}; '
                        'print -r -- ${_comps[hpo]}'], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "_hpo_hpo", r.stderr


def test_completion_needs_a_known_shell(capsys):
    with pytest.raises(SystemExit) as e:
        main(["completion", "fish"])
    assert e.value.code == 2


# 5. --set refuses a change of kind ---------------------------------------------------------------------

RAW = {"space": {"params": {"lr": [1, 2]}}, "objectives": ["val_mae"], "seed": 0, "task": {"family": "toy"},
       "ref": "file.yaml", "none": None}


@pytest.mark.parametrize("item, message", [
    ("space=x", "space is a mapping in the file and cannot be replaced by a scalar ('x')"),
    ("objectives=val_mae", "objectives is a list in the file and cannot be replaced by a scalar ('val_mae')"),
    ("seed.x=1", "seed is a scalar (0) in the file: a key path cannot go through it"),
    ("ref.params.x=1", "ref is a scalar ('file.yaml') in the file"),
    ("seed={a: 1}", "seed is a scalar in the file and cannot be replaced by a mapping"),
    ("objectives={a: 1}", "objectives is a list in the file and cannot be replaced by a mapping"),
    ("space=[1, 2]", "space is a mapping in the file and cannot be replaced by a list"),
    ("objectives.3=x", "objectives is a list of 1 items: address an item by its index 0..0, not '3'"),
    ("objectives.name.x=1", "objectives is a list of 1 items"),
    ("space.params.lr=0.1", "space.params.lr is a list in the file and cannot be replaced by a scalar"),
])
def test_set_refuses_a_change_of_kind(item, message):
    with pytest.raises(SpecError) as e:
        apply_sets(RAW, [item], "s.yaml")
    (p,) = e.value.problems
    assert p.path == "--set" and p.got == item and message in p.message, p.message
    assert str(e.value).startswith("s.yaml: --set: ")


@pytest.mark.parametrize("item, path, value", [
    ("ref=other.yaml", ("ref",), "other.yaml"),  # string -> string
    ("seed=3", ("seed",), 3),
    ("seed=abc", ("seed",), "abc"),  # a scalar of another type is still a scalar: the schema judges it
    ("objectives=[val_mae, val_loss]", ("objectives",), ["val_mae", "val_loss"]),
    ("objectives.0=val_loss", ("objectives", 0), "val_loss"),
    ("space={params: {x: [1]}}", ("space",), {"params": {"x": [1]}}),
    ("space.params.lr=[3, 4]", ("space", "params", "lr"), [3, 4]),
    ("task.dataset.path=x.json", ("task", "dataset", "path"), "x.json"),  # new keys, new mappings
    ("none.x=1", ("none", "x"), 1),  # a null takes anything
    ("none=[1]", ("none",), [1]),
])
def test_set_allows_new_keys_and_values_of_the_same_kind(item, path, value):
    out = apply_sets(RAW, [item], "s.yaml")
    node = out
    for part in path:
        node = node[part]
    assert node == value
    assert RAW["space"] == {"params": {"lr": [1, 2]}} and RAW["objectives"] == ["val_mae"]  # the input is untouched


def test_set_mismatch_on_the_command_line(study_file, tmp_path, capsys, no_env_storage):
    code, out, err = _cli(capsys, "create", study_file, "--set", "space=small.yaml")
    assert code == 2 and "--set: space is a mapping in the file" in err and "but got 'space=small.yaml'" in err
    code, _, err = _cli(capsys, "create", study_file, "--set", "objectives=val_mae", "--set", "budget.n_trials.x=1")
    assert code == 2 and err.count("error: ") == 2  # every problem at once
    assert stored_studies(tmp_path / "file.db") == []


# 6. one version; py.typed ------------------------------------------------------------------------------

def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_pyproject_version():
    import hpo

    version = _pyproject()["project"]["version"]
    assert hpo.__version__ == version
    r = subprocess.run([sys.executable, "-m", "hpo", "--version"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == f"fusion-hpo {version}", r.stderr
    assert "__version__ = \"" not in (ROOT / "hpo" / "__init__.py").read_text()  # not written a second time


def test_py_typed_ships_as_package_data():
    assert (ROOT / "hpo" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["hpo"]


# 7. a user's models/ folder must not hide the built-in families ---------------------------------------

def test_a_planted_models_package_is_refused(tmp_path, study_file):
    planted = tmp_path / "planted"
    (planted / "models").mkdir(parents=True)
    (planted / "models" / "__init__.py").write_text("raise SystemExit('the planted models package was imported')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(planted), str(ROOT)])}
    env.pop("HPO_STORAGE", None)
    r = subprocess.run([sys.executable, "-m", "hpo", "keys", "toy"], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert str(planted / "models") in r.stderr and str(ROOT / "models") in r.stderr  # both paths named
    assert "hides fusion-hpo's built-in families" in r.stderr
    assert "planted models package was imported" not in r.stderr  # found, never run
    r = subprocess.run([sys.executable, "-m", "hpo", "keys", "toy", "--format", "json"], capture_output=True,
                       text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 0, r.stderr  # without the planted folder the built-in loads
