"""``training.val_subset`` (#17): each epoch validates on one fixed seeded subset of the val split (what the
pruner and the curves see), the reported objective is the whole split at the best epoch; ``eval_every``
validates every k epochs and always at the last; bad values are refused before any trial."""

from __future__ import annotations

import dataclasses
import math
import textwrap

import numpy as np
import optuna
import pytest
import torch

from hpo.data.cache import DataCache
from hpo.errors import Pruned
from hpo.tasks import get_task
from hpo.train import fit
from hpo.train.loop import evaluate, subset_indices, take
from tests.conftest import hpo_cli, stored_studies

N_SAMPLES = 200  # toy: 140 train / 30 val / 30 test
N_VAL = 30

STUDY = """
name: val-subset
task: {{family: toy, dataset: {{n_samples: {n}}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
objectives: [val_mae]
sampler: {{type: random, seed: 1}}
pruner: {{type: none}}
budget: {{n_trials: {trials}, max_epochs: 5}}
training: {{epochs: {epochs}, batch_size: 16, {training}}}
seed: 7
storage: sqlite:///{db}
artifacts: {art}
"""


class RecordingToy(get_task("toy")):
    """The toy task, noting the targets of every val pass its loaders make (which samples were validated)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.val_passes: list[tuple[float, ...]] = []

    def loader(self, splits, split, batch_size, *, shuffle, seed=0):
        inner = super().loader(splits, split, batch_size, shuffle=shuffle, seed=seed)
        return _Recorder(inner, self.val_passes) if split == "val" else inner


class _Recorder:
    def __init__(self, inner, passes):
        self.inner, self.passes = inner, passes

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        seen = []
        for batch in self.inner:
            seen += batch[2].squeeze(1).tolist()
            yield batch
        self.passes.append(tuple(seen))


def _task(cls=None, n=N_SAMPLES):
    cls = cls or get_task("toy")
    return cls(cls.DatasetSpec(n_samples=n), None, DataCache(None))


def _fit(task, config, **kw):
    train_cfg, model_cfg, data_cfg = task.split_config({"epochs": 4, "batch_size": 16, "hidden": 8, "seed": 3, **config})
    splits = task.load(data_cfg)
    return fit(task, splits, train_cfg, model_cfg, device="cpu", **kw), splits, model_cfg


def _val_targets(splits, indices=None):
    y = splits["val"].tensors[2].squeeze(1)
    return tuple((y if indices is None else y[torch.as_tensor(indices)]).tolist())


def _subset_view(splits, k, seed):
    """The val subset a run with val_subset=k and this seed validates on, as its own Splits."""
    from hpo.tasks import Splits

    return Splits(splits["train"], take(splits["val"], subset_indices(N_VAL, k, seed)), None, info=splits.info)


def test_epoch_values_are_on_a_fixed_subset_and_the_result_on_the_whole_split():
    task = RecordingToy(RecordingToy.DatasetSpec(n_samples=N_SAMPLES), None, DataCache(None))
    states = {}
    result, splits, model_cfg = _fit(task, {"val_subset": 10}, on_epoch_state=lambda s: states.setdefault(s.epoch, s.state()))
    assert result.stop_reason == "completed" and result.epochs_run == 4

    # every epoch validated the same 10 samples, drawn from the seed; the whole split once at the end
    subset = _val_targets(splits, subset_indices(N_VAL, 10, 3))
    assert len(set(subset)) == 10
    assert task.val_passes == [subset] * 4 + [_val_targets(splits)]
    assert result.curves["val_samples"] == [10] * 4 and len(result.curves["val_seconds"]) == 4

    # each epoch's val_mae is a recomputation on that subset with that epoch's weights, not the whole split's
    view = _subset_view(splits, 10, 3)
    for epoch, state in states.items():
        model = task.build_model(model_cfg, splits)
        model.load_state_dict(state)
        on_subset = evaluate(task, model, view, "val", 16, device="cpu")["val_mae"]
        on_whole = evaluate(task, model, splits, "val", 16, device="cpu")["val_mae"]
        assert result.curves["val_mae"][epoch - 1] == pytest.approx(on_subset, rel=1e-6), epoch
        assert not math.isclose(on_subset, on_whole, rel_tol=1e-4), epoch

    # the result: the best-on-subset epoch's weights on the whole split, the subset's values kept beside
    best = result.best
    model = task.build_model(model_cfg, splits)
    model.load_state_dict(result.best_state)
    whole = evaluate(task, model, splits, "val", 16, device="cpu")
    assert result.best_epoch == 1 + int(np.argmin(result.curves["val_mae"]))
    assert {k: best[k] for k in whole} == pytest.approx(whole, rel=1e-6)
    assert best["val_subset_mae"] == result.curves["val_mae"][result.best_epoch - 1] != best["val_mae"]
    assert best["val_samples"] == N_VAL and best["val_subset_samples"] == 10
    assert best["train_val_gap"] == pytest.approx(best["val_mae"] - best["train_mae"])  # from the whole split too


def test_the_subset_is_the_same_for_every_trial_of_a_seed():
    seen = []
    for config in ({"lr": 1e-2, "hidden": 8}, {"lr": 3e-3, "hidden": 16}):
        task = RecordingToy(RecordingToy.DatasetSpec(n_samples=N_SAMPLES), None, DataCache(None))
        _, splits, _ = _fit(task, {"val_subset": 0.3, **config})
        seen.append(task.val_passes[0])
    assert seen[0] == seen[1] and len(seen[0]) == 9  # 0.3 of 30 samples
    other = RecordingToy(RecordingToy.DatasetSpec(n_samples=N_SAMPLES), None, DataCache(None))
    _fit(other, {"val_subset": 0.3, "seed": 4})
    assert other.val_passes[0] != seen[0]  # another seed draws another subset
    # nested: a smaller subset of the same seed is part of a larger one
    assert set(subset_indices(N_VAL, 5, 3)) <= set(subset_indices(N_VAL, 12, 3))


def test_without_val_subset_nothing_changes():
    task = _task()
    plain, _, _ = _fit(task, {})
    whole, _, _ = _fit(task, {"val_subset": 1.0})  # a subset as large as the split is the split
    timeless = lambda d: {k: v for k, v in d.items() if not k.endswith("seconds")}  # noqa: E731
    assert timeless(plain.curves) == timeless(whole.curves) and plain.best == whole.best
    assert "val_samples" not in plain.curves and "val_subset_mae" not in plain.best
    sub, _, _ = _fit(task, {"val_subset": 10})
    assert sub.curves["train_loss"] == plain.curves["train_loss"]  # drawing the subset leaves training's RNG alone


def test_a_pruned_run_keeps_the_subset_values():
    def prune_at_2(epoch, metrics):
        if epoch == 2:
            raise Pruned(epoch, "pruned for the test")

    result, splits, _ = _fit(_task(), {"val_subset": 10}, on_epoch=prune_at_2)
    assert result.stop_reason == "pruned" and result.epochs_run == 2
    assert result.best["val_samples"] == 10 and "val_subset_mae" not in result.best  # no whole-split evaluation
    assert result.best["val_mae"] == result.curves["val_mae"][result.best_epoch - 1]


def test_eval_every_validates_every_k_epochs_and_the_last():
    task = RecordingToy(RecordingToy.DatasetSpec(n_samples=N_SAMPLES), None, DataCache(None))
    seen = []
    result, _, _ = _fit(task, {"val_subset": 10, "eval_every": 2, "epochs": 5}, on_epoch=lambda e, m: seen.append(e))
    assert seen == [2, 4, 5]
    assert [v is not None for v in result.curves["val_mae"]] == [False, True, False, True, True]
    assert result.curves["val_samples"] == [None, 10, None, 10, 10]
    assert len(task.val_passes) == 3 + 1  # three subset passes and the whole split once


def test_a_count_larger_than_the_split_is_refused_by_fit():
    with pytest.raises(ValueError, match=r"val_subset must be <= the val split's size \(30 samples\), but got 31"):
        _fit(_task(), {"val_subset": 31})


def test_take_cuts_every_kind_of_part():
    @dataclasses.dataclass
    class Pairs:  # like drug_target's PairSet: shared tables and one row per item
        tables: dict
        idx: np.ndarray
        y: np.ndarray

        def __len__(self):
            return len(self.y)

    class Windows:  # like traffic's windows: read through batch(idx)
        def __len__(self):
            return 10

        def batch(self, idx):
            return idx * 100

    ix = np.array([1, 3])
    pairs = take(Pairs({"t": 1}, np.arange(5), np.arange(5.0) * 2), ix)
    assert pairs.tables == {"t": 1} and pairs.idx.tolist() == [1, 3] and pairs.y.tolist() == [2.0, 6.0]
    assert take(Windows(), ix).batch(torch.tensor([1])).tolist() == [300]
    assert [take(list("abcde"), ix)[i] for i in range(2)] == ["b", "d"]
    class Opaque:
        def __len__(self):
            return 3

    with pytest.raises(TypeError, match=r"val_subset: the val split \(Opaque\) cannot be cut to a subset"):
        take(Opaque(), ix)


def _write(tmp_path, training, epochs=3, trials=2):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(n=N_SAMPLES, trials=trials, epochs=epochs, training=training,
                                                 db=tmp_path / "hpo.db", art=tmp_path / "art")))
    return path


@pytest.mark.slow
def test_a_study_reports_the_whole_split_and_prunes_on_the_subset(tmp_path):
    from hpo.run.backends.local import LocalBackend
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.store.checkpoint import load_checkpoint

    path = _write(tmp_path, "val_subset: 10, eval_every: 2", epochs=5)
    study = load_study(path)
    summary = LocalBackend().run(study, RunOptions(cache_dir=str(tmp_path / "cache"), device="cpu"))
    assert summary.budget.used == 2
    task = _task()
    splits = task.load(task.split_config({})[2])
    trials = optuna.load_study(study_name="val-subset", storage=f"sqlite:///{tmp_path / 'hpo.db'}").get_trials()
    for t in trials:
        assert t.state.name == "COMPLETE"
        curves, metrics = t.user_attrs["curves"], t.user_attrs["metrics"]
        # intermediate values: the subset's, at the evaluated epochs only (every 2nd and the last)
        assert sorted(t.intermediate_values) == [2, 4, 5]
        assert {e: curves["val_mae"][e - 1] for e in (2, 4, 5)} == pytest.approx(t.intermediate_values)
        assert curves["val_samples"] == [None, 10, None, 10, 10]
        # the objective: the best epoch's weights (the checkpoint) on the whole split
        ckpt = load_checkpoint(tmp_path / "art" / t.user_attrs["checkpoint"])
        train_cfg, model_cfg, _ = task.split_config(ckpt["config"])
        model = task.build_model(model_cfg, splits)
        model.load_state_dict(ckpt["model_state"])
        whole = evaluate(task, model, splits, "val", train_cfg.batch_size, device="cpu")["val_mae"]
        assert t.value == pytest.approx(whole, rel=1e-6) == metrics["val_mae"]
        assert metrics["val_subset_mae"] == pytest.approx(t.intermediate_values[t.user_attrs["best_epoch"]])
        assert metrics["val_samples"] == N_VAL and metrics["val_subset_samples"] == 10
        assert t.value != pytest.approx(metrics["val_subset_mae"], rel=1e-4)


@pytest.mark.parametrize("training, key, words", [
    ("val_subset: 0", "val_subset", "a count (int >= 1) or a fraction (0 < float <= 1), but got 0"),
    ("val_subset: -5", "val_subset", "but got -5"),
    ("val_subset: 0.0", "val_subset", "but got 0.0"),
    ("val_subset: 1.5", "val_subset", "(give a count as an integer), but got 1.5"),
    ("val_subset: .nan", "val_subset", "but got nan"),
    ("val_subset: ten", "val_subset", "must be a valid integer or a valid number, but got 'ten'"),
    ("val_subset: true", "val_subset", "must be a valid integer or a valid number, but got true"),
    ("eval_every: 0", "eval_every", "eval_every must be >= 1, but got 0"),
    ("eval_every: 1.5", "eval_every", "must be a valid integer, but got 1.5"),
])
def test_bad_values_are_refused_before_any_trial(tmp_path, training, key, words):
    path = _write(tmp_path, training)
    r = hpo_cli("validate", path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = next((l for l in r.stderr.splitlines() if f"training.{key}:" in l), "")
    assert line.startswith(f"error: {path}: training.{key}: ") and words in line, r.stderr


def test_hpo_run_refuses_a_bad_val_subset_and_stores_nothing(tmp_path):
    r = hpo_cli("run", _write(tmp_path, "val_subset: 0"), "--device", "cpu")
    assert r.returncode == 2 and "training.val_subset: " in r.stderr, r.stderr
    assert stored_studies(tmp_path / "hpo.db") == []


def test_a_count_larger_than_the_val_split_is_refused_before_any_trial(tmp_path):
    path = _write(tmp_path, f"val_subset: {N_VAL + 1}")
    r = hpo_cli("validate", path)
    assert r.returncode == 2
    assert f"training.val_subset: val_subset must be <= the val split's size ({N_VAL} samples), but got {N_VAL + 1}" in r.stderr


def test_validation_is_a_small_share_of_an_epoch_with_a_subset():
    """Measured: with 2% of a 1,500-sample val split, an epoch's validation costs a fraction of a whole-split
    pass (wide margins: the machine may be loaded)."""
    task = _task(n=10_000)  # 7,000 train / 1,500 val
    result, _, _ = _fit(task, {"val_subset": 0.02, "epochs": 2, "batch_size": 32})
    per_epoch = float(np.mean(result.curves["val_seconds"]))
    whole = result.final_val_seconds  # the one whole-split pass at the end
    assert 0 < per_epoch < 0.5 * whole, (per_epoch, whole)
    train = float(np.mean(result.curves["epoch_seconds"])) - per_epoch
    share_subset, share_whole = per_epoch / (train + per_epoch), whole / (train + whole)
    assert share_subset < 0.5 * share_whole, (share_subset, share_whole)


@pytest.mark.parametrize("name", __import__("hpo.tasks", fromlist=["x"]).available_task_names())
def test_every_task_validates_on_a_subset(name, tmp_path):
    """Every family's val split can be cut (``take``): its loader runs on the subset, the result on the whole."""
    from tests.contract.test_tasks import SYNTHETIC, TARGETS, tiny

    train, model_cfg, data_cfg = tiny(name)
    cls = get_task(name)
    settings = {**SYNTHETIC.get(name, {"format": "synthetic"}), **({"n_samples": 40} if name == "crystal_text" else {})}
    task = cls(cls.DatasetSpec.model_validate(settings), TARGETS.get(name), DataCache(tmp_path / "cache"))
    splits = task.load(data_cfg)
    n_val = splits.size("val")
    assert n_val >= 2, f"{name}: the synthetic val split is too small to cut ({n_val})"
    k = n_val // 2
    result = fit(task, splits, dataclasses.replace(train, val_subset=k, seed=7), model_cfg, device="cpu", max_epochs=1)
    assert result.curves["val_samples"] == [k], name
    assert result.best["val_samples"] == n_val and result.best["val_subset_samples"] == k
    assert math.isfinite(result.best["val_loss"]) and math.isfinite(result.best["val_subset_loss"])
