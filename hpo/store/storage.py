"""Storage URLs -> Optuna storages, configured for many workers.

- ``sqlite:///path.db`` (the embedded default, ``sqlite:///runs/hpo.db``): WAL journal, a 60 s busy
  timeout and ``synchronous=NORMAL`` on every connection, so concurrent local workers and the
  dashboard do not fail with "database is locked", and reads do not fsync.
- ``postgresql+psycopg://user@host:port/db``: ``pool_pre_ping`` renews connections dropped during
  long trials (or by a server restart). The password is never part of the URL, a YAML file or the
  store: it comes from the environment, ``PGPASSWORD`` (libpq's own variable) or the variable named
  by ``?password_env=NAME`` in the URL.
- ``journal://path.log``: Optuna's JournalFileStorage (append-only file; no heartbeats).
- any other SQLAlchemy URL is passed to :class:`optuna.storages.RDBStorage` as is.

The resilient storage (:mod:`hpo.store.rdb`) retries an outage for ``RECONNECT_TIMEOUT`` seconds.
RDB storages get Optuna's heartbeat: a trial whose worker died (SIGKILL, lost machine) is marked
FAIL after ``grace`` seconds without a heartbeat and re-enqueued with its parameters by
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hpo.errors import UsageError
from hpo.spec.urls import check_url, redact
from hpo.store.record import CURVES
from hpo.store.sqlite import SQLiteCreator, sqlite_path

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

def open_storage(url: str, *, heartbeat: bool = True, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, max_retry: int | None = None) -> "optuna.storages.BaseStorage":
    """Open (creating where needed) the storage at ``url``; RDB storages get heartbeats unless
    ``heartbeat`` is false (readers: status, export, dashboard). Heartbeat settings left out take the
    study file's defaults (``fault_tolerance:`` in :mod:`hpo.spec.schema`, the one place they are stated)."""
    import optuna

    from hpo.spec.schema import FaultToleranceSection

    defaults = FaultToleranceSection()
    heartbeat_interval = defaults.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
    grace_period = defaults.grace_period if grace_period is None else grace_period
    max_retry = defaults.max_retry if max_retry is None else max_retry
    check_url(url)
    scheme = url.split("://", 1)[0]
    if scheme == "journal":
        path = Path(url.split("://", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict = {}
    engine_kwargs: dict = {}
    if scheme.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a read-only file system, a file in the way, no permission
                from hpo.errors import StoreError, show

                raise StoreError(f"{path}: store: must be in a folder that exists or can be created, "
                                 f"but got {show(e.strerror or str(e))} for {show(str(path.parent))}") from e
            engine_kwargs["creator"] = SQLiteCreator(path)
    elif scheme.startswith("postgresql"):
        url, password = _postgres_password(url)
        engine_kwargs["pool_pre_ping"] = True
        if password is not None:
            engine_kwargs["connect_args"] = {"password": password}
    else:
        engine_kwargs["pool_pre_ping"] = True
    import warnings

    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        kwargs.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        from hpo.store.rdb import ResilientRDBStorage

        return ResilientRDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def _postgres_password(url: str) -> tuple[str, str | None]:
    """(the URL without ``password_env``, the password from the variable it names or None). The value is
    only handed to the driver; never logged, never part of a URL."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    env = query.pop("password_env", None)
    clean = urlunsplit(parts._replace(query=urlencode(query)))
    if env is None:
        return clean, None  # libpq reads PGPASSWORD (or ~/.pgpass) itself
    if not env or not env.replace("_", "A").isalnum():
        raise UsageError(f"storage URL {redact(url)}: password_env must name an environment variable (letters, digits, _), but got {env!r}")
    if env not in os.environ:
        raise UsageError(f"storage URL {redact(url)}: password_env must name a set environment variable, but {env} is not set")
    return clean, os.environ[env]


def artifact_store(path: str | os.PathLike):
    from optuna.artifacts import FileSystemArtifactStore

    Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def light_trials(ostudy, states=None, without_user_attrs: tuple[str, ...] | None = (CURVES,)) -> list:
    """The trials of a study for overviews of big studies: on a relational store without intermediate
    values and the named (large) user attrs (``None``: any), read in one pass; elsewhere all of each trial.
    ``full_trial`` gives one trial with everything."""
    from hpo.store import rdb

    if rdb.light_reads(ostudy):
        return rdb.trials_light(ostudy, states, without_user_attrs)
    return ostudy.get_trials(deepcopy=False, states=states)


def full_trial(ostudy, trial):
    """``trial`` with all its attrs and intermediate values (a no-op for one that has them)."""
    from hpo.store import rdb

    if rdb.light_reads(ostudy):
        return rdb.storage_of(ostudy).get_trial(rdb.trial_id_of(trial))
    return trial


class TrialsSnapshot:
    """A read-only view of a study over a given list of trials, for Optuna's analysis functions
    (importances, Pareto fronts) so they do not read the whole store again."""

    def __init__(self, ostudy, trials: list) -> None:
        self._study, self._trials = ostudy, trials

    def __getattr__(self, name):
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        import copy

        out = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(out) if deepcopy else out

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        return self.get_trials(deepcopy, states)

    @property
    def trials(self) -> list:
        return self.get_trials()
