"""Shared fixtures: small study files for the toy task, and running the CLI for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY_SPACE = """
params:
  lr: {type: float, low: 1e-3, high: 3e-2, log: true}
  hidden: [8, 16]
  use_second_modality: {type: bool}
  fusion: {type: categorical, choices: [concat, gated, sum], when: use_second_modality}
  dropout: {type: float, low: 0.0, high: 0.2, step: 0.1}
derived:
  batch_size: "2 * hidden"
baselines:
  current: {lr: 1.0e-2, hidden: 16, use_second_modality: true, fusion: concat, dropout: 0.0}
  single_modality: {extends: current, use_second_modality: false}
"""

TOY_STUDY = """
name: {name}
task: {{family: toy, dataset: {{n_samples: 160}}}}
space: space.yaml
objectives: [val_mae]
sampler: {{type: tpe, seed: 3, n_startup_trials: 3}}
pruner: {{type: median, n_startup_trials: 2, n_warmup_steps: 1}}
budget: {{n_trials: {n_trials}, max_epochs: 6}}
training: {{epochs: 6, scheduler: cosine}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


FAULT_STUDY = """
name: {name}
task: {{family: {family}, dataset: {{n_samples: {n_samples}}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
    hidden: [16, 32]
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: {n}}}
training: {{epochs: {epochs}, batch_size: {batch_size}}}
storage: {storage}
artifacts: {artifacts}
fault_tolerance: {{heartbeat_interval: 1, grace_period: {grace}, max_retry: {max_retry}}}
"""


def fault_study(*, name: str, n: int, storage: str, artifacts, epochs: int = 12, batch_size: int = 8,
                n_samples: int = 512, family: str = "toy", grace: int = 4, max_retry: int = 3) -> str:
    """The text of the small study the fault tests kill, restart and break: a toy (or ``family``)
    task, random sampler, no pruner, heartbeats every second."""
    return FAULT_STUDY.format(name=name, n=n, storage=storage, artifacts=artifacts, epochs=epochs, batch_size=batch_size,
                              n_samples=n_samples, family=family, grace=grace, max_retry=max_retry)


@pytest.fixture
def toy_study(tmp_path: Path):
    """Write a toy study + space into tmp_path; returns a function taking overrides."""

    def make(name: str = "toy", n_trials: int = 5, space: str = TOY_SPACE, extra: str = "") -> Path:
        (tmp_path / "space.yaml").write_text(textwrap.dedent(space))
        text = TOY_STUDY.format(name=name, n_trials=n_trials, db=tmp_path / "hpo.db", artifacts=tmp_path / "artifacts")
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text) + textwrap.dedent(extra))
        return path

    return make


def stored_studies(db: Path) -> list[str]:
    """Names of the studies in a SQLite store ([] when the file or its schema does not exist): what a
    command that must store nothing left behind."""
    import sqlite3

    if not Path(db).exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return [r[0] for r in conn.execute("select study_name from studies")]
        except sqlite3.OperationalError:  # no schema: nothing was ever created
            return []


def hpo_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `hpo` command line in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def require(binary_or_reason: str, found: bool | None = None) -> None:
    """Skip (with a reason) when a system component is missing; in CI (CI=true) fail instead,
    because .ci/run installs every component the tests need."""
    import shutil

    ok = shutil.which(binary_or_reason) is not None if found is None else found
    if ok:
        return
    msg = f"{binary_or_reason} is not available on this machine"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI must install it: see .ci/run)")
    pytest.skip(msg)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium(*args: str, user_data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (skipped with a reason when none can be started; never in CI)."""
    from tests.pg import PostgresServer, pg_bin

    require("postgresql (Debian package)", found=pg_bin() is not None)
    try:
        server = PostgresServer()
    except Exception as e:  # no server could be started here: say why
        require(f"a local PostgreSQL server ({e})", found=False)
    os.environ.setdefault("PGPASSWORD", server.env()["PGPASSWORD"])
    yield server
    server.close()


# ---------------------------------------------------------------------------- figures in the summary
_FIGURES: list[tuple[str, dict]] = []


@pytest.fixture
def report_figures():
    """``report_figures(name, dict)``: figures a test measured, printed in the session summary (so CI
    logs show them for passing tests too)."""
    return lambda name, figures: _FIGURES.append((name, dict(figures)))


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for name, figures in _FIGURES:
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
