"""``hpo keys TASK`` and :mod:`hpo.spec.keys`: every YAML key of a study, each config key with its help."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hpo.spec.keys import config_keys, study_keys, task_keys, type_name
from hpo.tasks import available_task_names, get_task
from hpo.train.config import TrainConfig
from tests.conftest import hpo_cli

TASKS = available_task_names()


def test_every_train_config_field_has_help():
    missing = [f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("help", "").strip()]
    assert not missing, f"TrainConfig fields without a help text in their metadata: {missing}"


@pytest.mark.parametrize("name", TASKS)
def test_every_config_field_of_a_task_has_help(name):
    fields = get_task(name).config_fields()
    missing = [f"{section}.{key}" for key, (section, f) in fields.items() if not f.metadata.get("help", "").strip()]
    assert not missing, f"task {name}: config fields without a help text in their metadata: {missing}"


@pytest.mark.parametrize("name", TASKS)
def test_every_config_key_is_listed_with_help(name):
    task_cls = get_task(name)
    keys = {k.key: k for k in config_keys(task_cls)}
    assert sorted(keys) == task_cls.config_keys()
    for key in task_cls.config_keys():
        assert keys[key].help.strip(), f"{name}: {key} has no help"
        assert keys[key].section in ("train", "model", "data")
    for key, (section, f) in task_cls.config_fields().items():
        assert keys[key].section == section
        assert keys[key].default == (f.default if f.default_factory is dataclasses.MISSING else f.default_factory())


def test_study_sections_come_from_the_schema():
    keys = {(k.section, k.key): k for k in study_keys()}
    assert keys[("study", "name")].required and keys[("study", "seed")].default == 0
    assert keys[("budget", "max_consecutive_failures")].default == 10
    assert keys[("fault_tolerance", "heartbeat_interval")].type == "int"
    assert ("sampler (tpe)", "n_startup_trials") in keys and ("pruner (patient)", "wrapped") in keys
    assert keys[("task", "family")].required
    assert keys[("budget", "timeout")].type == "number or null"


def test_dataset_keys_of_the_task():
    keys = {(k.section, k.key): k for k in task_keys(get_task("toy"))}
    assert keys[("task.dataset", "n_samples")].default == 256


def test_type_names():
    from typing import Literal, Optional

    assert type_name(Optional[float]) == "float or null"
    assert type_name(Literal["a", "b"]) == "a | b"
    assert type_name(list[str]) == "list of str"
    assert type_name(dict) == "mapping"


def test_cli_table_and_json():
    r = hpo_cli("keys", "toy")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SECTION", "KEY", "TYPE", "DEFAULT", "HELP"]
    row = next(line for line in lines if line.split()[:2] == ["model", "hidden"])
    assert "width of each modality encoder" in row and " 32 " in row
    assert any(line.split()[:2] == ["train", "lr_encoder"] for line in lines)
    r = hpo_cli("keys", "toy", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    config = {d["key"]: d for d in doc if d["section"] in ("train", "model", "data")}
    assert sorted(config) == get_task("toy").config_keys()
    assert all(d["help"] for d in config.values())
    assert {"section", "key", "type", "default", "help"} <= set(doc[0])


def test_cli_unknown_task():
    r = hpo_cli("keys", "tyo")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: must name a known task: {', '.join(TASKS)} (did you mean 'toy'?), but got 'tyo'"]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", available_task_names())
def test_every_key_a_study_accepts_has_help(name):
    """Every row of `hpo keys TASK` - study sections, sampler and pruner types, dataset formats, config keys -
    says what the key does (its help lives in the pydantic field's description or the dataclass metadata)."""
    missing = [(k.section, k.key) for k in task_keys(get_task(name)) if not k.help]
    assert not missing, missing
