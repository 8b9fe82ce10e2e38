"""What one trial of the worker loop writes, transaction by transaction (real SQLite, the toy family): the
creation with its first heartbeat, the parameters with the worker and config attrs, the last intermediate
values with everything the trial produced, and the final state. Four transactions for a short trial (stock
Optuna's ``optimize`` makes one per parameter, one per intermediate value, plus creation and state): each
fold is asserted, so a write moved back into a transaction of its own fails here."""

from __future__ import annotations

from collections import defaultdict

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.store import record as R
from hpo.store.storage import open_storage

SPACE = """
params:
  lr: {type: float, low: 1e-3, high: 3e-2, log: true}
  hidden: [8, 16]
"""


class Writes:
    """The write statements of every engine in this process, grouped by the transaction that committed them:
    a list of transactions, each ``[(table, verb, parameters), ...]``."""

    def __init__(self) -> None:
        self.open: dict[int, list] = defaultdict(list)
        self.done: list[list] = []

    def statement(self, conn, cursor, sql, params, context, executemany):
        verb = sql.lstrip().split(None, 1)[0].upper()
        if verb in ("INSERT", "UPDATE", "DELETE"):
            words = sql.replace('"', " ").split()
            table = words[words.index("INTO") + 1] if verb == "INSERT" else words[1] if verb == "UPDATE" else words[2]
            self.open[id(conn.connection.dbapi_connection)].append((table, verb, params))

    def commit(self, conn):
        txn = self.open.pop(id(conn.connection.dbapi_connection), [])
        if txn:
            self.done.append(txn)


@pytest.fixture
def writes():
    w = Writes()
    event.listen(Engine, "before_cursor_execute", w.statement)
    event.listen(Engine, "commit", w.commit)
    yield w
    event.remove(Engine, "before_cursor_execute", w.statement)
    event.remove(Engine, "commit", w.commit)


def keys_written(txn, table: str) -> set[str]:
    """The user-attr keys an INSERT into ``table`` wrote (whatever the parameter style)."""
    keys: set[str] = set()
    for t, verb, params in txn:
        if t != table:
            continue
        rows = params if isinstance(params, (list, tuple)) and params and isinstance(params[0], (list, tuple, dict)) else [params]
        for row in rows:
            values = row.values() if isinstance(row, dict) else row
            keys |= {v for v in values if isinstance(v, str) and not v.startswith(("{", "[", '"'))}
    return keys


@pytest.mark.parametrize("pruner", ["{type: none}", "{type: median, n_startup_trials: 1, n_warmup_steps: 1}"])
def test_a_trial_is_four_transactions_with_its_attrs_folded_into_them(toy_study, tmp_path, writes, pruner):
    path = toy_study(n_trials=3, space=SPACE, extra="fault_tolerance: {heartbeat_interval: 60}\n")
    path.write_text(path.read_text().replace("pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}",
                                             f"pruner: {pruner}").replace("epochs: 6,", "epochs: 3,"))
    study = load_study(path)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    trials = optuna.load_study(study_name=study.name, storage=open_storage(study.storage_url(), heartbeat=False)).trials
    assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert all(t.intermediate_values and t.user_attrs[R.CURVES] and t.user_attrs[R.STOP_REASON] for t in trials)

    trial_txns = [txn for txn in writes.done if any(t in ("trials", "trial_params", "trial_user_attributes",
                                                          "trial_intermediate_values", "trial_heartbeats", "trial_values")
                                                    for t, _, _ in txn)]
    created = [txn for txn in trial_txns if any(t == "trials" and v == "INSERT" for t, v, _ in txn)]
    assert len(created) == 3 and all(any(t == "trial_heartbeats" for t, _, _ in txn) for txn in created)  # beat at birth
    alone = [txn for txn in trial_txns if {t for t, _, _ in txn} <= {"trial_heartbeats"}]
    assert alone == []  # no heartbeat transaction of its own for a short trial
    params = [txn for txn in trial_txns if any(t == "trial_params" for t, _, _ in txn)]
    assert len(params) == 3  # every parameter of a trial in one transaction...
    for txn in params:  # ...with the worker and the config
        assert {R.WORKER, R.CONFIG, R.SAMPLER_SEED} <= keys_written(txn, "trial_user_attributes"), txn
    values = [txn for txn in trial_txns if any(t == "trial_intermediate_values" for t, _, _ in txn)]
    if pruner == "{type: none}":  # no pruner asks per epoch: all the values at the end, with the trial's results
        assert len(values) == 3
        for txn in values:
            assert {R.CURVES, R.METRICS, R.BEST_EPOCH, R.STOP_REASON} <= keys_written(txn, "trial_user_attributes"), txn
    user_attrs_alone = [txn for txn in trial_txns if {t for t, _, _ in txn} == {"trial_user_attributes"}]
    assert user_attrs_alone == []  # every user attr rode along with another write
    finished = [txn for txn in trial_txns if any(t == "trial_values" for t, _, _ in txn)]
    assert len(finished) == 3
    if pruner == "{type: none}":
        assert len(trial_txns) == 4 * 3, [[t for t, _, _ in txn] for txn in trial_txns]
