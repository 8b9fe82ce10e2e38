"""Every storage URL form the service accepts runs the same tiny toy study end to end through the real CLI.

A SQLite file, a journal file and a PostgreSQL database (a real server, the ``postgres`` fixture): ``hpo
create`` stores the study and its baselines, ``hpo run`` runs its trials, ``hpo status`` reads them back and
``hpo export`` writes the best config. URLs that must be refused (a password in the URL, a secret query key,
no scheme) are refused by ``hpo run`` with exit 2 before anything is written. The full list of refused
forms is in ``tests/test_secrets.py``; here a few representative ones.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import hpo_cli

N_TRIALS = 3
SECRET = "Hunter2-contract-XYZ"


def _with_storage(path: Path, url: str) -> Path:
    """The toy study file with its ``storage:`` line set to ``url``."""
    lines = [f"storage: {url}" if line.startswith("storage:") else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _status_row(stdout: str, name: str) -> dict[str, int]:
    """The counts of study ``name`` in ``hpo status`` output."""
    for line in stdout.splitlines():
        m = re.match(rf"^{re.escape(name)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            return dict(zip(("complete", "pruned", "failed", "running", "queued"), map(int, m.groups())))
    raise AssertionError(f"study {name} not in the status output:\n{stdout}")


def _run_study_end_to_end(url: str, name: str, tmp_path: Path, toy_study) -> None:
    path = _with_storage(toy_study(name=name, n_trials=N_TRIALS), url)
    r = hpo_cli("create", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = hpo_cli("status", name, "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _status_row(r.stdout, name)["queued"] == 2  # the two baselines, enqueued by create

    r = hpo_cli("run", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "best config:" in r.stdout

    r = hpo_cli("status", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    row = _status_row(r.stdout, name)
    assert row["complete"] >= 2 and row["complete"] + row["pruned"] == N_TRIALS, row
    assert row["failed"] == row["running"] == row["queued"] == 0, row

    out = tmp_path / "best.yaml"
    r = hpo_cli("export", name, "--storage", url, "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    best = yaml.safe_load(out.read_text())
    assert best["task"]["family"] == "toy" and {"lr", "hidden"} <= set(best["config"]), best
    assert best["source"]["study"] == name and best["source"]["storage"] == url
    assert best["source"]["values"]["val_mae"] > 0


@pytest.mark.slow
def test_sqlite_file(tmp_path, toy_study):
    db = tmp_path / "store" / "hpo.db"
    _run_study_end_to_end(f"sqlite:///{db}", "contract_sqlite", tmp_path, toy_study)
    assert db.is_file()


@pytest.mark.slow
def test_journal_file(tmp_path, toy_study):
    log = tmp_path / "store" / "hpo.log"
    _run_study_end_to_end(f"journal://{log}", "contract_journal", tmp_path, toy_study)
    assert log.is_file() and log.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql(postgres, tmp_path, toy_study):
    database = f"contract_{os.getpid()}"
    postgres.create_database(database)
    _run_study_end_to_end(postgres.url_for(database), "contract_pg", tmp_path, toy_study)
    assert "contract_pg" in postgres.psql("select study_name from studies", database)


REFUSED = [  # (url, what the one-line refusal says)
    (f"postgresql+psycopg://hpo:{SECRET}@127.0.0.1:5/db", "a password must not be written in the URL"),
    ("sqlite:///{tmp}/hpo.db?token=" + SECRET, "not even as a query key (token:"),
    ("journal://{tmp}/hpo.log?password=" + SECRET, "not even as a query key (password:"),
    ("{tmp}/hpo.db", "must look like sqlite:///runs/hpo.db"),
]


@pytest.mark.parametrize("url, message", REFUSED, ids=["userinfo-password", "sqlite-token", "journal-password", "no-scheme"])
def test_refused_urls_write_nothing(url, message, tmp_path, toy_study):
    path = toy_study(name="contract_refused", n_trials=N_TRIALS)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = hpo_cli("run", path, "--storage", url.format(tmp=tmp_path), cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr[-3000:])
    assert message in r.stderr and SECRET not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no store, no runs/, no cache
