"""`hpo schema`: JSON Schemas (draft 2020-12) of study and space files. Every shipped study and space validates
against the committed schemas (and against its own task's), the shipped files name them on their first line, the
schemas flag typos and wrong types, the committed files are what `hpo schema` writes now, and bad options exit 2."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest

from hpo.cli import main
from hpo.spec.json_schema import SCHEMA_FILES, json_schema
from hpo.spec.yaml_io import load_yaml
from hpo.tasks import get_task

ROOT = Path(__file__).resolve().parents[3]
STUDIES = sorted([*ROOT.glob("studies/*.yaml"), *ROOT.glob("studies/smoke/*.yaml")])
SPACES = sorted(ROOT.glob("search_spaces/*.yaml"))
ENTRY_POINT_TASKS = ["crystal_text", "drug_target", "face3d", "toy", "traffic"]  # pyproject.toml's fusion_hpo.tasks


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@lru_cache(maxsize=None)
def _committed(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / SCHEMA_FILES[kind]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@lru_cache(maxsize=None)
def _for_task(kind: str, task: str) -> jsonschema.Draft202012Validator:
    schema = json_schema(kind, [get_task(task)])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, doc) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def _spaces_of(study: Path) -> list[Path]:
    doc = load_yaml(study)
    named = [doc.get("space"), *(s.get("space") for s in doc.get("stages", []))]
    return [(study.parent / s).resolve() for s in named if isinstance(s, str)]


# --------------------------------------------------------------------------- the shipped files
@pytest.mark.parametrize("path", STUDIES, ids=_rel)
def test_every_shipped_study_validates(path):
    doc = load_yaml(path)
    assert _errors(_committed("study"), doc) == []
    assert _errors(_for_task("study", doc["task"]["family"]), doc) == []  # and against its own task's keys


@pytest.mark.parametrize("path", SPACES, ids=_rel)
def test_every_shipped_space_validates(path):
    doc = load_yaml(path)
    assert _errors(_committed("space"), doc) == []
    families = {load_yaml(s)["task"]["family"] for s in STUDIES if path.resolve() in _spaces_of(s)}
    for family in sorted(families):  # the task of every study that uses it
        assert _errors(_for_task("space", family), doc) == [], family


def test_the_seed_spaces_are_used_by_a_study():
    # the per-task check above is not vacuous: the seed spaces are named by studies
    used = {p for s in STUDIES for p in _spaces_of(s)}
    assert {ROOT / "search_spaces" / n for n in ("crystal_text.yaml", "traffic.yaml", "deepbind.yaml", "face3d.yaml")} <= used


@pytest.mark.parametrize("path", [*STUDIES, *SPACES], ids=_rel)
def test_first_line_names_the_committed_schema(path):
    kind = "space" if path.parent.name == "search_spaces" else "study"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix), first
    target = (path.parent / first[len(prefix):]).resolve()
    assert target == (ROOT / SCHEMA_FILES[kind]).resolve()


@pytest.mark.parametrize("kind", ["study", "space"])
def test_committed_schemas_are_what_hpo_schema_writes(kind, tmp_path):
    out = tmp_path / f"{kind}.json"
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "schema", "--kind", kind, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (ROOT / SCHEMA_FILES[kind]).read_text(), (
        f"{SCHEMA_FILES[kind]} is stale: run `hpo schema --kind {kind} --out {SCHEMA_FILES[kind]}`")
    committed = json.loads(out.read_text())
    assert committed["properties"]["task"] if kind == "study" else committed["properties"]["params"]
    assert committed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --------------------------------------------------------------------------- what the schema flags
def _smoke(name: str = "traffic") -> dict:
    return load_yaml(ROOT / "studies" / "smoke" / f"{name}.yaml")


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *head, last = path.split(".")
    node = doc
    for h in head:
        node = node[int(h)] if isinstance(node, list) else node.setdefault(h, {})
    node[last] = value
    return doc


@pytest.mark.parametrize("path, value, where, words", [
    ("training.epocs", 3, "training", "'epocs' was unexpected"),                 # a typo'd config key
    ("budgett", {"n_trials": 1}, "<top>", "'budgett' was unexpected"),          # a typo'd study key
    ("task.dataset.num_nodez", 8, "task.dataset", "'num_nodez' was unexpected"),  # a typo'd dataset key
    ("baselines.b.lrr", 0.1, "baselines.b", "'lrr' was unexpected"),             # a typo in a baseline
    ("training.epochs", "ten", "training.epochs", "not of type 'integer'"),       # a wrong type
    ("training.lr", True, "training.lr", "not of type 'number'"),
    ("training.scheduler", "cosin", "training.scheduler", "is not one of"),      # not among a Literal's values
    ("task.dataset.format", "npz", "task.dataset.format", "is not one of"),      # not one of the family's formats
    ("budget.n_trials", 0, "budget.n_trials", "not valid under any"),  # integer >= 1 or null
    ("task.family", "trafic", "task.family", "not valid under any"),
])
def test_study_schema_flags_typos_and_wrong_types(path, value, where, words):
    assert _errors(_committed("study"), _smoke()) == []
    errors = _errors(_committed("study"), _set(_smoke(), path, value))
    assert any(e.startswith(f"{where}: ") and words in e for e in errors), errors
    errors = _errors(_for_task("study", "traffic"), _set(_smoke(), path, value))
    assert errors, path


@pytest.mark.parametrize("path, value", [
    ("training.epocs", 3), ("budgett", {"n_trials": 1}), ("task.dataset.num_nodez", 8), ("baselines.b.lrr", 0.1),
    ("training.epochs", "ten"), ("training.scheduler", "cosin"), ("task.dataset.format", "npz"), ("budget.n_trials", 0),
])
def test_what_the_schema_flags_the_loader_refuses(path, value):
    # the schema is an editor's aid for the same rules: what it flags, `hpo validate` refuses too
    from hpo.errors import SpecError
    from hpo.spec import study_from_dict

    base = ROOT / "studies" / "smoke"
    assert study_from_dict(_smoke(), base_dir=base, check_data=False)
    with pytest.raises(SpecError):
        study_from_dict(_set(_smoke(), path, value), base_dir=base, check_data=False)


@pytest.mark.parametrize("path, value, where, words", [
    ("params.learning_rate", {"type": "float", "low": 0.1, "high": 1.0}, "params", "'learning_rate' was unexpected"),
    ("params.lr", {"type": "float", "low": "small", "high": 1.0}, "params.lr", "not valid under any"),
    ("params.lr", {"type": "floot", "low": 0.1, "high": 1.0}, "params.lr", "not valid under any"),
    ("fixed.epochs", 2.5, "fixed.epochs", "not of type 'integer'"),
    ("fixed.epoch", 2, "fixed", "'epoch' was unexpected"),
    ("derived.dim_ff", "4 * d_model", "derived", "'dim_ff' was unexpected"),
])
def test_space_schema_flags_typos_and_wrong_types(path, value, where, words):
    space = load_yaml(ROOT / "search_spaces" / "traffic_smoke.yaml")
    errors = _errors(_committed("space"), _set(space, path, value))
    assert any(e.startswith(f"{where}: ") and words in e for e in errors), errors


def test_stage_keys_are_checked():
    doc = load_yaml(ROOT / "studies" / "metr_la.yaml")
    assert doc["stages"], "metr_la is a staged study"
    assert _errors(_committed("study"), doc) == []
    for path, words in [("stages.0.budget.n_trails", "'n_trails' was unexpected"),    # a stage's budget keys
                        ("stages.0.training.epochz", "'epochz' was unexpected"),      # a stage's training keys
                        ("stages.0.warm_strat", "'warm_strat' was unexpected")]:
        errors = _errors(_committed("study"), _set(doc, path, 3))
        assert any(words in e for e in errors), (path, errors)


def test_dataset_keys_follow_the_family():
    # a key of crystal_text's synthetic format is no key of traffic's synthetic format (the if/then per family)
    doc = _smoke("traffic")
    assert doc["task"]["dataset"]["format"] == "synthetic"
    crystal_only = set(get_task("crystal_text").DatasetSpec.formats()["synthetic"].model_fields) - set(
        get_task("traffic").DatasetSpec.formats()["synthetic"].model_fields)
    key = sorted(crystal_only)[0]
    errors = _errors(_committed("study"), _set(doc, f"task.dataset.{key}", 1))
    assert any(f"'{key}' was unexpected" in e for e in errors), errors


def test_one_task_schema_has_only_its_keys():
    # union (no --task): a key of another family is accepted; --task traffic: refused, and the family is fixed
    doc = _set(_smoke("traffic"), "training.alignn_layers", 2)  # a crystal_text key
    assert _errors(_committed("study"), doc) == []
    assert any("'alignn_layers' was unexpected" in e for e in _errors(_for_task("study", "traffic"), doc))
    assert _errors(_for_task("study", "traffic"), _set(doc, "task.family", "toy"))
    assert _errors(_committed("study"), _set(_smoke(), "task.family", "my_pkg.tasks:MyTask")) == []


def test_descriptions_are_the_help_texts():
    from hpo.spec.keys import config_keys
    from hpo.spec.schema import BudgetSpec

    schema = json_schema("study", [get_task("toy")])
    helps = {k.key: k.help for k in config_keys(get_task("toy"))}
    for key, text in helps.items():
        assert schema["$defs"][f"config.{key}"]["description"].startswith(text or "(no help)"), key
    assert schema["$defs"]["BudgetSpec"]["properties"]["n_trials"]["description"] == \
        BudgetSpec.model_fields["n_trials"].description
    space = json_schema("space", [get_task("toy")])
    assert set(space["$defs"]["Params"]["properties"]) == set(get_task("toy").config_keys())


# --------------------------------------------------------------------------- the command
def test_schema_to_stdout_and_task(capsys):
    assert main(["schema", "--task", "toy", "--kind", "space"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json_schema("space", [get_task("toy")])
    assert "toy" in schema["description"]


def test_bad_task_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["schema", "--task", "trafic", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must name a known task" in err[0] and "'trafic'" in err[0] and "traffic" in err[0], err
    assert not out.exists()


def test_task_as_module_path(capsys):
    assert main(["schema", "--task", "models.toy.task:ToyTask"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$defs"]["TaskSection"]["properties"]["family"]["const"] == "toy"
    assert main(["schema", "--task", "no_such_module_xyz:Task"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --task: must name a Task class"), err


@pytest.mark.parametrize("where", ["missing/s.json", "."])
def test_bad_out_is_one_line_exit_2(tmp_path, capsys, where):
    out = tmp_path / where
    assert main(["schema", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out: "), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["x" * 300 + ".json",  # longer than the file system allows
                                  "/proc/hpo-schema-test.json"])  # a folder no one may create files in
def test_unwritable_out_is_one_line_exit_2(tmp_path, capsys, name):
    out = tmp_path / name
    assert main(["schema", "--kind", "space", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out: must be a writable file"), err
    assert list(tmp_path.iterdir()) == [] and not os.path.exists(out)


def test_bad_kind_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["schema", "--kind", "plan"])
    assert e.value.code == 2
