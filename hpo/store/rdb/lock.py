"""A lock per study, across processes: the last free places of a study's budget are taken under it.

Workers count the budget and then ask for a trial; two workers that count at the same moment both see the
last free place and both ask (this happens: a server restart holds every worker at the same call and lets
them go together). The later trial is then recorded FAIL ``surplus`` (:mod:`hpo.run.trial`): nothing is lost,
but the study shows a trial that never trained. Near the end of the budget the worker loop counts and asks
under this lock instead (:func:`hpo.run.loop.run_trial`), so the second worker sees the first one's trial.

PostgreSQL: a session-level advisory lock on a connection of its own, ``(LOCK_CLASS, study_id)``, waited for
in the server (``lock_timeout``, no polling); the server drops it with the connection, so a worker killed
while holding it does not block the others.
SQLite: ``flock`` on a file beside the database (``<file>-budget.lock``, one lock for every study in the
file), polled every ~10 ms; the kernel drops it with the process. Mixed into :class:`hpo.store.rdb.ResilientRDBStorage`.

The lock is held for one count and one ``ask`` (milliseconds). It is taken within ``LOCK_WAIT_SECONDS``
or not at all: a worker that cannot take it (a holder stopped with SIGSTOP, a read-only directory, an
in-memory database) goes on without it, and the surplus check before training still keeps the budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Iterator

logger = logging.getLogger("hpo.store.storage")

LOCK_CLASS = 0x68706F00  # the first key of the advisory lock ("hpo"): the second is the study id
LOCK_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.01


class StudyLocks:
    """:meth:`study_lock` (see the module docstring)."""

    @contextlib.contextmanager
    def study_lock(self, study_id: int) -> Iterator[bool]:
        """Hold the study's lock in the block; yields whether it is held (False: this store cannot lock,
        or another holder kept it past ``LOCK_WAIT_SECONDS``)."""
        dialect = self.engine.name
        if dialect == "postgresql":
            with self._pg_lock(study_id) as held:
                yield held
        elif dialect == "sqlite":
            with self._file_lock() as held:
                yield held
        else:
            yield False

    @contextlib.contextmanager
    def _pg_lock(self, study_id: int) -> Iterator[bool]:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        def take():
            conn = self.engine.connect()
            try:
                # waited for in the server (no polling): lock_timeout ends the wait with SQLSTATE 55P03
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(LOCK_WAIT_SECONDS * 1000)}ms'"))
                conn.execute(text("SELECT pg_advisory_lock(:c, :s)"), {"c": LOCK_CLASS, "s": study_id})
                conn.commit()  # a session-level lock outlives the transaction (and SET LOCAL ends with it)
                return conn
            except OperationalError as e:
                if (getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)) != "55P03":
                    conn.invalidate()
                    raise  # an outage: retried
                conn.rollback()
                conn.close()
                return None
            except BaseException:
                conn.invalidate()
                raise

        conn = self._retry("study_lock", take)
        if conn is None:
            logger.warning("the study's budget lock was held by another worker for over %.0fs: going on without "
                           "it (the surplus check keeps the budget)", LOCK_WAIT_SECONDS)
        try:
            yield conn is not None
        finally:
            if conn is not None:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:c, :s)"), {"c": LOCK_CLASS, "s": study_id})
                    conn.commit()
                    conn.close()
                except Exception:  # the connection is gone, and its lock with it: never pool it back
                    conn.invalidate()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[bool]:
        from hpo.store.sqlite import sqlite_path

        try:
            import fcntl
        except ImportError:  # not a POSIX system
            yield False
            return
        path = sqlite_path(self.url)
        if path is None:  # in memory: one process
            yield False
            return
        lock = path.with_name(path.name + "-budget.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            logger.debug("no budget lock beside %s (%s): going on without it", path, e)
            yield False
            return
        try:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        logger.warning("the study's budget lock %s was held by another worker for over %.0fs: going "
                                       "on without it (the surplus check keeps the budget)", lock, LOCK_WAIT_SECONDS)
                        held = False
                        break
                    time.sleep(POLL_SECONDS * (1 + random.random()))
            yield held
        finally:
            os.close(fd)  # releases the flock
