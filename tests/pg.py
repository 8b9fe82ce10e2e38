"""A real PostgreSQL server for tests: Debian's postgresql, initialised in a temp dir, on loopback.

``initdb`` refuses to run as root, so as root the data dir belongs to the ``postgres`` user and the
server runs through ``runuser``. Password authentication (scram) is on, so tests prove the password
comes from the environment (PGPASSWORD), never from a URL or YAML.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "hpo-test-password"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("Debian's postgresql is not installed (apt-get install postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, user="postgres", group="postgres")
            os.chmod(self.dir, 0o777)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, user="postgres", group="postgres")
        self._run("initdb", "-D", str(self.data), "-U", "hpo", "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://hpo@127.0.0.1:{self.port}/postgres"

    def env(self) -> dict:
        return {"PGPASSWORD": PASSWORD}

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://hpo@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with psql as the test user; its output (unaligned, tuples only)."""
        cmd = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "hpo", "-d", database,
               "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "PGPASSWORD": PASSWORD})
        if r.returncode:
            raise RuntimeError(f"psql {sql!r} failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server; its storage URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    @property
    def running(self) -> bool:
        r = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
        return r.returncode == 0

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        self._wait()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def _wait(self) -> None:
        for _ in range(120):
            r = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.25)
        raise RuntimeError("PostgreSQL did not start: " + (self.dir / "log").read_text()[-2000:])

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
