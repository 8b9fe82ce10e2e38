"""Gates end to end on the toy family (real SQLite, the local backend): a gate stops a trial after its epoch
with stop reason ``gate`` and the rule in the stop detail, before the pruner is asked; a trial that passes a
``continue_if`` trains on."""

from __future__ import annotations

import optuna
import pytest

from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.store import record as R
from hpo.store.record import StopReason
from hpo.store.storage import open_storage

pytestmark = pytest.mark.slow

NO_BASELINES = """
params:
  lr: {type: float, low: 1e-3, high: 3e-2, log: true}
  hidden: [8, 16]
"""


def run(toy_study, tmp_path, gates: str, pruner: str = "{type: none}", n_trials: int = 3, training: str = ""):
    """Run a toy study (no baselines, 6 epochs, ``training`` keys added) with ``gates`` (YAML); its trials."""
    path = toy_study(n_trials=n_trials, space=NO_BASELINES, extra=f"gates: {gates}\n")
    text = path.read_text().replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}", f"pruner: {pruner}")
    path.write_text(text.replace("training: {epochs: 6, scheduler: cosine}", f"training: {{epochs: 6, scheduler: cosine{training}}}"))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    storage = open_storage(study.storage_url(), heartbeat=False)
    return optuna.load_study(study_name=study.name, storage=storage).get_trials()


def test_a_gate_stops_trials_at_its_epoch_with_the_rule(toy_study, tmp_path):
    trials = run(toy_study, tmp_path, '[{name: quick_test, epoch: 2, stop_if: "val_mae > 0"}]')
    assert len(trials) == 3
    for t in trials:
        assert t.state.name == "PRUNED"
        assert t.user_attrs[R.STOP_REASON] == StopReason.GATE.value
        detail = t.user_attrs[R.STOP_DETAIL]
        assert detail.startswith("gate quick_test at epoch 2: stop_if val_mae > 0 held (val_mae=")
        assert t.user_attrs[R.EPOCHS_RUN] == 2 and t.user_attrs[R.CURVES]["epoch"] == [1, 2]
        assert sorted(t.intermediate_values) == [1, 2]  # the stopping epoch's value is stored too
        assert R.GATE_WAIVED not in t.user_attrs


def test_a_failed_continue_if_stops_and_a_passing_one_trains_on(toy_study, tmp_path):
    gates = '[{name: keep, epoch: 1, continue_if: "val_mae >= 0"}, {name: cut, epoch: 3, continue_if: "val_mae < 0"}]'
    trials = run(toy_study, tmp_path, gates, n_trials=2)
    for t in trials:  # passed `keep` at epoch 1, trained on to epoch 3, where `cut` failed
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "gate"
        assert t.user_attrs[R.EPOCHS_RUN] == 3
        assert t.user_attrs[R.STOP_DETAIL].startswith("gate cut at epoch 3: continue_if val_mae < 0 failed (val_mae=")


def test_trials_that_pass_every_gate_complete(toy_study, tmp_path):
    trials = run(toy_study, tmp_path, '[{epoch: 2, continue_if: "val_mae >= 0", stop_if: "val_mae < 0"}]', n_trials=2)
    for t in trials:
        assert t.state.name == "COMPLETE" and t.user_attrs[R.STOP_REASON] == "completed"
        assert t.user_attrs[R.EPOCHS_RUN] == 6 and sorted(t.intermediate_values) == [1, 2, 3, 4, 5, 6]


def test_a_gate_is_asked_before_the_pruner(toy_study, tmp_path):
    """At the epoch where both would stop the trial, the gate's rule is its stop reason."""
    trials = run(toy_study, tmp_path, '[{name: g, epoch: 2, stop_if: "val_mae > 0"}]',
                 pruner="{type: threshold, upper: 0.0, n_warmup_steps: 2}", n_trials=2)
    for t in trials:
        assert t.state.name == "PRUNED" and t.user_attrs[R.STOP_REASON] == "gate"
        assert t.user_attrs[R.STOP_DETAIL].startswith("gate g at epoch 2:")


def test_a_gate_applies_at_the_first_evaluated_epoch_after_it(toy_study, tmp_path):
    """With val evaluated every 2 epochs, a gate at epoch 3 judges epoch 4's metrics."""
    trials = run(toy_study, tmp_path, '[{name: g, epoch: 3, stop_if: "val_mae > 0"}]', n_trials=1,
                 training=", eval_every: 2")
    (t,) = trials
    assert t.user_attrs[R.STOP_REASON] == "gate" and t.user_attrs[R.EPOCHS_RUN] == 4
