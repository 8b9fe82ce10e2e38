"""An Optuna RDBStorage whose operations survive a lost database connection.

When the server restarts (or an SQLite lock outlasts the busy timeout) an operation fails with a
connection error; it is retried with exponential backoff for up to ``reconnect_timeout`` seconds, on a
fresh session (``pool_pre_ping`` replaces dead pooled connections). Each retried operation is a read, or
a write in one transaction that either happened or did not; a retried state change that had in fact
been committed is recognised (``UpdateFinishedTrialError`` on the retry) and counted as done. Workers
thus wait for the database and go on; nothing is lost. Imported only when a storage is opened.
"""

from __future__ import annotations

import functools
import logging
import time

import optuna
import sqlalchemy.exc as sa_exc

logger = logging.getLogger("hpo.storage")

RECONNECT_TIMEOUT = 300.0  # seconds a worker keeps retrying a store that went away

#: RDBStorage operations retried when the database connection is lost; all of them either read, or
#: write in one transaction that either happened or not (see _resilient_rdb_class).
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "record_heartbeat", "_get_stale_trial_ids", "get_n_trials",
)


def lost_connection(e: BaseException) -> bool:
    for err in (e, e.__cause__, e.__context__):
        if isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
            return True
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
    return False


class ResilientRDBStorage(optuna.storages.RDBStorage):
    def __init__(self, *args, reconnect_timeout: float = RECONNECT_TIMEOUT, **kwargs) -> None:
        self.reconnect_timeout = reconnect_timeout
        super().__init__(*args, **kwargs)

    def set_trial_user_attrs(self, trial_id: int, attrs: dict) -> None:
        """Set several user attrs of a running trial in one transaction (one commit, one fsync,
        instead of one per key: what a finished trial records costs ~1 transaction, not ~15)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session, True) as session:
            for key, value in attrs.items():
                self._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)


def _retrying(name: str):
    method = getattr(ResilientRDBStorage, name)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        deadline = time.monotonic() + getattr(self, "reconnect_timeout", RECONNECT_TIMEOUT)
        delay, attempt = 0.25, 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if attempt and name == "set_trial_state_values":
                    return True  # the first attempt committed before the connection dropped
                raise
            except (sa_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                if not lost_connection(e) or time.monotonic() > deadline:
                    raise
                attempt += 1
                logger.warning("store unreachable during %s (%s); retrying in %.1fs", name, type(e.__cause__ or e).__name__, delay)
                try:
                    self.scoped_session.remove()
                except Exception:  # the session is already broken: nothing to release
                    pass
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    return wrapper


for _name in (*RETRIED, "set_trial_user_attrs"):
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _retrying(_name))
