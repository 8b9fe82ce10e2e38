"""An Optuna RDBStorage that survives outages of its database and refuses broken stores at once.

**Outages.** When the server restarts (or an SQLite lock outlasts the busy timeout) an operation fails
with a lost connection; it is retried with exponential backoff (0.25 s doubling to 10 s) for up to
``reconnect_timeout`` seconds on a fresh session (``pool_pre_ping`` replaces dead pooled connections),
with one log line per attempt: ``store unreachable during NAME (...); retrying in Xs``. The
constructor (which connects, creates the tables and stamps the schema version) is retried the same
way, so a worker started while the server is down waits for it. Every backend method Optuna's cache
layer (``_CachedStorage``), its heartbeat thread, ``fail_stale_trials`` and
``RetryHeartbeatStaleTrialCallback`` call is retried (``RETRIED``; tests/test_store_faults.py
enumerates those calls from Optuna's source and fails on one that is not covered).

**Retried writes are safe.** A write whose commit reached the database but whose answer was lost
would be done twice by a blind retry. Each write is therefore either idempotent or recognised:

- parameters, user/system attrs, intermediate values and heartbeats are upserts, or inserts under a
  unique key whose duplicate is ignored: writing them twice stores them once;
- ``_create_new_trial`` (new trials, enqueued trials, re-queued stale trials) is NOT idempotent: a
  second attempt would make a second trial. Each call writes a random token as a system attr in the
  same transaction as the trial; before a retry, the trial carrying that token is looked up, and if
  the first attempt committed, that trial is returned instead of creating another. (Optuna's own
  loop, which retries the transaction up to five times without such a check, is not used.)
- ``set_trial_state_values`` to a finished state: a retry that finds the trial already finished in
  the state asked for counts as done (``UpdateFinishedTrialError`` otherwise, as before). Claiming a
  WAITING trial (-> RUNNING) writes a claim token in the same transaction; a retry that finds the
  trial RUNNING under its own token counts as claimed, so a claimed trial is never left RUNNING with
  nobody running it.

The tokens are system attrs named ``_hpo_*``, deleted once the answer came back (one more small
transaction per created or claimed trial); trials read through this class never show them.

**Stale trials after an outage.** While the store is down no worker can write heartbeats, so right
after it comes back every running trial looks stale. A stale check therefore finds nothing until a
grace period has passed since this process last saw the store come back, and (PostgreSQL) since the
server started: the grace period is measured from when the store came back.

**Broken stores fail at once.** A read-only, full, corrupt or not-a-database SQLite file, a refused
login or a missing database are not outages: :class:`hpo.errors.StoreError` is raised at once with one
line (``store: what must hold, but got ...``; exit 2), instead of retrying for minutes. So is an
outage that outlasts ``reconnect_timeout``.

**Concurrent first runs.** Two processes creating the schema of a fresh store at once race (``table
... already exists``, ``alembic_version`` duplicate key): the constructor retries such a race a few
times; the loser then finds the schema the winner made. Imported only when a storage is opened.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import random
import time
import uuid

from typing import TYPE_CHECKING, Any, Callable

import optuna
import sqlalchemy.exc as sa_exc

from hpo.errors import StoreError, show

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

logger = logging.getLogger("hpo.store.storage")

RECONNECT_TIMEOUT = 300.0  # seconds a worker keeps retrying a store that went away
SCHEMA_RACE_RETRIES = 20  # times the constructor re-runs after losing a schema-creation race
TOKEN_PREFIX = "_hpo_"  # system attrs that are this class's bookkeeping, hidden from readers
CREATE_TOKEN = TOKEN_PREFIX + "create"
CLAIM_TOKEN = TOKEN_PREFIX + "claim"

#: backend operations retried when the connection is lost. Each one reads, or writes in one transaction
#: that is idempotent or recognised on the retry (see the module docstring). ``create_new_trial`` and
#: ``set_trial_param`` are covered through the private methods they call (``_create_new_trial``,
#: ``_set_trial_param``), which are retried (with their checks) below.
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "_set_trial_param",
    "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "_get_best_trial_id", "_get_stale_trial_ids", "get_n_trials", "_get_trials",
    "get_trial_number_from_id", "get_current_version", "upgrade",
)
#: retried with their own checks (tokens, state read back) rather than blindly
CHECKED = ("_create_new_trial", "set_trial_state_values", "record_heartbeat")
#: public methods that only delegate to retried ones (retrying them again would nest the retries)
DELEGATING = {"create_new_trial": "_create_new_trial", "set_trial_param": "_set_trial_param"}


# ------------------------------------------------------------------ what kind of failure is this?
def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _driver_error(e: BaseException) -> BaseException:
    """The database driver's exception behind ``e`` (SQLAlchemy wraps it as ``.orig``)."""
    for err in _chain(e):
        if isinstance(err, sa_exc.DBAPIError) and err.orig is not None:
            return err.orig
    return e


def _detail(e: BaseException) -> str:
    err = _driver_error(e)
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = " ".join(lines) if lines else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


#: SQLite failures that retrying cannot cure: (part of the message, what must hold)
SQLITE_FATAL = (
    ("readonly database", "must be writable (a read-only file or file system cannot hold a study)"),
    ("database or disk is full", "must be on a file system with free space (the disk is full)"),
    ("disk i/o error", "must be on a working file system with free space (a write failed: disk full or failing)"),
    ("file is not a database", "must be an SQLite database (a study store), not another kind of file"),
    ("database disk image is malformed", "must be an intact SQLite database (this one is damaged: restore a copy, or use a new store)"),
    ("malformed database schema", "must be an intact SQLite database (this one is damaged: restore a copy, or use a new store)"),
    ("unable to open database file", "must be a file SQLite can open and write, in a writable folder (for its -wal and -shm files)"),
)
#: PostgreSQL failures that retrying cannot cure: (SQLSTATE prefix, what must hold)
PG_FATAL_STATES = (
    ("28", "must accept the login (check the user and PGPASSWORD / ?password_env=)"),
    ("3D", "must name an existing database"),
    ("42501", "must grant the user the rights to the study tables"),
    ("53100", "must have free disk space on the server"),
    ("25006", "must be writable (the server is read-only)"),
)
PG_FATAL_TEXT = (
    ("authentication failed", "must accept the login (check the user and PGPASSWORD / ?password_env=)"),
    ("no password supplied", "must get a password: set PGPASSWORD, or name a variable with ?password_env="),
    ("no pg_hba.conf entry", "must accept connections from this host (pg_hba.conf)"),
    ("does not exist", "must name an existing database and user"),
    ("no space left on device", "must have free disk space on the server"),
)


def store_problem(e: BaseException, where: str) -> str | None:
    """The one-line error for a store that retrying cannot cure, or None (an outage, or another error)."""
    err = _driver_error(e)
    text = str(err).lower()
    module = type(err).__module__ or ""
    if module.startswith("sqlite3"):
        for part, rule in SQLITE_FATAL:
            if part in text:
                return f"{where}: store: {rule}, but got {show(_detail(e))}"
        return None
    state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
    if state:
        for prefix, rule in PG_FATAL_STATES:
            if state.startswith(prefix):
                return f"{where}: store: {rule}, but got {show(_detail(e))}"
    elif isinstance(err, Exception) and module.startswith("psycopg"):
        for part, rule in PG_FATAL_TEXT:
            if part in text:
                return f"{where}: store: {rule}, but got {show(_detail(e))}"
    return None


def lost_connection(e: BaseException) -> bool:
    """An outage (server down or restarting, connection dropped, database busy): worth retrying."""
    for err in (e, e.__cause__, e.__context__):
        if isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
            return True
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
    return False


def schema_race(e: BaseException) -> bool:
    """Another process created the same table / schema version row at the same moment."""
    if any(isinstance(err, sa_exc.IntegrityError) for err in _chain(e)):
        return True
    text = " ".join(str(err).lower() for err in _chain(e))
    return "already exists" in text or "duplicate key" in text


def _where(url: str) -> str:
    from hpo.store.storage import sqlite_path
    from hpo.spec.urls import redact

    if url.startswith("sqlite"):
        path = sqlite_path(url)
        return str(path) if path is not None else url
    return redact(url)


class ResilientRDBStorage(optuna.storages.RDBStorage):
    def __init__(self, url: str, *args, reconnect_timeout: float = RECONNECT_TIMEOUT, **kwargs) -> None:
        self.reconnect_timeout = reconnect_timeout
        self._param_batches: dict[int, list] = {}
        self._recovered_at: float | None = None  # monotonic time this process last saw the store come back
        self._where = _where(url)
        if url.startswith("sqlite"):
            self._refuse_foreign_sqlite(url)
        self._connect("start-up", lambda: super(ResilientRDBStorage, self).__init__(url, *args, **kwargs))

    def _refuse_foreign_sqlite(self, url: str) -> None:
        """An SQLite database of another program is not a study store: refuse it before Optuna adds
        its tables to it. (Unreadable files are left to the constructor, which says what is wrong.)"""
        import sqlite3

        from hpo.store.storage import sqlite_path

        path = sqlite_path(url)
        if path is None or not path.is_file() or path.stat().st_size == 0:
            return
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
                tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        except sqlite3.Error:
            return
        if tables and "studies" not in tables and "alembic_version" not in tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{self._where}: store: must be an Optuna study store or a new file, but got an SQLite "
                             f"database of something else (tables {shown})")

    def __setstate__(self, state: dict) -> None:  # unpickled in a worker: connects like __init__
        self._connect("start-up", lambda: super(ResilientRDBStorage, self).__setstate__(dict(state)))

    def _connect(self, what: str, init: Callable[[], None]) -> None:
        """Run Optuna's constructor (connect, create tables, stamp the schema version), retrying an
        outage within the reconnect timeout and a schema-creation race with another process."""
        deadline = time.monotonic() + getattr(self, "reconnect_timeout", RECONNECT_TIMEOUT)
        delay, races, attempt = 0.25, 0, 0
        while True:
            try:
                init()
            except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                engine = getattr(self, "engine", None)
                if engine is not None:
                    engine.dispose()
                problem = store_problem(e, self._where)
                if problem:
                    raise StoreError(problem) from e
                if schema_race(e) and races < SCHEMA_RACE_RETRIES:
                    races += 1
                    logger.debug("schema of %s created by another process at the same time (%s); reading it again", self._where, _detail(e))
                    time.sleep(random.uniform(0.05, 0.3))
                    continue
                if not lost_connection(e):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"{self._where}: store: must be reachable, but got no connection for "
                                     f"{self.reconnect_timeout:.0f}s at {what} ({show(_detail(e))})") from e
                attempt += 1
                logger.warning("store unreachable at %s (%s: %s); retrying in %.1fs", what, type(_driver_error(e)).__name__,
                               _detail(e)[:120], delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except RuntimeError as e:  # Optuna's schema version check
                if "compatible with the table schema" not in str(e):
                    raise
                try:
                    got = self._version_manager.get_current_version()
                except Exception:  # the version row itself is unreadable
                    got = "another one"
                hint = ("upgrade it with `optuna storage upgrade --storage URL`" if "storage upgrade" in str(e)
                        else "it was made by a newer optuna: update optuna")
                raise StoreError(f"{self._where}: store: must have the table schema of the installed optuna "
                                 f"{optuna.__version__} ({hint}), but got schema version {show(got)}") from e
            else:
                if attempt:
                    self._recovered_at = time.monotonic()
                    logger.warning("store reachable again: connected at %s after %d retries", what, attempt)
                return

    # ------------------------------------------------------------------ the retry loop
    def _retry(self, name: str, call: Callable[[], Any], recover: Callable[[BaseException | None], Any] | None = None) -> Any:
        """``call()``, retried on a lost connection. ``recover(error)`` runs before each retry (and on
        an ``UpdateFinishedTrialError`` of a retry): it returns ``_NOT_DONE``, or the result of the
        first attempt if that one had in fact committed."""
        deadline = time.monotonic() + getattr(self, "reconnect_timeout", RECONNECT_TIMEOUT)
        delay, attempt = 0.25, 0
        # a heartbeat must be written again soon after the store is back (others judge it within the
        # grace period from then): its backoff stops at the heartbeat interval
        cap = float(min(10.0, self.heartbeat_interval)) if name == "record_heartbeat" and self.heartbeat_interval else 10.0
        while True:
            try:
                if attempt and recover is not None:
                    done = recover(None)
                    if done is not _NOT_DONE:
                        return self._back(name, attempt, done)
                return self._back(name, attempt, call())
            except optuna.exceptions.UpdateFinishedTrialError as e:
                if attempt and recover is not None:
                    done = recover(e)
                    if done is not _NOT_DONE:
                        return self._back(name, attempt, done)
                raise
            except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                problem = store_problem(e, self._where)
                if problem:
                    raise StoreError(problem) from e
                if not lost_connection(e):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"{self._where}: store: must be reachable, but got no connection for "
                                     f"{self.reconnect_timeout:.0f}s during {name} ({show(_detail(e))})") from e
                attempt += 1
                logger.warning("store unreachable during %s (%s); retrying in %.1fs", name, type(e.__cause__ or e).__name__, delay)
                try:
                    self.scoped_session.remove()
                except Exception:  # the session is already broken: nothing to release
                    pass
                time.sleep(delay)
                delay = min(delay * 2, cap)

    def _back(self, name: str, attempt: int, result: Any) -> Any:
        if attempt:
            self._recovered_at = time.monotonic()
            logger.warning("store reachable again: %s went through after %d retries", name, attempt)
        return result

    # ------------------------------------------------------------------ writes that are checked on a retry
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution) -> None:
        self._set_trial_param(trial_id, param_name, param_value_internal, distribution, None)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        """Create a trial (from ``template_trial`` when given) exactly once, even when the connection
        drops between the commit and its answer: see the module docstring."""
        import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import FrozenTrial, TrialState

        token = uuid.uuid4().hex
        if template_trial is None:  # what Optuna stores for a fresh trial, as a template
            template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                                   datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                                   distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=-1)
        else:
            template = copy.deepcopy(template_trial)
        template.system_attrs = {**template.system_attrs, CREATE_TOKEN: token}

        def attempt() -> FrozenTrial:
            with _create_scoped_session(self.scoped_session) as session:
                # the lock makes trial numbers unique under concurrent workers (as in Optuna)
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                trial = self._get_prepared_new_trial(study_id, template, session)
                frozen = copy.deepcopy(template)
                frozen.number, frozen.datetime_start, frozen._trial_id = trial.number, trial.datetime_start, trial.trial_id
            return _without_tokens(frozen)

        def recover(_):
            trial_id = self._trial_with_attr(study_id, CREATE_TOKEN, token)
            if trial_id is None:
                return _NOT_DONE
            logger.warning("the trial created before the connection dropped was committed (trial id %d): not creating another", trial_id)
            return self.get_trial(trial_id)

        trial = self._retry("_create_new_trial", attempt, recover)
        self._drop_token(trial._trial_id, CREATE_TOKEN)
        return trial

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        """Optuna's state change in one transaction; a claim (WAITING -> RUNNING) also writes a claim
        token, so that a retry whose first attempt committed knows the trial is its own."""
        from datetime import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        token = uuid.uuid4().hex

        def attempt() -> bool:
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                    self.check_trial_is_updatable(trial_id, trial.state)
                    if values is not None:
                        for objective, v in enumerate(values):
                            self._set_trial_value_without_commit(session, trial, objective, v)
                    if state == TrialState.RUNNING and trial.state != TrialState.WAITING:
                        return False
                    trial.state = state
                    if state == TrialState.RUNNING:
                        trial.datetime_start = datetime.now()
                        self._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, trial_id, CLAIM_TOKEN, token)
                    if state.is_finished():
                        trial.datetime_complete = datetime.now()
            except sa_exc.IntegrityError:
                return False
            return True

        def recover(_):
            row = self._trial_state_and_attr(trial_id, CLAIM_TOKEN)
            if row is None:
                return _NOT_DONE
            stored_state, claim = row
            if state == TrialState.RUNNING:
                return True if stored_state == TrialState.RUNNING and claim == token else _NOT_DONE
            if stored_state == state:
                return True  # the first attempt committed before the connection dropped
            return _NOT_DONE

        done = self._retry("set_trial_state_values", attempt, recover)
        if done and state == TrialState.RUNNING:
            self._drop_token(trial_id, CLAIM_TOKEN)
        return done

    def _drop_token(self, trial_id: int, key: str) -> None:
        """The answer came back: the token has done its work (deleting it twice deletes it once)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import delete

        A = models.TrialSystemAttributeModel.__table__

        def attempt() -> None:
            with _create_scoped_session(self.scoped_session) as session:
                session.execute(delete(A).where(A.c.trial_id == trial_id, A.c.key == key))

        self._retry(f"deleting {key}", attempt)

    def _trial_with_attr(self, study_id: int, key: str, value: str) -> int | None:
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import select

        A, T = models.TrialSystemAttributeModel.__table__, models.TrialModel.__table__
        with _create_scoped_session(self.scoped_session) as session:
            return session.execute(select(A.c.trial_id).join(T, T.c.trial_id == A.c.trial_id).where(
                T.c.study_id == study_id, A.c.key == key, A.c.value_json == json.dumps(value))).scalar()

    def _trial_state_and_attr(self, trial_id: int, key: str):
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import select

        A, T = models.TrialSystemAttributeModel.__table__, models.TrialModel.__table__
        with _create_scoped_session(self.scoped_session) as session:
            state = session.execute(select(T.c.state).where(T.c.trial_id == trial_id)).scalar()
            if state is None:
                return None
            value = session.execute(select(A.c.value_json).where(A.c.trial_id == trial_id, A.c.key == key)).scalar()
        return state, (json.loads(value) if value is not None else None)

    def record_heartbeat(self, trial_id: int) -> None:
        """Retried like the rest; in Optuna's heartbeat thread, so a store that is gone for good is
        logged, not raised (a traceback from the thread): the worker's own next call says why."""
        try:
            self._retry("record_heartbeat", lambda: super(ResilientRDBStorage, self).record_heartbeat(trial_id))
        except StoreError as e:
            logger.error("heartbeat of trial id %d not recorded: %s", trial_id, e)

    # ------------------------------------------------------------------ stale trials, after an outage
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, but none within a grace period after the store came back (this
        process saw it come back, or the PostgreSQL server started): heartbeats could not be written
        while it was away."""
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        if self._recovered_at is not None and time.monotonic() - self._recovered_at < grace:
            logger.info("stale-trial check skipped: the store came back %.0fs ago (grace period %ss)",
                        time.monotonic() - self._recovered_at, grace)
            return []
        stale = super()._get_stale_trial_ids(study_id)
        if stale and self.engine.name == "postgresql":
            from optuna.storages._rdb.storage import _create_scoped_session
            from sqlalchemy import text

            with _create_scoped_session(self.scoped_session) as session:
                up = session.execute(text("SELECT EXTRACT(EPOCH FROM (now() - pg_postmaster_start_time()))")).scalar()
            if up is not None and float(up) < grace:
                logger.info("stale-trial check skipped: the server started %.0fs ago (grace period %ss)", float(up), grace)
                return []
        return stale

    @contextlib.contextmanager
    def batched_params(self, trial_id: int):
        """Within this block, the parameters suggested for ``trial_id`` are written together when it
        ends, in one transaction (Optuna writes each ``suggest_*`` in its own: ~1-2 ms apiece on
        SQLite, ~20 ms for a 12-parameter fusion space). Same checks as Optuna's per-parameter path."""
        self._param_batches[trial_id] = []
        try:
            yield
        finally:
            batch = self._param_batches.pop(trial_id)
            if batch:
                self.set_trial_params(trial_id, batch)

    def _set_trial_param(self, trial_id, param_name, param_value_internal, distribution, previous_distribution) -> None:
        batch = self._param_batches.get(trial_id)
        if batch is None:
            return super()._set_trial_param(trial_id, param_name, param_value_internal, distribution, previous_distribution)
        batch.append((param_name, param_value_internal, distribution, previous_distribution))

    def set_trial_params(self, trial_id: int, params: list[tuple]) -> None:
        """Write ``(name, internal value, distribution, previous distribution or None)`` rows of a
        running trial in one transaction."""
        from optuna import distributions as D
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import func, insert, select

        P, T = models.TrialParamModel.__table__, models.TrialModel.__table__
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            unknown = [name for name, _, _, previous in params if previous is None]
            stored = dict(session.execute(  # one earlier distribution per name, as Optuna's check takes
                select(P.c.param_name, func.min(P.c.distribution_json)).join(T, T.c.trial_id == P.c.trial_id)
                .where(T.c.study_id == trial.study_id, P.c.param_name.in_(unknown)).group_by(P.c.param_name)).all()) if unknown else {}
            for name, _, dist, previous in params:
                if previous is None and name in stored:
                    previous = D.json_to_distribution(stored[name])
                if previous is not None:
                    D.check_distribution_compatibility(previous, dist)
            session.execute(insert(P), [{"trial_id": trial_id, "param_name": name, "param_value": value,
                                         "distribution_json": D.distribution_to_json(dist)} for name, value, dist, _ in params])

    def set_trial_user_attrs(self, trial_id: int, attrs: dict) -> None:
        """Set several user attrs of a running trial with one upsert statement in one transaction
        (instead of a lookup, an upsert and a commit per key)."""
        import json

        from optuna.storages._rdb import models

        rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
        self._bulk_upsert(models.TrialUserAttributeModel, rows, ("trial_id", "key"), ("value_json",), trial_id)

    def set_trial_intermediate_values(self, trial_id: int, values: dict) -> None:
        """Set several intermediate values (step -> value) of a running trial in one statement."""
        from optuna.storages._rdb import models

        rows = []
        for step, value in values.items():
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": int(step), "intermediate_value": stored, "intermediate_value_type": kind})
        self._bulk_upsert(models.TrialIntermediateValueModel, rows, ("trial_id", "step"),
                          ("intermediate_value", "intermediate_value_type"), trial_id)

    def _get_trials(self, study_id: int, states, included_trial_ids: set[int], trial_id_greater_than: int) -> list:
        """Optuna's trial query (same selection, same FrozenTrials) without the ORM: one Core SELECT per
        table and rows grouped in Python. Loading a 10,000-trial study with curves takes a fraction of
        the time of building an ORM object per stored row (bench/report_scale.py)."""
        return self._query_trials(study_id, states, included_trial_ids, trial_id_greater_than)

    def get_trials_light(self, study_id: int, states=None, without_user_attrs: tuple[str, ...] | None = ("curves",)) -> list:
        """All trials of a study without their intermediate values and without the named (large) user
        attrs (``None``: without any): what overviews of big studies need (reports, exports). Not cached
        by Optuna; fetch a full trial with ``get_trial`` where its curves are needed."""
        return self._query_trials(study_id, states, set(), -1, light=True,
                                  without_user_attrs=None if without_user_attrs is None else tuple(without_user_attrs))

    def _query_trials(self, study_id: int, states, included_trial_ids: set[int], trial_id_greater_than: int,
                      light: bool = False, without_user_attrs: tuple[str, ...] | None = ()) -> list:
        from optuna.storages._rdb import models
        from sqlalchemy import or_

        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        T = models.TrialModel.__table__
        where = [T.c.study_id == study_id]
        if states is not None:
            where.append(T.c.state.in_(list(states)))
        wanted = None  # a long IN list would exceed the database's parameter limit: filter those in Python
        if included and trial_id_greater_than > -1:
            if len(included) <= 500:
                where.append(or_(T.c.trial_id.in_(sorted(included)), T.c.trial_id > trial_id_greater_than))
            else:
                where.append(T.c.trial_id >= min(included))
                wanted = included
        elif trial_id_greater_than > -1:
            where.append(T.c.trial_id > trial_id_greater_than)
        return self._load_trials(where, light, without_user_attrs, study_id=study_id, wanted=wanted,
                                 newer_than=trial_id_greater_than)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """One trial, read like :meth:`_get_trials` (Optuna's ORM path costs ~10 ms a call on SQLite; the
        worker reads its running trial a few times per trial)."""
        from optuna.storages._rdb import models

        trials = self._load_trials([models.TrialModel.__table__.c.trial_id == trial_id])
        if not trials:
            raise KeyError(f"No trial with trial id {trial_id} exists.")  # what Optuna's get_trial raises
        return trials[0]

    def _load_trials(self, where: list, light: bool = False, without_user_attrs: tuple[str, ...] | None = (), *,
                     study_id: int | None = None, wanted: set[int] | None = None, newer_than: int = -1) -> list:
        """The FrozenTrials of the trial rows matching ``where``; ``light``: without intermediate values;
        ``without_user_attrs``: user attrs left out (``None``: all of them)."""
        import json

        from optuna.distributions import json_to_distribution
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import FrozenTrial
        from sqlalchemy import select

        T = models.TrialModel.__table__
        ids = select(T.c.trial_id).where(*where).scalar_subquery()

        with _create_scoped_session(self.scoped_session) as session:
            if study_id is not None:
                models.StudyModel.find_or_raise_by_id(study_id, session)
            rows = session.execute(select(T.c.trial_id, T.c.number, T.c.state, T.c.datetime_start, T.c.datetime_complete)
                                   .where(*where).order_by(T.c.trial_id)).all()
            if wanted is not None:
                rows = [r for r in rows if r.trial_id in wanted or r.trial_id > newer_than]
            if not rows:
                return []

            def children(model, *cols, order=None, where=()):
                t = model.__table__
                q = select(t.c.trial_id, *(t.c[c] for c in cols)).where(t.c.trial_id.in_(ids), *where)
                return session.execute(q.order_by(t.c[order]) if order else q).all()

            by_id = {r.trial_id: {"params": {}, "dists": {}, "values": {}, "user": {}, "system": {}, "inter": {}} for r in rows}
            dist_cache: dict[str, object] = {}
            for tid, name, value, dist_json in children(models.TrialParamModel, "param_name", "param_value", "distribution_json",
                                                         order="param_id"):
                if tid in by_id:
                    dist = dist_cache.get(dist_json)
                    if dist is None:
                        dist = dist_cache[dist_json] = json_to_distribution(dist_json)
                    by_id[tid]["params"][name] = dist.to_external_repr(value)
                    by_id[tid]["dists"][name] = dist
            for tid, objective, value, kind in children(models.TrialValueModel, "objective", "value", "value_type"):
                if tid in by_id:
                    by_id[tid]["values"][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
            skip = (models.TrialUserAttributeModel.__table__.c.key.not_in(without_user_attrs),) if without_user_attrs else ()
            for tid, key, value_json in () if without_user_attrs is None else children(
                    models.TrialUserAttributeModel, "key", "value_json", where=skip):
                if tid in by_id:
                    by_id[tid]["user"][key] = json.loads(value_json)
            for tid, key, value_json in children(models.TrialSystemAttributeModel, "key", "value_json"):
                if tid in by_id and not key.startswith(TOKEN_PREFIX):  # this class's bookkeeping
                    by_id[tid]["system"][key] = json.loads(value_json)
            to_inter = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
            for tid, step, value, kind in () if light else children(
                    models.TrialIntermediateValueModel, "step", "intermediate_value", "intermediate_value_type"):
                if tid in by_id:
                    by_id[tid]["inter"][step] = to_inter(value, kind)

        trials = []
        for r in rows:
            c = by_id[r.trial_id]
            values = [c["values"][k] for k in sorted(c["values"])] if c["values"] else None
            trials.append(FrozenTrial(
                number=r.number, state=r.state, value=None, values=values, datetime_start=r.datetime_start,
                datetime_complete=r.datetime_complete, params=c["params"], distributions=c["dists"], user_attrs=c["user"],
                system_attrs=c["system"], intermediate_values=c["inter"], trial_id=r.trial_id))
        return trials

    def _bulk_upsert(self, model, rows: list[dict], keys: tuple, updates: tuple, trial_id: int) -> None:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        if not rows:
            return
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            dialect = self.engine.name
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert
                stmt = insert(model).values(rows)
                stmt = stmt.on_conflict_do_update(index_elements=[getattr(model, k) for k in keys],
                                                  set_={u: getattr(stmt.excluded, u) for u in updates})
                session.execute(stmt)
            else:  # other databases: Optuna's own per-row path, still one transaction
                for row in rows:
                    if model is models.TrialUserAttributeModel:
                        import json

                        self._set_trial_attr_without_commit(session, model, trial_id, row["key"], json.loads(row["value_json"]))
                    else:
                        value = model.stored_repr_to_intermediate_value(row["intermediate_value"], row["intermediate_value_type"])
                        self._set_trial_intermediate_value_without_commit(session, trial_id, row["step"], value)


_NOT_DONE = object()


def _without_tokens(trial: FrozenTrial) -> FrozenTrial:
    if any(k.startswith(TOKEN_PREFIX) for k in trial.system_attrs):
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(TOKEN_PREFIX)}
    return trial


def _retrying(name: str):
    method = getattr(ResilientRDBStorage, name)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return self._retry(name, lambda: method(self, *args, **kwargs))

    wrapper._hpo_retried = True
    return wrapper


BATCHED = ("set_trial_user_attrs", "set_trial_intermediate_values", "set_trial_params", "get_trials_light")  # ours, also retried

for _name in dict.fromkeys((*RETRIED, *BATCHED)):
    if hasattr(ResilientRDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _retrying(_name))
for _name in CHECKED:
    getattr(ResilientRDBStorage, _name)._hpo_retried = True


def retried(name: str) -> bool:
    """Whether the backend method ``name`` survives a lost connection (retried, or delegating to one
    that is)."""
    method = getattr(ResilientRDBStorage, DELEGATING.get(name, name), None)
    return bool(getattr(method, "_hpo_retried", False))
