"""The resilient RDB storage itself: connecting, the retry of every backend call, heartbeats and stale
trials. Checked writes (:mod:`~hpo.store.rdb.checked`), the fast batched writes and reads
(:mod:`~hpo.store.rdb.fast`) and the study lock (:mod:`~hpo.store.rdb.lock`) are mixed in; the module
docstring of :mod:`hpo.store.rdb` says what survives what."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any, Callable

import optuna

from hpo.errors import StoreError, show
from hpo.store.rdb.checked import CheckedWrites
from hpo.store.rdb.fast import FastPaths
from hpo.store.rdb.lock import StudyLocks
from hpo.store.retry import NOT_DONE, RECONNECT_TIMEOUT, retry

logger = logging.getLogger("hpo.store.storage")

SCHEMA_RACE_RETRIES = 20  # times the constructor re-runs after losing a schema-creation race

#: backend operations retried when the connection is lost. Each one reads, or writes in one transaction
#: that is idempotent or recognised on the retry (see the package docstring). ``create_new_trial`` and
#: ``set_trial_param`` are covered through the private methods they call (``_create_new_trial``,
#: ``_set_trial_param``), which are retried (with their checks).
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
#: ours, also retried
BATCHED = ("set_trial_user_attrs", "set_trial_intermediate_values", "set_trial_params", "get_trials_light",
           "heartbeatless_trial_ids")


def _where(url: str) -> str:
    from hpo.spec.urls import redact
    from hpo.store.sqlite import sqlite_path

    if url.startswith("sqlite"):
        path = sqlite_path(url)
        return str(path) if path is not None else url
    return redact(url)


class ResilientRDBStorage(CheckedWrites, FastPaths, StudyLocks, optuna.storages.RDBStorage):
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

        from hpo.store.sqlite import sqlite_path

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
        self._where = state.get("_where", "the store")
        self._connect("start-up", lambda: super(ResilientRDBStorage, self).__setstate__(dict(state)))

    def _connect(self, what: str, init: Callable[[], None]) -> None:
        """Run Optuna's constructor (connect, create tables, stamp the schema version), retrying an
        outage within the reconnect timeout and a schema-creation race with another process."""

        def dispose() -> None:
            engine = getattr(self, "engine", None)
            if engine is not None:
                engine.dispose()

        try:
            retry(init, during=f"at {what}", where=self._where, timeout=getattr(self, "reconnect_timeout", RECONNECT_TIMEOUT),
                  races=SCHEMA_RACE_RETRIES, on_error=dispose, on_back=self._came_back)
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

    def _retry(self, name: str, call: Callable[[], Any], recover: Callable[[BaseException | None], Any] | None = None) -> Any:
        """``call()``, retried on a lost connection (:func:`hpo.store.retry.retry`) on a fresh session."""
        # a heartbeat must be written again soon after the store is back (others judge it within the
        # grace period from then): its backoff stops at the heartbeat interval
        cap = float(min(10.0, self.heartbeat_interval)) if name == "record_heartbeat" and self.heartbeat_interval else 10.0
        return retry(call, during=f"during {name}", where=self._where, cap=cap, recover=recover,
                     timeout=getattr(self, "reconnect_timeout", RECONNECT_TIMEOUT), before_retry=self._fresh_session,
                     on_back=self._came_back)

    def _fresh_session(self) -> None:
        try:
            self.scoped_session.remove()
        except Exception:  # the session is already broken: nothing to release
            pass

    def _came_back(self) -> None:
        self._recovered_at = time.monotonic()

    def record_heartbeat(self, trial_id: int) -> None:
        """Retried like the rest; in Optuna's heartbeat thread, so a store that is gone for good is
        logged, not raised (a traceback from the thread): the worker's own next call says why."""
        try:
            self._retry("record_heartbeat", lambda: super(ResilientRDBStorage, self).record_heartbeat(trial_id))
        except StoreError as e:
            logger.error("heartbeat of trial id %d not recorded: %s", trial_id, e)

    # ------------------------------------------------------------------ stale trials, after an outage
    def _grace(self) -> float:
        return self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, but none within a grace period after the store came back (this
        process saw it come back, or the PostgreSQL server started): heartbeats could not be written
        while it was away."""
        grace = self._grace()
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

    def heartbeatless_trial_ids(self, study_id: int) -> list[int]:
        """RUNNING trials of the study that never sent a heartbeat (Optuna's stale check skips them)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        T, H = models.TrialModel, models.TrialHeartbeatModel
        with _create_scoped_session(self.scoped_session) as session:
            return [row[0] for row in (
                session.query(T.trial_id).outerjoin(H, H.trial_id == T.trial_id)
                .filter(T.study_id == study_id, T.state == TrialState.RUNNING, H.trial_heartbeat_id.is_(None)).all())]


def _retrying(name: str):
    method = getattr(ResilientRDBStorage, name)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return self._retry(name, lambda: method(self, *args, **kwargs))

    wrapper._hpo_retried = True
    return wrapper


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


__all__ = ["BATCHED", "CHECKED", "DELEGATING", "NOT_DONE", "RETRIED", "ResilientRDBStorage", "retried"]
