"""What kind of store failure is this, and the one retry loop for outages.

:func:`store_problem` names a store that retrying cannot cure (a read-only, full, corrupt or foreign
SQLite file; a refused PostgreSQL login, a missing database): one line, ``store: what must hold, but got
...``. :func:`lost_connection` recognises an outage (server down or restarting, connection dropped, database
busy), which :func:`retry` retries with exponential backoff (0.25 s doubling to ``cap``) until
``timeout`` seconds have passed, with one log line per attempt: ``store unreachable during NAME (...);
retrying in Xs``. The storage's constructor and every retried backend call (:mod:`hpo.store.rdb`) share
this loop. Imported only when a storage is opened.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import optuna
import sqlalchemy.exc as sa_exc

from hpo.errors import StoreError, show

logger = logging.getLogger("hpo.store.storage")

RECONNECT_TIMEOUT = 300.0  # seconds a worker keeps retrying a store that went away (server restart)
NOT_DONE = object()  # what a ``recover`` callback returns when the first attempt did not commit


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def driver_error(e: BaseException) -> BaseException:
    """The database driver's exception behind ``e`` (SQLAlchemy wraps it as ``.orig``)."""
    for err in _chain(e):
        if isinstance(err, sa_exc.DBAPIError) and err.orig is not None:
            return err.orig
    return e


def detail(e: BaseException) -> str:
    err = driver_error(e)
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
    err = driver_error(e)
    text = str(err).lower()
    module = type(err).__module__ or ""
    if module.startswith("sqlite3"):
        for part, rule in SQLITE_FATAL:
            if part in text:
                return f"{where}: store: {rule}, but got {show(detail(e))}"
        return None
    state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
    if state:
        for prefix, rule in PG_FATAL_STATES:
            if state.startswith(prefix):
                return f"{where}: store: {rule}, but got {show(detail(e))}"
    elif isinstance(err, Exception) and module.startswith("psycopg"):
        for part, rule in PG_FATAL_TEXT:
            if part in text:
                return f"{where}: store: {rule}, but got {show(detail(e))}"
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


def retry(call: Callable[[], Any], *, during: str, where: str, timeout: float, cap: float = 10.0,
          recover: Callable[[BaseException | None], Any] | None = None, races: int = 0,
          on_error: Callable[[], None] | None = None, before_retry: Callable[[], None] | None = None,
          on_back: Callable[[], None] | None = None) -> Any:
    """``call()``, retried on a lost connection for up to ``timeout`` seconds; a store that cannot be
    cured raises :class:`~hpo.errors.StoreError` at once, and so does an outage past ``timeout``.

    ``during`` names the operation in messages (``"during get_trial"``, ``"at start-up"``).
    ``recover(error)`` runs before each retry (and on an ``UpdateFinishedTrialError`` of a retry): it
    returns :data:`NOT_DONE`, or the result of the first attempt if that one had in fact committed.
    ``races``: how many schema-creation races with another process to run again (the constructor's).
    ``on_error`` runs after every store error, ``before_retry`` before each retry's sleep, ``on_back``
    when a call goes through after retries."""
    deadline = time.monotonic() + timeout
    delay, attempt, raced = 0.25, 0, 0
    while True:
        try:
            result = NOT_DONE
            if attempt and recover is not None:
                result = recover(None)
            if result is NOT_DONE:
                result = call()
            break
        except optuna.exceptions.UpdateFinishedTrialError as e:
            if attempt and recover is not None:
                result = recover(e)
                if result is not NOT_DONE:
                    break
            raise
        except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            if on_error is not None:
                on_error()
            problem = store_problem(e, where)
            if problem:
                raise StoreError(problem) from e
            if raced < races and schema_race(e):
                raced += 1
                logger.debug("schema of %s created by another process at the same time (%s); reading it again", where, detail(e))
                time.sleep(random.uniform(0.05, 0.3))
                continue
            if not lost_connection(e):
                raise
            if time.monotonic() > deadline:
                raise StoreError(f"{where}: store: must be reachable, but got no connection for "
                                 f"{timeout:.0f}s {during} ({show(detail(e))})") from e
            attempt += 1
            logger.warning("store unreachable %s (%s: %s); retrying in %.1fs", during, type(driver_error(e)).__name__,
                           detail(e)[:120], delay)
            if before_retry is not None:
                before_retry()
            time.sleep(delay)
            delay = min(delay * 2, cap)
    if attempt:
        if on_back is not None:
            on_back()
        logger.warning("store reachable again: %s went through after %d retries", during, attempt)
    return result
