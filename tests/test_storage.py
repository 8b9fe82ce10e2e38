"""One contract, every storage: SQLite (the default), Optuna's journal file, and PostgreSQL."""

import os
import sqlite3

import optuna
import pytest
import torch

from hpo.errors import UsageError
from hpo.run.budget import budget_of
from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.store.storage import open_storage
from hpo.store.rdb.checked import CREATE_TOKEN, without_tokens
from hpo.spec.urls import check_url, redact

STUDY = """
name: contract
task: {{family: toy, dataset: {{n_samples: 96}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
    hidden: [8, 16]
  baselines:
    b: {{lr: 5.0e-3, hidden: 8}}
objectives: [val_mae]
sampler: {{type: tpe, seed: 0, n_startup_trials: 2}}
pruner: {{type: median, n_startup_trials: 1}}
budget: {{n_trials: {n}}}
training: {{epochs: 3}}
storage: {url}
artifacts: {artifacts}
"""


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'c.log'}"
    pg = request.getfixturevalue("postgres")
    os.environ.update(pg.env())
    # a fresh database per test keeps studies apart
    name = f"c{abs(hash(str(tmp_path))) % 10**8}"
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=hpo dbname=postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def test_run_resume_export_contract(storage_url, tmp_path):
    def study(n):
        p = tmp_path / "s.yaml"
        p.write_text(STUDY.format(n=n, url=storage_url, artifacts=tmp_path / "art"))
        return load_study(p)

    run_study(study(3), RunOptions(cache_dir=str(tmp_path / "cache")))
    run_study(study(4), RunOptions(cache_dir=str(tmp_path / "cache")))  # resume to a larger budget
    st = optuna.load_study(study_name="contract", storage=open_storage(storage_url, heartbeat=False))
    trials = st.get_trials()
    assert budget_of(trials).used == 4 and len(trials) == 4
    assert [t.user_attrs.get("baseline") for t in trials].count("b") == 1
    assert all(t.user_attrs["curves"]["val_mae"] for t in trials)
    assert st.user_attrs["fusion_hpo"]["spec"]["name"] == "contract"
    from hpo.analysis.export import exported, select_trials

    doc = exported(st, select_trials(st)[0], storage_url)
    assert doc["config"]["epochs"] == 3 and doc["task"]["family"] == "toy"


def test_sqlite_is_configured_for_concurrent_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    st = open_storage(url)
    optuna.create_study(storage=st, study_name="x")
    with sqlite3.connect(tmp_path / "w.db") as c:
        assert c.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn = st.engine.raw_connection()
    try:
        cur = conn.cursor()
        assert cur.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL: no fsync per transaction
        assert cur.execute("pragma busy_timeout").fetchone()[0] >= 30000
    finally:
        conn.close()


def test_urls_with_passwords_are_refused_and_redacted():
    with pytest.raises(UsageError, match="PGPASSWORD"):
        check_url("postgresql+psycopg://hpo:hunter2@db/hpo")
    assert "hunter2" not in redact("postgresql+psycopg://hpo:hunter2@db/hpo")
    with pytest.raises(UsageError, match="must look like"):
        check_url("runs/hpo.db")


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_password_comes_from_the_environment(postgres, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(Exception, match="password"):
        optuna.create_study(storage=open_storage(postgres.url), study_name="nopw")
    monkeypatch.setenv("HPO_TEST_DB_PW", postgres.env()["PGPASSWORD"])
    st = open_storage(postgres.url + "?password_env=HPO_TEST_DB_PW")
    optuna.create_study(storage=st, study_name="pw_from_env", load_if_exists=True)
    assert "pw_from_env" in [s.study_name for s in optuna.get_all_study_summaries(st)]


@pytest.mark.slow
def test_four_workers_on_sqlite_without_database_is_locked(tmp_path, report_figures):
    p = tmp_path / "s.yaml"
    p.write_text(STUDY.format(n=200, url=f"sqlite:///{tmp_path / 'four.db'}", artifacts=tmp_path / "art")
                 .replace("epochs: 3", "epochs: 1").replace("n_samples: 96", "n_samples: 32"))
    from hpo.spec import apply_sets
    from hpo.spec.yaml_io import load_yaml

    summary = run_study(load_study(p), RunOptions(workers=4, cache_dir=str(tmp_path / "cache"), checkpoints=False),
                        raw=apply_sets(load_yaml(p), [], str(p)), poll_seconds=0.5)
    st = optuna.load_study(study_name="contract", storage=open_storage(f"sqlite:///{tmp_path / 'four.db'}", heartbeat=False))
    trials = st.get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    locked = [t for t in failed if "locked" in (t.system_attrs.get("fail_reason", "") + t.user_attrs.get("stop_detail", ""))]
    report_figures("4 workers x 200 short trials on SQLite", {"trials": len(trials), "database_is_locked": len(locked),
                                                               "surplus": len(failed)})
    assert not locked
    # no failure at all: the last places of the budget are taken under the study's lock, so no worker
    # races past it (before the lock, such a worker's trial was recorded FAIL surplus)
    assert not failed, [(t.number, t.user_attrs.get("stop_detail")) for t in failed]
    assert budget_of(trials).used == 200 and summary.budget.used == 200
    trained = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len({t.user_attrs["worker"] for t in trained}) == 4  # four processes really served trials


@pytest.mark.slow
def test_more_workers_than_trials_start_together_and_train_exactly_the_budget(tmp_path, monkeypatch, report_figures):
    """Four workers (threads, each with a store connection of its own) start at once on a study of three
    trials, and each ``ask`` takes 0.3 s (the moment between a count and the trial's insert, widened): none
    has been seen by the others, so only the lock on the budget's last places keeps a fourth trial out."""
    import threading
    import time

    from hpo.run.loop import run_worker
    from hpo.run.study import create_or_load

    url = f"sqlite:///{tmp_path / 'few.db'}"
    p = tmp_path / "s.yaml"
    p.write_text(STUDY.format(n=3, url=url, artifacts=tmp_path / "art").replace("epochs: 3", "epochs: 1"))
    create_or_load(load_study(p), url, "contract")
    ask = optuna.Study.ask

    def slow_ask(self, *args, **kwargs):
        time.sleep(0.3)
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", slow_ask)
    go = threading.Barrier(4)
    why: list = []

    def work(i):
        study = load_study(p)
        go.wait()
        why.append(run_worker(study, url, "contract", n_trials=3, timeout=None, worker=i,
                              opts=RunOptions(checkpoints=False, cache_dir=str(tmp_path / f"cache{i}"))))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    st = optuna.load_study(study_name="contract", storage=open_storage(url, heartbeat=False))
    trials = st.get_trials()
    states = [t.state.name for t in trials]
    report_figures("4 workers started together on a 3-trial study (SQLite)",
                   {"trials": len(trials), "trained": budget_of(trials).used, "failed": states.count("FAIL")})
    assert why == ["budget"] * 4
    assert len(trials) == 3 and budget_of(trials).used == 3 and "FAIL" not in states, [
        (t.number, t.state.name, t.user_attrs.get("stop_detail")) for t in trials]


def test_out_of_memory_is_recorded_and_the_worker_keeps_serving(tmp_path):
    from hpo.tasks import TASKS, get_task, register_task

    Toy = get_task("toy")
    if "toy_oom" not in TASKS:

        @register_task("toy_oom")
        class OomTask(Toy):
            def build_model(self, cfg, splits):
                if cfg.hidden == 16:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
                return super().build_model(cfg, splits)

    p = tmp_path / "s.yaml"
    text = STUDY.format(n=4, url=f"sqlite:///{tmp_path / 'oom.db'}", artifacts=tmp_path / "art").replace("family: toy", "family: toy_oom")
    text = text.replace("b: {lr: 5.0e-3, hidden: 8}", "b: {lr: 5.0e-3, hidden: 16}\n    c: {lr: 5.0e-3, hidden: 8}")
    p.write_text(text)
    study = load_study(p)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    trials = optuna.load_study(study_name="contract", storage=open_storage(study.storage_url(), heartbeat=False)).get_trials()
    oom = [t for t in trials if t.user_attrs.get("stop_reason") == "out_of_memory"]
    assert oom and all(t.state.name == "FAIL" and "out of memory" in t.user_attrs["stop_detail"] for t in oom)
    assert any(t.state.name == "COMPLETE" for t in trials)  # the same worker went on serving


def test_every_store_operation_is_retried_on_lost_connections():
    from hpo.store.rdb import BATCHED, RETRIED, ResilientRDBStorage

    for name in (*RETRIED, *BATCHED):
        if hasattr(ResilientRDBStorage, name):
            assert hasattr(getattr(ResilientRDBStorage, name), "__wrapped__"), name
    for name in BATCHED:
        assert hasattr(ResilientRDBStorage, name)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def test_fast_trial_query_returns_what_optunas_query_returns(backend, tmp_path, request):
    """Our Core-SQL ``_get_trials`` and ``get_trial`` must give exactly Optuna's FrozenTrials for every
    selection the cached storage asks for (all, by state, newer than an id, plus an explicit set of older
    ids) and for each trial read alone."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
    else:
        pg = request.getfixturevalue("postgres")
        os.environ.update(pg.env())
        import psycopg

        name = f"q{abs(hash(str(tmp_path))) % 10**8}"
        with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=hpo dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        url = pg.url.rsplit("/", 1)[0] + f"/{name}"
    storage = open_storage(url, heartbeat=False)
    assert type(storage)._get_trials is not optuna.storages.RDBStorage._get_trials  # our query, not Optuna's
    assert type(storage).get_trial is not optuna.storages.RDBStorage.get_trial
    study = optuna.create_study(study_name="q", storage=storage, directions=["minimize", "maximize"])
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "n": IntDistribution(1, 8),
             "kind": CategoricalDistribution(["a", None, 2, 1.5, True])}
    for i in range(12):
        state = [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL][i % 3]
        params = {"lr": 10 ** -(1 + i % 3), "n": 1 + i % 8, "kind": ["a", None, 2, 1.5, True][i % 5]}
        values = [float("inf") if i == 3 else i * 0.5, -i * 1.0] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(
            state=state, values=values, params=params if i % 4 else {"lr": params["lr"]},
            distributions=dists if i % 4 else {"lr": dists["lr"]},
            user_attrs={"curves": {"val": [1.0, 0.5, i]}, "note": f"t{i}", "nested": {"a": [None, True]}},
            system_attrs={"fixed_params": {"n": i}} if i % 2 else {},
            intermediate_values={s: (float("nan") if s == 2 and i == 4 else float("-inf") if s == 3 else s / (i + 1))
                                 for s in range(1 + i % 4)}))
    running = study.ask()
    running.set_user_attr("worker", "w1")
    sid = storage.get_study_id_from_name("q")
    ids = [t._trial_id for t in storage.get_all_trials(sid)]
    selections = [(None, set(), -1), ((optuna.trial.TrialState.COMPLETE,), set(), -1),
                  ((optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING), set(), -1),
                  (None, set(), ids[6]), (None, {ids[1], ids[4], ids[9]}, ids[6]), (None, set(range(ids[0], ids[0] + 600)), ids[6])]

    def same(a, b):
        if a == b:
            return True
        if isinstance(a, float) and isinstance(b, float):
            return a != a and b != b  # NaN
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return False

    def read_each(states, included, greater, read):  # get_trial: one trial at a time, our path or Optuna's
        return [read(storage, tid) for tid in ids if tid in included or tid > greater]

    for states, included, greater in selections:
        ours = storage._get_trials(sid, states, included, greater)
        theirs = optuna.storages.RDBStorage._get_trials(storage, sid, states, included, greater)
        if states is None:
            ours = read_each(states, included, greater, type(storage).get_trial) + ours
            theirs = read_each(states, included, greater, optuna.storages.RDBStorage.get_trial) + theirs
        assert [t._trial_id for t in ours] == [t._trial_id for t in theirs] and ours, (states, greater)
        for b in theirs:  # a running trial keeps its creation token until its final write; readers never see it
            if b._trial_id == running._trial_id:
                assert CREATE_TOKEN in b.system_attrs, "the token this check hides is not in the store"
            without_tokens(b)
        for a, b in zip(ours, theirs):
            for field in ("number", "state", "values", "datetime_start", "datetime_complete", "params", "distributions",
                          "user_attrs", "system_attrs"):
                assert getattr(a, field) == getattr(b, field), (a.number, field)
            assert same(a.intermediate_values, b.intermediate_values), a.number
            assert list(a.params) == list(b.params)  # parameter order kept (samplers and exports rely on it)
    with pytest.raises(KeyError):  # Optuna's contract for an unknown id
        storage.get_trial(max(ids) + 100)


def test_batched_params_store_what_optuna_stores_in_one_transaction(tmp_path):
    """Parameters suggested inside ``batched_params`` reach the store when the block ends, as
    Optuna's per-suggest writes would store them; an incompatible distribution is refused as Optuna
    refuses it."""
    import sqlite3

    storage = open_storage(f"sqlite:///{tmp_path / 'p.db'}", heartbeat=False)
    study = optuna.create_study(study_name="p", storage=storage, sampler=optuna.samplers.RandomSampler(seed=3))
    plain = optuna.create_study(study_name="p0", storage=f"sqlite:///{tmp_path / 'p0.db'}", sampler=optuna.samplers.RandomSampler(seed=3))

    def suggest(t):
        return (t.suggest_float("lr", 1e-4, 1e-1, log=True), t.suggest_int("layers", 1, 4),
                t.suggest_categorical("fusion", ["gated", "concat", None]), t.suggest_categorical("layers_set", ["2,3", "1,2,3"]))

    for _ in range(2):
        ours, theirs = study.ask(), plain.ask()
        with storage.batched_params(ours._trial_id):
            assert suggest(ours)
            n = sqlite3.connect(tmp_path / "p.db").execute("SELECT COUNT(*) FROM trial_params").fetchone()[0]
            assert n == 4 * ours.number  # nothing written for this trial until the block ends
        suggest(theirs)
        study.tell(ours, 1.0)
        plain.tell(theirs, 1.0)
    a, b = study.trials[-1], plain.trials[-1]
    assert a.distributions == b.distributions and list(a.params) == list(b.params)
    assert a.params == b.params and all(type(a.params[k]) is type(b.params[k]) for k in a.params)
    bad = study.ask()
    with pytest.raises(ValueError):  # "fusion" was categorical with other choices in earlier trials
        with storage.batched_params(bad._trial_id):
            bad.suggest_categorical("fusion", ["cross_attn", "gated"])
    fresh = open_storage(f"sqlite:///{tmp_path / 'p.db'}", heartbeat=False)  # no cached distributions: checked in SQL
    bad2 = optuna.load_study(study_name="p", storage=fresh).ask()
    with pytest.raises(ValueError):
        with fresh.batched_params(bad2._trial_id):
            bad2.suggest_int("lr", 1, 3)


def test_the_optuna_version_guard_refuses_versions_the_overrides_were_not_checked_against(monkeypatch):
    """hpo/store/rdb overrides private Optuna storage code: an Optuna outside >=4.9,<6 is refused with one line."""
    from hpo.errors import HpoError
    from hpo.store.rdb import guard

    guard.check_optuna_version()  # the installed one is in the range
    for ok in ("4.9.0", "5.0.0", "5.3.1rc1", "5.99"):
        guard.check_optuna_version(ok)
    for bad in ("4.8.2", "3.6.1", "6.0.0", "6.0.0.dev0", "10.1"):
        monkeypatch.setattr(guard, "installed_optuna_version", lambda bad=bad: bad)
        with pytest.raises(HpoError, match=rf"optuna: must be >=4\.9,<6 .*but got {bad}"):
            guard.check_optuna_version()


@pytest.mark.parametrize("fast", [True, False])
def test_user_attrs_ride_along_with_the_params_and_the_last_values(tmp_path, fast):
    """User attrs given to ``batched_params`` and to the final flush reach the store with the parameters and with
    the last intermediate values; on a storage without batched writes (Optuna's own) they still reach it."""
    from hpo.run.handles import OptunaHandle
    from hpo.store import rdb

    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url, heartbeat=False) if fast else optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="a", storage=storage)
    trial = study.ask()
    with rdb.batched_params(trial) as along:
        trial.suggest_float("x", 0, 1)
        along["config"] = {"x": "sampled"}
        assert "config" not in rdb.stored_trial(study, trial).user_attrs  # not before the block ends
    stored = rdb.stored_trial(study, trial)
    assert stored.user_attrs == {"config": {"x": "sampled"}} and set(stored.params) == {"x"}
    handle = OptunaHandle(trial, prune=False)
    handle.report(0.5, 0, {})
    handle.set_final_user_attrs({"metrics": {"val": 0.5}, "stop_reason": "completed"})
    assert "metrics" not in rdb.stored_trial(study, trial).user_attrs  # written by the flush, not before
    handle.flush()
    stored = rdb.stored_trial(study, trial)
    assert stored.user_attrs["metrics"] == {"val": 0.5} and stored.user_attrs["stop_reason"] == "completed"
    assert stored.intermediate_values == {0: 0.5}
    handle.flush()  # nothing left: no write
    study.tell(trial, 0.5)
    if fast:  # a finished trial takes neither values nor attrs, and the refused write leaves nothing behind
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            rdb.backend_of(storage).set_trial_intermediate_values(trial._trial_id, {1: 0.4}, {"late": 1})
        stored = rdb.stored_trial(study, trial)
        assert "late" not in stored.user_attrs and 1 not in stored.intermediate_values
