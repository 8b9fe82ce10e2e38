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

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5  # seconds between heartbeats of a running trial
HEARTBEAT_GRACE = 20  # seconds without a heartbeat after which a trial is stale
MAX_RETRY = 3  # times a stale trial is retried
SQLITE_BUSY_TIMEOUT = 60.0
RECONNECT_TIMEOUT = 300.0  # seconds a worker keeps retrying a store that went away (server restart)



def open_storage(url: str, *, heartbeat: bool = True, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = HEARTBEAT_GRACE, max_retry: int = MAX_RETRY) -> "optuna.storages.BaseStorage":
    """Open (creating where needed) the storage at ``url``; RDB storages get heartbeats unless
    ``heartbeat`` is false (readers: status, export, dashboard)."""
    import optuna

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
            engine_kwargs["creator"] = _sqlite_creator(path)
    elif scheme.startswith("postgresql"):
        url, password = _postgres_password(url)
        engine_kwargs["pool_pre_ping"] = True
        if password is not None:
            engine_kwargs["connect_args"] = {"password": password}
    else:
        engine_kwargs["pool_pre_ping"] = True
    import warnings

    kwargs["reconnect_timeout"] = RECONNECT_TIMEOUT
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


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite URL (None for in-memory)."""
    rest = url.split("://", 1)[1]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:]) if rest.startswith("/") else Path(rest)


class _sqlite_creator:
    """Opens SQLite connections with WAL, NORMAL sync and a busy timeout (picklable, for workers)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __call__(self):
        import sqlite3

        conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        return conn


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


def light_trials(ostudy, states=None, without_user_attrs: tuple[str, ...] | None = ("curves",)) -> list:
    """The trials of a study for overviews of big studies: on a relational store without intermediate
    values and the named (large) user attrs (``None``: any), read in one pass; elsewhere all of each trial.
    ``full_trial`` gives one trial with everything."""
    backend = getattr(ostudy._storage, "_backend", ostudy._storage)
    if hasattr(backend, "get_trials_light"):
        return backend.get_trials_light(ostudy._study_id, states, without_user_attrs)
    return ostudy.get_trials(deepcopy=False, states=states)


def full_trial(ostudy, trial):
    """``trial`` with all its attrs and intermediate values (a no-op for one that has them)."""
    backend = getattr(ostudy._storage, "_backend", ostudy._storage)
    if hasattr(backend, "get_trials_light"):
        return ostudy._storage.get_trial(trial._trial_id)
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
