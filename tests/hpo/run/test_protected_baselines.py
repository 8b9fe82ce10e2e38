"""Protected baselines end to end on the toy family (real SQLite, the local backend): with
``protect_baselines`` (the default) neither the pruner nor a gate stops a baseline — it trains to its own
epochs, reports its intermediate values and records in ``gate_waived`` what would have stopped it; with
``protect_baselines: false`` the same baseline is stopped like any trial."""

from __future__ import annotations

import optuna
import pytest

from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.store import record as R
from hpo.store.storage import open_storage

pytestmark = pytest.mark.slow

PRUNE_ALL = "pruner: {type: threshold, upper: 0.0}"  # every val_mae is above 0: every epoch is pruned


def run(toy_study, tmp_path, extra: str = "", n_trials: int = 4, pruner: str = PRUNE_ALL) -> dict:
    """Run the toy study (baselines current and single_modality, 6 epochs); its trials by baseline name
    (None: the last sampled one)."""
    path = toy_study(n_trials=n_trials, extra=extra)
    path.write_text(path.read_text().replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}", pruner))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    storage = open_storage(study.storage_url(), heartbeat=False)
    return {t.user_attrs.get(R.BASELINE): t for t in optuna.load_study(study_name=study.name, storage=storage).get_trials()}


def test_the_pruner_never_stops_a_protected_baseline(toy_study, tmp_path):
    trials = run(toy_study, tmp_path)
    for name in ("current", "single_modality"):
        t = trials[name]
        assert t.state.name == "COMPLETE" and t.user_attrs[R.STOP_REASON] == "completed"
        assert t.user_attrs[R.EPOCHS_RUN] == 6
        assert sorted(t.intermediate_values) == [1, 2, 3, 4, 5, 6]  # still reported every epoch
        waived = t.user_attrs[R.GATE_WAIVED]
        assert len(waived) == 1 and waived[0].startswith("pruned at epoch 1: val_mae=")  # the first verdict only
    sampled = trials[None]
    assert sampled.state.name == "PRUNED" and sampled.user_attrs[R.STOP_REASON] == "pruned"
    assert sampled.user_attrs[R.EPOCHS_RUN] == 1 and R.GATE_WAIVED not in sampled.user_attrs


def test_a_gate_never_stops_a_protected_baseline(toy_study, tmp_path):
    gates = 'gates: [{name: quick_test, epoch: 2, continue_if: "val_mae < 0"}, {name: revert, epoch: 3, stop_if: "val_mae > 0"}]\n'
    trials = run(toy_study, tmp_path, extra=gates, n_trials=3, pruner="pruner: {type: none}")
    current = trials["current"]
    assert current.state.name == "COMPLETE" and current.user_attrs[R.EPOCHS_RUN] == 6
    waived = current.user_attrs[R.GATE_WAIVED]
    assert len(waived) == 2  # one sentence per gate
    assert waived[0].startswith("gate quick_test at epoch 2: continue_if val_mae < 0 failed (val_mae=")
    assert waived[1].startswith("gate revert at epoch 3: stop_if val_mae > 0 held (val_mae=")
    sampled = trials[None]
    assert sampled.state.name == "PRUNED" and sampled.user_attrs[R.STOP_REASON] == "gate"
    assert sampled.user_attrs[R.EPOCHS_RUN] == 2


def test_without_protection_the_same_baseline_is_pruned(toy_study, tmp_path):
    trials = run(toy_study, tmp_path, extra="protect_baselines: false\n", n_trials=3)
    for name in ("current", "single_modality"):
        t = trials[name]
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "pruned"
        assert t.user_attrs[R.EPOCHS_RUN] == 1 and R.GATE_WAIVED not in t.user_attrs

