"""The task contract, checked for every registered task on its ``tiny`` preset and synthetic data.

For each name in :func:`hpo.tasks.available_task_names` (built-ins and any installed family): the config
sections are train/model/data with no shared key, the tiny preset splits into them, the model builds and
trains one step, gradients reach every trainable parameter, the parameter groups cover every trainable
parameter once, a second ``load`` is served by the data cache (a fresh cache on the same folder reads the
disk entry; nothing is rebuilt or rewritten), and two runs with the same seed give identical losses and
metrics on CPU. A family needs no edit here: its ``synthetic`` format with default settings is used unless
:data:`SYNTHETIC` names smaller settings (for speed).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hpo.data.cache import DataCache
from hpo.tasks import available_task_names, get_task
from hpo.train import TrainConfig, fit
from hpo.train.optim import make_optimizer

TASK_NAMES = available_task_names()

#: smaller synthetic data than the formats' defaults, so each case takes a few seconds on one thread
SYNTHETIC: dict[str, dict] = {
    "toy": {"format": "synthetic", "n_samples": 96},
    "drug_target": {"format": "synthetic", "n_drugs": 12, "n_proteins": 10, "smiles_length": [6, 16],
                    "protein_length": [10, 30]},
    "face3d": {"format": "synthetic", "n_samples": 64, "n_identities": 32, "n_keypoints": 6, "identity_dim": 8,
               "target_dim": 8},
    "crystal_text": {"format": "synthetic", "n_samples": 16, "max_atoms": 3},
    "traffic": {"format": "synthetic", "n_nodes": 5, "n_days": 4, "steps_per_day": 96, "events_per_day": 0},
}
#: the target of tasks with ``needs_target`` (any name for crystal_text's synthetic crystals)
TARGETS: dict[str, str] = {"crystal_text": "y"}
#: trainable parameters that legitimately get no gradient on the tiny preset, per task (name prefixes).
#: None today: every tiny model uses all of its parameters.
UNUSED_PARAMETERS: dict[str, tuple[str, ...]] = {}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_task(name: str, cache: DataCache):
    cls = get_task(name)
    spec = cls.DatasetSpec.model_validate(SYNTHETIC.get(name, {"format": "synthetic"}))
    return cls(spec, TARGETS.get(name), cache)


def tiny(name: str):
    cls = get_task(name)
    assert "tiny" in cls.presets, f"task {name} has no tiny preset (Task.presets['tiny'])"
    return cls.split_config(cls.presets["tiny"])


def test_every_task_is_found():
    assert {"toy", "crystal_text", "drug_target", "face3d", "traffic"} <= set(TASK_NAMES)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_config_sections_are_train_model_data_without_shared_keys(name):
    cls = get_task(name)
    fields = cls.config_fields()
    assert {section for section, _ in fields.values()} <= {"train", "model", "data"}
    names = {
        "train": {f.name for f in dataclasses.fields(TrainConfig)} - {"group_lr"},
        "model": {f.name for f in dataclasses.fields(cls.ModelConfig)},
        "data": {f.name for f in dataclasses.fields(cls.DataConfig)},
    }
    for a, b in (("train", "model"), ("train", "data"), ("model", "data")):
        assert not names[a] & names[b], f"{name}: keys in both {a} and {b}: {sorted(names[a] & names[b])}"
    assert set(fields) == names["train"] | names["model"] | names["data"]
    assert all(fields[k][0] == section for section, keys in names.items() for k in keys)
    group_keys = {f"lr_{g}" for g in cls.param_groups}
    assert not group_keys & set(fields), f"{name}: lr_<group> keys shadow config fields"
    assert cls.config_keys() == sorted(set(fields) | group_keys)
    train, model_cfg, data_cfg = tiny(name)  # every tiny key lands in one section
    assert isinstance(train, TrainConfig)
    assert isinstance(model_cfg, cls.ModelConfig) and isinstance(data_cfg, cls.DataConfig)
    assert cls.default_objective in cls.objective_names()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_tiny_model_trains_one_step_and_gradients_reach_every_parameter(name, tmp_path):
    task = make_task(name, DataCache(tmp_path / "cache"))
    train, model_cfg, data_cfg = tiny(name)
    torch.manual_seed(0)
    splits = task.load(data_cfg)
    assert all(splits.size(s) > 0 for s in ("train", "val", "test"))
    model = task.build_model(model_cfg, splits)
    assert isinstance(model, torch.nn.Module)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name}: the tiny model has no trainable parameter"

    groups = task.group_parameters(model)
    assert set(groups) == set(task.param_groups or ("all",))
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in trainable.values()), \
        f"{name}: parameter groups must hold every trainable parameter exactly once"

    model.train()
    batch = next(iter(task.loader(splits, "train", train.batch_size, shuffle=True, seed=0)))
    out = task.step(model, batch, train=True)
    assert out.loss.ndim == 0 and out.loss.requires_grad and math.isfinite(float(out.loss.detach()))
    assert out.n > 0
    out.loss.backward()
    exempt = UNUSED_PARAMETERS.get(name, ())
    no_grad = [n for n, p in trainable.items() if not n.startswith(exempt) and p.grad is None]
    zero_grad = [n for n, p in trainable.items()
                 if not n.startswith(exempt) and p.grad is not None and not bool(p.grad.ne(0).any())]
    assert not no_grad, f"{name}: no gradient reaches {no_grad}"
    assert not zero_grad, f"{name}: all-zero gradient for {zero_grad}"
    assert all(bool(torch.isfinite(p.grad).all()) for p in trainable.values() if p.grad is not None)

    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = make_optimizer(groups, train)
    optimizer.step()
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainable.items()), f"{name}: the step changed nothing"

    model.eval()
    with torch.no_grad():
        val = task.step(model, next(iter(task.loader(splits, "val", train.batch_size, shuffle=False))), train=False)
    metrics = task.compute_metrics(val.pred, val.target)
    assert metrics and set(metrics) <= set(task.metrics), f"{name}: metrics {sorted(metrics)} not in {sorted(task.metrics)}"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_second_load_is_served_by_the_cache(name, tmp_path):
    root = tmp_path / "cache"
    _, _, data_cfg = tiny(name)
    first = DataCache(root)
    make_task(name, first).load(data_cfg)
    assert first.stats.misses >= 1 and first.stats.disk_hits == 0
    entries = {p: p.stat().st_mtime_ns for p in root.rglob("*.pkl")}
    assert len(entries) == first.stats.misses, f"{name}: every built entry is on disk"

    again = DataCache(root)  # a new worker: empty memory, the same folder
    splits = make_task(name, again).load(data_cfg)
    assert again.stats.misses == 0, f"{name}: the second load rebuilt {again.stats.misses} entries"
    assert again.stats.disk_hits == first.stats.misses
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.pkl")} == entries  # read, not rewritten
    assert splits.size("train") > 0

    task = make_task(name, again)  # the same cache instance: served from memory
    task.load(data_cfg)
    assert again.stats.misses == 0 and again.stats.memory_hits >= 1


def _timeless(values) -> dict:
    """Every recorded value but the wall-clock ones (``epoch_seconds`` ...)."""
    return {k: v for k, v in values.items() if not k.endswith("seconds")}


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN (a metric with nothing to average is NaN in both runs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("name", TASK_NAMES)
def test_two_runs_with_the_same_seed_are_identical_on_cpu(name, tmp_path):
    train, model_cfg, data_cfg = tiny(name)
    train = dataclasses.replace(train, seed=7)
    results = []
    for run in range(2):
        task = make_task(name, DataCache(tmp_path / f"cache{run}"))  # separate caches: the data are rebuilt too
        splits = task.load(data_cfg)
        results.append(fit(task, splits, train, model_cfg, device="cpu", max_epochs=1, keep_best_state=True))
    a, b = results
    assert a.stop_reason == b.stop_reason and a.epochs_run == b.epochs_run == 1
    assert _same(_timeless(a.curves), _timeless(b.curves)), f"{name}: curves differ between two runs with seed 7"
    assert _same(_timeless(a.best), _timeless(b.best))
    assert math.isfinite(a.best["train_loss"]) and math.isfinite(a.best["val_loss"])
    assert a.best_state.keys() == b.best_state.keys()
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)

