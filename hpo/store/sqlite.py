"""SQLite study files: the file a ``sqlite://`` URL names, and connections configured for many workers
(WAL journal, ``synchronous=NORMAL``, a 60 s busy timeout), so concurrent local workers and the dashboard do
not fail with "database is locked", and reads do not fsync."""

from __future__ import annotations

from pathlib import Path

SQLITE_BUSY_TIMEOUT = 60.0


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite URL (None for in-memory)."""
    rest = url.split("://", 1)[1]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:]) if rest.startswith("/") else Path(rest)


class SQLiteCreator:
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
