"""The study store survives outages and refuses broken stores (issue #13, item 6, store side).

Real components only: real SQLite files (on real read-only / full file systems where mounting is
permitted), a real PostgreSQL server (tests/pg.py) stopped and started for real, real `hpo`
processes. The one injected fault is a commit whose answer is lost (a real SQLite connection whose
``commit`` commits, then reports a failure): the only way to make that moment happen on demand.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import optuna
import pytest

from hpo.store import rdb as _rdb
from hpo.store.rdb import ResilientRDBStorage
from hpo.errors import StoreError
from tests.conftest import ROOT, fault_study, hpo_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
OPTUNA_STORAGES = Path(optuna.__file__).parent / "storages"

#: backend methods that never touch the database (they return settings)
NO_DB = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}


# ----------------------------------------------------------------------------- which calls are covered
def _calls_on(tree: ast.AST, receivers: set[str]) -> set[str]:
    """Names of methods called as ``<receiver>.NAME(...)`` (``self._backend`` counts as ``_backend``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if name in receivers:
                found.add(node.func.attr)
    return found


def backend_calls_in_optuna() -> dict[str, set[str]]:
    """Every method Optuna's cache layer calls on its RDB backend, and every storage method its
    heartbeat thread, ``fail_stale_trials`` and ``RetryHeartbeatStaleTrialCallback`` call."""
    cached = ast.parse((OPTUNA_STORAGES / "_cached_storage.py").read_text())
    heartbeat = ast.parse((OPTUNA_STORAGES / "_heartbeat.py").read_text())
    callbacks = ast.parse((OPTUNA_STORAGES / "_callbacks.py").read_text())
    return {
        "_CachedStorage -> backend": _calls_on(cached, {"_backend"}),
        "heartbeat thread / fail_stale_trials": _calls_on(heartbeat, {"storage", "heartbeat"}),
        # the retry callback adds the re-queued trial with study.add_trial -> create_new_trial
        "RetryHeartbeatStaleTrialCallback": {"create_new_trial"} if _calls_on(callbacks, {"study"}) >= {"add_trial"} else set(),
    }


def test_every_backend_call_of_optunas_cache_and_heartbeat_layers_is_retried(report_figures):
    """Parse the installed Optuna: each method its cache layer, heartbeat thread, stale-trial check and
    retry callback call on the storage must survive a lost connection. A new Optuna that calls a new
    backend method fails here until it is covered."""
    by_layer = backend_calls_in_optuna()
    names = set().union(*by_layer.values())
    # the parse found the calls that matter (a refactored Optuna must not make this test vacuous)
    assert {"_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id", "set_trial_state_values",
            "record_heartbeat", "_get_stale_trial_ids", "get_trial"} <= names, names
    assert len(by_layer["_CachedStorage -> backend"]) >= 20
    for name in NO_DB & names:  # settings only: if one starts to use the database, it must be retried
        src = inspect.getsource(getattr(optuna.storages.RDBStorage, name))
        assert "session" not in src and "engine" not in src, f"{name} now touches the database: retry it"
    missing = sorted(n for n in names - NO_DB if not _rdb.retried(n))
    assert not missing, f"backend methods Optuna calls that are not retried on a lost connection: {missing}"
    report_figures("store: Optuna backend calls covered by the retry", {"methods": len(names - NO_DB), "not covered": len(missing)})


class _Recording(ResilientRDBStorage):
    """Records each storage method called from outside the storage itself (Optuna's layers, hpo)."""

    calls: set[str]

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if callable(value) and not name.startswith("__") and hasattr(optuna.storages.RDBStorage, name):
            caller = sys._getframe(1).f_code.co_filename
            ours = tuple(os.path.join("hpo", "store", "rdb", f) for f in ("storage.py", "checked.py", "fast.py"))
            if not caller.endswith((*ours, os.path.join("hpo", "store", "retry.py"), os.path.join("_rdb", "storage.py"))):  # ours, optuna's
                object.__getattribute__(self, "calls").add(name)
        return value


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_real_study_calls_only_retried_backend_methods(tmp_path):
    """A real small study over a real SQLite file, with heartbeats, a stale trial failed and re-queued
    by Optuna's retry callback, an enqueued trial and a best-trial lookup: every backend method that
    was called is retried."""
    import warnings

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    storage = _Recording.__new__(_Recording)
    storage.calls = set()
    storage.__init__(f"sqlite:///{tmp_path / 'rec.db'}", heartbeat_interval=1, grace_period=1,
                     heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    study = optuna.create_study(study_name="rec", storage=storage)
    study.enqueue_trial({"x": 0.5})
    stale = study.ask()  # a trial whose worker "died": it has a heartbeat, then none
    storage.record_heartbeat(stale._trial_id)
    time.sleep(2.2)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2 + (t.report(0.1, 0) or 0), n_trials=3)
    assert study.best_trial is not None
    states = [t.state.name for t in study.get_trials()]
    assert states.count("FAIL") == 1 and "WAITING" not in states  # the stale one was failed and re-run
    assert storage.calls, "nothing recorded"
    not_retried = sorted(n for n in storage.calls - NO_DB if not _rdb.retried(n))
    assert not not_retried, f"called without retry: {not_retried}"
    assert {"_create_new_trial", "_get_trials", "record_heartbeat", "_get_stale_trial_ids"} <= storage.calls


# ----------------------------------------------------------------------------- a commit whose answer is lost
class _LoseCommitAnswer(sqlite3.Connection):
    """A real SQLite connection; while ``armed`` > 0, a commit of a write is carried out and then
    reported as failed, as when the connection drops after the server committed but before it answered."""

    armed = 0
    #: instead, the next commit is not carried out: it is rolled back, this runs (another worker's
    #: write during the outage), and the commit is reported as failed
    meanwhile = None

    def commit(self):
        if not self.in_transaction:  # nothing written (a read's commit): not the moment
            return super().commit()
        if _LoseCommitAnswer.meanwhile is not None:
            hook, _LoseCommitAnswer.meanwhile = _LoseCommitAnswer.meanwhile, None
            self.rollback()
            hook()
            raise sqlite3.OperationalError("database is locked")
        super().commit()
        if _LoseCommitAnswer.armed > 0:
            _LoseCommitAnswer.armed -= 1
            raise sqlite3.OperationalError("database is locked")  # an outage kind of error: retried


def _tokens_left(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as c:
        return c.execute("SELECT count(*) FROM trial_system_attributes WHERE substr(key, 1, 5) = '_hpo_'").fetchone()[0]


def _faulty_storage(path: Path, cls=ResilientRDBStorage, **kwargs):
    def creator():
        conn = sqlite3.connect(str(path), timeout=5, check_same_thread=False, factory=_LoseCommitAnswer)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    return cls(f"sqlite:///{path}", engine_kwargs={"creator": creator}, **kwargs)


@pytest.fixture
def lose_commit_answer():
    _LoseCommitAnswer.armed, _LoseCommitAnswer.meanwhile = 0, None
    yield _LoseCommitAnswer
    _LoseCommitAnswer.armed, _LoseCommitAnswer.meanwhile = 0, None


def test_a_retried_trial_creation_whose_first_commit_landed_makes_one_trial(tmp_path, lose_commit_answer, caplog):
    # control: Optuna's own storage, under the same fault, creates the trial twice
    plain = optuna.create_study(study_name="plain", storage=_faulty_storage(tmp_path / "plain.db", optuna.storages.RDBStorage))
    lose_commit_answer.armed = 1
    plain.ask()
    assert len(plain.get_trials()) == 2, "the injected fault did not happen"

    study = optuna.create_study(study_name="s", storage=_faulty_storage(tmp_path / "s.db"))
    lose_commit_answer.armed = 1
    with caplog.at_level(logging.WARNING, logger="hpo.store.storage"):
        trial = study.ask()
    assert lose_commit_answer.armed == 0  # the fault was consumed by the creation
    trials = study.get_trials()
    assert [t.number for t in trials] == [0] and trials[0]._trial_id == trial._trial_id
    assert "not creating another" in caplog.text
    assert not any(k.startswith("_hpo_") for k in trials[0].system_attrs)  # bookkeeping is hidden
    assert _tokens_left(tmp_path / "s.db") == 1  # the creation token waits for the trial's final state write
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 1.0)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]
    assert _tokens_left(tmp_path / "s.db") == 0  # and goes with it, in the same transaction


def test_a_trial_created_finished_keeps_no_token(tmp_path):
    """A trial added finished (a warm start's told trial) gets no state write later: its token goes at once."""
    study = optuna.create_study(study_name="s", storage=_faulty_storage(tmp_path / "s.db"))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                              value=1.0))
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]
    assert _tokens_left(tmp_path / "s.db") == 0


def test_a_retried_claim_of_a_waiting_trial_whose_commit_landed_runs_that_trial(tmp_path, lose_commit_answer):
    """Claiming an enqueued trial (WAITING -> RUNNING) committed, then the answer was lost: the retry
    knows the claim is its own (before: it returned False, the claimed trial stayed RUNNING with
    nobody running it, and a second trial was created)."""
    study = optuna.create_study(study_name="s", storage=_faulty_storage(tmp_path / "s.db"))
    study.enqueue_trial({"x": 0.25})
    lose_commit_answer.armed = 1
    trial = study.ask()
    assert lose_commit_answer.armed == 0
    assert trial.suggest_float("x", 0, 1) == 0.25  # the enqueued one
    assert [(t.number, t.state.name) for t in study.get_trials()] == [(0, "RUNNING")]
    assert _tokens_left(tmp_path / "s.db") == 2  # creation and claim: both go with the final state write
    lose_commit_answer.armed = 1  # and finishing it: counted once, as done
    study.tell(trial, 0.5)
    assert [(t.state.name, t.value) for t in study.get_trials()] == [("COMPLETE", 0.5)]
    assert _tokens_left(tmp_path / "s.db") == 0


def test_a_retried_finish_of_a_trial_failed_by_another_worker_meanwhile_is_refused(tmp_path, lose_commit_answer):
    """The connection drops before the result is committed; meanwhile another worker fails the trial
    (its stale-trial check): the retry must report that (before: it counted as recorded)."""
    study = optuna.create_study(study_name="s", storage=_faulty_storage(tmp_path / "s.db"))
    trial = study.ask()
    other = ResilientRDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    lose_commit_answer.meanwhile = lambda: other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE, [1.0])
    assert lose_commit_answer.meanwhile is None  # the other worker did fail it during the outage
    assert [(t.state.name, t.values) for t in study.get_trials()] == [("FAIL", None)]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_no_trial_is_stale_within_the_grace_period_after_the_store_came_back(tmp_path, lose_commit_answer):
    """While the store is away nobody can write heartbeats: the stale check waits a grace period
    from when this process saw the store come back (before: the first worker back failed every
    other worker's running trial)."""
    import warnings

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    storage = _faulty_storage(tmp_path / "s.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.2)  # SQLite's clock has whole seconds
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]  # stale by its heartbeat
    lose_commit_answer.armed = 1
    storage.set_trial_user_attr(trial._trial_id, "k", 1)  # an operation that lost the store and retried
    assert lose_commit_answer.armed == 0
    assert storage._get_stale_trial_ids(study._study_id) == []  # the store just came back
    time.sleep(2.2)
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]


# ----------------------------------------------------------------------------- broken SQLite stores
def _study(tmp_path: Path, name: str, storage: str, n: int = 2, epochs: int = 2, samples: int = 64, grace: int = 6) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(fault_study(name=name, n=n, epochs=epochs, n_samples=samples, storage=storage,
                             artifacts=tmp_path / "artifacts", grace=grace))
    return p


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    """A real store with a finished 2-trial study in it."""
    d = tmp_path_factory.mktemp("store")
    path = _study(d, "done", f"sqlite:///{d / 'hpo.db'}")
    r = hpo_cli("run", path, "--threads", "1", cwd=d, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with sqlite3.connect(d / "hpo.db") as c:  # one file, no -wal to copy along
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return d / "hpo.db"


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"mounting is not permitted here ({r.stderr.strip() or r.returncode}): needs root in a container that may mount")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # still in use: detach it now


def _fill(directory: Path) -> None:
    """Fill the file system of ``directory`` up to its last page."""
    try:
        with open(directory / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _errors(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


CASES = ("random bytes", "truncated store", "another program's database", "older schema", "read-only file",
         "read-only file system", "full file system")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_broken_sqlite_store_fails_at_once_with_one_line_and_is_left_untouched(case, tmp_path, real_store, report_figures):
    work = tmp_path / "work"
    work.mkdir()
    mounted = None
    try:
        if case == "random bytes":
            db = tmp_path / "store.db"
            db.write_bytes(random.Random(0).randbytes(64 * 1024))
        elif case == "truncated store":
            db = tmp_path / "store.db"
            db.write_bytes(real_store.read_bytes()[: real_store.stat().st_size // 3])
        elif case == "another program's database":  # Optuna would add its tables to it
            db = tmp_path / "store.db"
            with contextlib.closing(sqlite3.connect(db)) as c:
                c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
                c.execute("INSERT INTO users (name) VALUES ('ada')")
                c.commit()
        elif case == "older schema":  # made by an Optuna whose schema this one does not read
            db = tmp_path / "store.db"
            shutil.copy(real_store, db)
            with contextlib.closing(sqlite3.connect(db)) as c:
                c.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")
                c.execute("PRAGMA journal_mode=DELETE")
                c.commit()
        elif case == "read-only file":  # a read-only bind mount of the file (chmod does not stop root)
            db = tmp_path / "store.db"
            shutil.copy(real_store, db)
            _mount("--bind", str(db), str(db))
            mounted = db
            _mount("-o", "remount,ro,bind", str(db))
        else:
            mounted = tmp_path / "fs"
            mounted.mkdir()
            _mount("-t", "tmpfs", "-o", f"size={real_store.stat().st_size + 256 * 1024}", "tmpfs", str(mounted))
            db = mounted / "store.db"
            shutil.copy(real_store, db)
            if case == "read-only file system":
                _mount("-o", "remount,ro", str(mounted))
            else:
                _fill(mounted)
        url = f"sqlite:///{db}"
        before = _sha(db)
        study = _study(work, "again", url, n=3)
        results = {}
        for cmd in (("run", study, "--threads", "1"), ("status", "--storage", url)):
            t0 = time.monotonic()
            r = hpo_cli(*cmd, cwd=work, timeout=120)
            results[cmd[0]] = (r, time.monotonic() - t0)
        assert _sha(db) == before, "the store file was changed"
    finally:
        if mounted is not None:
            _umount(mounted)
    for what, (r, seconds) in results.items():
        if case == "read-only file" and what == "status":  # reading a read-only store is fine
            assert r.returncode == 0 and "again" not in r.stdout and "done" in r.stdout, r.stderr[-2000:]
            continue
        errors = _errors(r)
        assert r.returncode == 2, (what, r.returncode, r.stderr[-3000:])
        assert len(errors) == 1 and "Traceback" not in r.stderr, (what, r.stderr[-3000:])
        assert str(db) in errors[0] and "store: must" in errors[0] and "but got" in errors[0], errors
        assert seconds < 60 and "store unreachable" not in r.stderr, (what, seconds)
    report_figures(f"store: broken SQLite store refused at once ({case})",
                   {f"{k} seconds": round(s, 1) for k, (_, s) in results.items()})


def test_a_store_path_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    r = hpo_cli("status", "--storage", "sqlite:///afile/runs/hpo.db", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and _errors(r) == [
        "error: afile/runs/hpo.db: store: must be in a folder that exists or can be created, but got 'Not a directory' for 'afile/runs'"
    ], r.stderr[-2000:]
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_study_fails_the_run_within_seconds(tmp_path, report_figures):
    fs = tmp_path / "fs"
    fs.mkdir()
    _mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(fs))
    try:
        db = fs / "hpo.db"
        study = _study(tmp_path, "filling", f"sqlite:///{db}", n=400, epochs=2)
        proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "run", str(study), "--threads", "1"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

        def complete() -> int:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
                    return c.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            except sqlite3.Error:
                return 0

        deadline = time.monotonic() + 180
        while complete() < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the disk was filled"
        _fill(fs)  # the disk fills up
        full_at = time.monotonic()
        out, err = proc.communicate(timeout=120)
        seconds = time.monotonic() - full_at
    finally:
        if "proc" in locals() and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        _umount(fs)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err[-3000:]
    assert len(errors) == 1 and "Traceback" not in err and "disk" in errors[0] and str(db) in errors[0], err[-3000:]
    assert "store unreachable" not in err
    assert seconds < 30
    report_figures("store: disk full mid-study", {"seconds to fail after the disk filled": round(seconds, 1)})


# ----------------------------------------------------------------------------- concurrent first runs
OPEN_AT_ONCE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import optuna
    from hpo.store.storage import open_storage
    url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    storage = open_storage(url, heartbeat=False)
    optuna.create_study(study_name="first", storage=storage, load_if_exists=True)
    print("ok")
""")


def _open_at_once(url: str, n: int, barrier: Path, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """n processes import everything, wait for the same moment, then open the fresh store at once."""
    barrier.mkdir()
    go = barrier / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, url, str(barrier / f"ready{i}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
             for i in range(n)]
    deadline = time.monotonic() + 240
    while len(list(barrier.glob("ready*"))) < n and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    go.touch()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


def _check_one_schema(results, rows) -> None:
    failed = [r.stderr.strip().splitlines()[-1:] for r in results if r.returncode or r.stdout.strip() != "ok"]
    assert not failed, f"{len(failed)} of {len(results)} first runs failed: {failed}"
    assert rows("SELECT count(*) FROM alembic_version") == 1
    assert rows("SELECT count(*) FROM version_info") == 1
    assert rows("SELECT count(*) FROM studies") == 1


@pytest.mark.slow
def test_concurrent_first_runs_on_a_fresh_sqlite_store_all_succeed(tmp_path, report_figures):
    db = tmp_path / "fresh.db"
    results = _open_at_once(f"sqlite:///{db}", 10, tmp_path / "barrier")

    def rows(sql):
        with sqlite3.connect(db) as c:
            return c.execute(sql).fetchone()[0]

    _check_one_schema(results, rows)
    report_figures("store: concurrent first runs (SQLite)", {"processes": len(results), "succeeded": len(results)})


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_first_runs_on_a_fresh_postgres_store_all_succeed(postgres, tmp_path, report_figures):
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name)
    results = _open_at_once(url, 8, tmp_path / "barrier", postgres.env())
    _check_one_schema(results, lambda sql: int(postgres.psql(sql, database=name)))
    report_figures("store: concurrent first runs (PostgreSQL)", {"processes": len(results), "succeeded": len(results)})


# ----------------------------------------------------------------------------- PostgreSQL outages
def _worker(path: Path, cwd: Path, log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", "worker", str(path), "--threads", "1"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _trials(url: str, name: str, env: dict):
    os.environ.update(env)
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_started_while_the_server_is_down_waits_and_then_serves(tmp_path, postgres, report_figures):
    url = postgres.create_database(f"startup_{uuid.uuid4().hex[:8]}")
    env = postgres.env()
    path = _study(tmp_path, "startup", url, n=3, epochs=3, samples=128)
    r = hpo_cli("create", path, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    log = tmp_path / "worker.log"
    postgres.stop()
    try:
        worker = _worker(path, tmp_path, log, env)
        deadline = time.monotonic() + 120
        while "store unreachable" not in log.read_text() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # a few attempts, with backoff
        assert worker.poll() is None, "the worker died while the server was down:\n" + log.read_text()[-3000:]
    finally:
        postgres.start()
    rc = worker.wait(timeout=300)
    text = log.read_text()
    waits = [line for line in text.splitlines() if "store unreachable" in line]
    assert rc == 0, text[-3000:]
    assert waits and all("retrying in" in line for line in waits), text[-3000:]
    states = [t.state.name for t in _trials(url, "startup", env)]
    assert states.count("COMPLETE") == 3 and "RUNNING" not in states, states
    report_figures("store: worker started with the server down", {"wait lines": len(waits), "trials complete": states.count("COMPLETE")})


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restarted_five_times_at_random_moments_loses_nothing(tmp_path, postgres, report_figures):
    """Three `hpo worker` processes; the server is stopped and started five times at seeded random
    moments, down for 1-7 s (longer than the grace period, sometimes): every worker exits 0, exactly N
    trials COMPLETE, none RUNNING or FAIL, every record whole."""
    url = postgres.create_database(f"restarts_{uuid.uuid4().hex[:8]}")
    env = postgres.env()
    n, restarts = 30, 5  # the five seeded restarts take ~35 s: the study must outlast them on an idle machine too
    path = _study(tmp_path, "restarts", url, n=n, epochs=40, samples=512, grace=4)
    r = hpo_cli("create", path, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [_worker(path, tmp_path, log, env) for log in logs]
    rng = random.Random(13)
    moments = []
    try:
        while len(moments) < restarts and any(w.poll() is None for w in workers):
            time.sleep(rng.uniform(1.0, 5.0))
            try:
                running = sum(t.state.name == "RUNNING" for t in _trials(url, "restarts", env))
            except Exception:  # the study is not there yet, or the server is slow to answer
                running = -1
            down = rng.uniform(1.0, 7.0)
            postgres.stop()
            time.sleep(down)
            postgres.start()
            moments.append({"running at stop": running, "down s": round(down, 1)})
    finally:
        if not postgres.running:
            postgres.start()
    codes = [w.wait(timeout=600) for w in workers]
    texts = [log.read_text() for log in logs]
    trials = _trials(url, "restarts", env)
    states = [t.state.name for t in trials]
    figures = {"restarts survived": len(moments), "mid-trial": sum(m["running at stop"] > 0 for m in moments),
               "between trials": sum(m["running at stop"] == 0 for m in moments),
               "trials complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
               "running left": states.count("RUNNING"), "workers exit 0": codes.count(0),
               "retry lines": sum(t.count("store unreachable") for t in texts)}
    report_figures("store: PostgreSQL restarted at random moments (3 workers)", figures)
    assert len(moments) == restarts, f"the study ended after {len(moments)} restarts: make it longer"
    for code, text in zip(codes, texts):
        assert code == 0, text[-4000:]
    assert states.count("COMPLETE") == n and states.count("RUNNING") == 0 and states.count("FAIL") == 0, \
        [(t.number, t.state.name, t.user_attrs.get("stop_detail")) for t in trials]
    for t in trials:  # every record whole
        assert t.user_attrs["config"] and t.user_attrs["curves"]["val_mae"] and t.user_attrs["metrics"], t.number
        assert t.values and t.params
    assert figures["retry lines"] > 0  # the workers did lose the server, and waited


@pytest.mark.postgres
def test_a_refused_postgres_login_fails_at_once(postgres, tmp_path):
    """A wrong password is not an outage: one line, exit 2, in seconds (not 5 minutes of retries)."""
    t0 = time.monotonic()
    r = hpo_cli("status", "--storage", postgres.url, cwd=tmp_path, env={"PGPASSWORD": "wrong"}, timeout=120)
    assert r.returncode == 2 and len(_errors(r)) == 1 and "must accept the login" in r.stderr, r.stderr[-2000:]
    assert "wrong" not in r.stderr and time.monotonic() - t0 < 30


def test_store_unreachable_past_the_reconnect_timeout_is_one_clear_error(tmp_path):
    """A server that never comes back: the worker gives up after the reconnect timeout with one line."""
    from tests.conftest import free_port

    url = f"postgresql+psycopg://hpo@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    pytest.importorskip("psycopg")
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=r"store: must be reachable, but got no connection for 2s at start-up"):
        ResilientRDBStorage(url, reconnect_timeout=2.0)
    assert 2.0 <= time.monotonic() - t0 < 15
