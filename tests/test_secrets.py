"""No secret in any output (issue #13, item 3).

A password-like query key in a storage URL (``?password=``, ``?token=``, ``?api_key=``, ... in any case,
percent-encoded too) is refused like a user-info password: one line, exit 2, nothing opened or written.
Every URL that reaches output goes through :func:`hpo.spec.urls.redact`. ``?password_env=NAME`` keeps
working against a real PostgreSQL server, and the variable's value never appears in stdout, stderr, any
written file or the store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo.errors import SpecError, UsageError
from hpo.spec.urls import check_url, redact
from tests.conftest import ROOT, hpo_cli

SECRET = "Hunter2-s3cr3t-XYZ"

SECRET_QUERIES = [  # (query, the key the refusal names)
    (f"password={SECRET}", "password"),
    (f"PASSWORD={SECRET}", "password"),
    (f"Password={SECRET}&sslmode=require", "password"),
    (f"passwd={SECRET}", "passwd"),
    (f"pwd={SECRET}", "pwd"),
    (f"pass={SECRET}", "pass"),
    (f"secret={SECRET}", "secret"),
    (f"client_secret={SECRET}", "client_secret"),
    (f"token={SECRET}", "token"),
    (f"access_token={SECRET}", "access_token"),
    (f"api_key={SECRET}", "api_key"),
    (f"apiKey={SECRET}", "apikey"),
    (f"API-KEY={SECRET}", "api_key"),
    (f"sslpassword={SECRET}", "sslpassword"),
    (f"pass%77ord={SECRET}", "password"),  # percent-encoded key
    (f"sslmode=require;password={SECRET}", "password"),  # ; as separator
]
BASES = ["postgresql+psycopg://hpo@db.example:5432/hpo", "sqlite:///runs/hpo.db", "journal://runs/x.log"]


@pytest.mark.parametrize("query, key", SECRET_QUERIES)
def test_password_like_query_keys_are_refused_in_one_redacted_line(query, key):
    for base in BASES:
        url = f"{base}?{query}"
        with pytest.raises(UsageError) as e:
            check_url(url)
        msg = str(e.value)
        assert SECRET not in msg and "\n" not in msg
        assert f"not even as a query key ({key}:" in msg and "password_env=NAME" in msg
        assert SECRET not in redact(url) and "=***" in redact(url)


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://hpo:{SECRET}@db/hpo",
    f"postgresql://hpo:{SECRET}@db:5432/hpo?sslmode=require",
    f"postgresql://hpo:pa/ss{SECRET}@db/hpo",  # unencoded / in the password: SQLAlchemy still reads it as one
    f"postgresql://hpo:pa?ss{SECRET}@db/hpo",
    f"postgresql://hpo@db/hpo#token={SECRET}",
])
def test_passwords_anywhere_in_the_url_are_refused_and_redacted(url):
    with pytest.raises(UsageError) as e:
        check_url(url)
    assert SECRET not in str(e.value) and "a password must not be written in the URL" in str(e.value)
    assert SECRET not in redact(url)


@pytest.mark.parametrize("url", [
    "sqlite:///runs/hpo.db",
    "sqlite:////abs/path/hpo.db",
    "postgresql+psycopg://hpo@db.example:5432/hpo",
    "postgresql+psycopg://hpo@db:5432/hpo?password_env=HPO_DB_PASSWORD&sslmode=require",
    "postgresql+psycopg://hpo@db/hpo?passfile=/run/secrets/pgpass",
    "journal://runs/x.log",
])
def test_urls_without_secrets_pass_and_are_printed_unchanged(url):
    check_url(url)
    assert redact(url) == url  # the one redaction changes nothing else


def test_redact_never_fails_and_masks_what_it_cannot_parse():
    for url in [f"postgresql://u:{SECRET}@[::1/db", f"postgresql://u@[::1/db?token={SECRET}", f"weird:{SECRET}@", ""]:
        assert SECRET not in redact(url)


def test_study_file_storage_with_a_secret_is_refused_and_redacted(tmp_path, toy_study):
    from hpo.spec import load_study

    path = toy_study()
    path.write_text(path.read_text().replace(f"storage: sqlite:///{tmp_path / 'hpo.db'}",
                                             f"storage: postgresql+psycopg://hpo@db/hpo?Token={SECRET}"))
    with pytest.raises(SpecError) as e:
        load_study(path, check_data=False)
    lines = e.value.lines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: storage: a password must not be written in the URL")
    assert SECRET not in lines[0] and "but got 'postgresql+psycopg://hpo@db/hpo?Token=***'" in lines[0]


@pytest.mark.parametrize("command", ["run", "create", "worker"])
def test_a_secret_in_storage_flag_is_refused_before_anything_is_read_or_written(tmp_path, toy_study, monkeypatch, capsys, command):
    from hpo.cli import main

    path = toy_study()
    monkeypatch.chdir(tmp_path)
    assert main([command, str(path), "--storage", f"sqlite:///{tmp_path / 'other.db'}?password={SECRET}"]) == 2
    err = capsys.readouterr().err
    assert "a password must not be written in the URL" in err and SECRET not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "other.db").exists()  # no data check, no store


# ------------------------------------------------------------------------------ the CLI, for real
def _store_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


@pytest.mark.slow
def test_every_command_refuses_a_secret_url_in_one_line_and_leaks_nothing(tmp_path, toy_study, report_figures):
    """run, create, worker, validate (study file and --set), status, export (yaml/json/cli), report,
    dashboard, narrow, reevaluate: each refuses `?password=` etc. in one line, exit 2; the secret is in no
    output, no written file and not in the SQLite store's bytes (which do not change)."""
    path = toy_study(n_trials=2)
    db = tmp_path / "hpo.db"
    r = hpo_cli("run", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = _store_bytes(db)
    secret_url = f"sqlite:///{db}?password={SECRET}"
    bad_study = tmp_path / "bad.yaml"
    bad_study.write_text(path.read_text().replace(f"storage: sqlite:///{db}", f"storage: sqlite:///{db}?Api_Key={SECRET}"))
    attempts = {
        "run": ["run", path, "--storage", secret_url],
        "run (study file)": ["run", bad_study],
        "create": ["create", path, "--storage", f"sqlite:///{db}?token={SECRET}"],
        "worker": ["worker", path, "--storage", f"sqlite:///{db}?PWD={SECRET}"],
        "validate (study file)": ["validate", bad_study],
        "validate (--set)": ["validate", path, "--set", f"storage=postgresql://hpo@db/hpo?secret={SECRET}"],
        "status": ["status", "--storage", secret_url],
        "export yaml": ["export", "toy", "--storage", secret_url, "--out", tmp_path / "best.yaml"],
        "export json": ["export", "toy", "--storage", secret_url, "--format", "json", "--out", tmp_path / "best.json"],
        "export cli": ["export", "toy", "--storage", secret_url, "--format", "cli"],
        "report": ["report", "toy", "--storage", secret_url, "--out", tmp_path / "r.html"],
        "dashboard": ["dashboard", "--storage", f"postgresql+psycopg://hpo:{SECRET}@127.0.0.1:1/db", "--port", "1"],
        "narrow": ["narrow", "toy", "--storage", secret_url, "--top", "1", "--out", tmp_path / "n.yaml"],
        "reevaluate": ["reevaluate", "toy", "--storage", secret_url, "--top", "1", "--seeds", "1"],
    }
    refused = 0
    for name, argv in attempts.items():
        r = hpo_cli(*argv, cwd=tmp_path, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.returncode, r.stderr[-2000:])
        assert SECRET not in r.stdout + r.stderr, name
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and "a password must not be written in the URL" in errors[0], (name, lines)
        assert "Traceback" not in r.stderr, name
        refused += 1
    assert _store_bytes(db) == before  # not opened for writing, not changed
    assert SECRET.encode() not in before
    assert not [p for p in ("best.yaml", "best.json", "r.html", "n.yaml") if (tmp_path / p).exists()]
    assert _files_containing(tmp_path, SECRET.encode()) == [str(bad_study)]  # only the file we wrote it in
    with sqlite3.connect(db) as conn:  # the store's content, read through SQLite too
        dump = "\n".join(conn.iterdump())
    assert SECRET not in dump
    report_figures("secrets: URLs with a secret refused by the CLI", {"refused": refused, "of": len(attempts), "secrets leaked": 0})


def _env_without_pg_password(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _cli(*args, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpo.cli", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _dashboard_first_line(url: str, cwd: Path, env: dict, tmp_path: Path) -> tuple[str, str]:
    from tests.conftest import free_port

    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "dashboard", "--storage", url, "--host", "127.0.0.1",
                             "--port", str(free_port()), "--artifacts", str(tmp_path / "artifacts")],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and not line:
            if proc.poll() is not None:
                break
            line = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest_out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest_out, err = proc.communicate()
    return line + rest_out, err


@pytest.mark.slow
@pytest.mark.postgres
def test_password_env_works_and_its_value_never_appears(postgres, tmp_path, toy_study, report_figures):
    """A real PostgreSQL server with password authentication, no PGPASSWORD: the password comes only from
    the variable named by ?password_env=. run, status, export (yaml/json/cli), report, the dashboard's
    start line, validate and an error all work or fail cleanly, and the password appears in no output,
    no file under the working folder, and no table of the store."""
    from tests.pg import PASSWORD

    name = f"secret_env_{os.getpid()}_{int(time.time())}"
    url = postgres.url + "?password_env=HPO_TEST_SECRET_PW"
    env = _env_without_pg_password(HPO_TEST_SECRET_PW=PASSWORD)
    path = toy_study(name=name, n_trials=2)
    path.write_text(path.read_text().replace(f"storage: sqlite:///{tmp_path / 'hpo.db'}", f"storage: {url}"))
    outputs: dict[str, str] = {}

    r = _cli("-vv", "run", path, cwd=tmp_path, env=env)  # debug logs too
    assert r.returncode == 0, r.stderr[-3000:]
    outputs["run"] = r.stdout + r.stderr
    assert "password_env=HPO_TEST_SECRET_PW" in r.stdout  # the URL is shown, naming the variable only
    for label, argv in {
        "status": ["status", "--storage", url],
        "export yaml": ["export", name, "--storage", url, "--out", tmp_path / "best.yaml"],
        "export json": ["export", name, "--storage", url, "--format", "json", "--out", tmp_path / "best.json"],
        "export cli": ["export", name, "--storage", url, "--format", "cli"],
        "report": ["report", name, "--storage", url, "--out", tmp_path / "report.html"],
        "validate": ["validate", path],
    }.items():
        r = _cli(*argv, cwd=tmp_path, env=env)
        assert r.returncode == 0, (label, r.stderr[-3000:])
        outputs[label] = r.stdout + r.stderr
    assert "storage: postgresql+psycopg://hpo@" in (tmp_path / "best.yaml").read_text()
    out, err = _dashboard_first_line(url, tmp_path, env, tmp_path)
    assert out.startswith("optuna-dashboard on postgresql+psycopg://hpo@"), (out, err[-2000:])
    outputs["dashboard"] = out + err
    # errors: the variable unset, and a wrong password in it (the server refuses): one line, no value
    r = _cli("status", "--storage", postgres.url + "?password_env=HPO_TEST_UNSET_PW", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "HPO_TEST_UNSET_PW is not set" in r.stderr
    outputs["unset variable"] = r.stdout + r.stderr
    wrong = "Wr0ng-" + PASSWORD
    r = _cli("status", "--storage", url, cwd=tmp_path, env={**env, "HPO_TEST_SECRET_PW": wrong}, timeout=400)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    outputs["wrong password"] = r.stdout + r.stderr

    leaks = {label: text for label, text in outputs.items() if PASSWORD in text or wrong in text}
    assert not leaks, list(leaks)
    assert _files_containing(tmp_path, PASSWORD.encode()) == []
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="hpo", dbname="postgres", password=PASSWORD) as conn:
        tables = [t for (t,) in conn.execute("select table_name from information_schema.tables where table_schema = 'public'")]
        assert "trials" in tables
        dump = "".join(str(row) for t in tables for row in conn.execute(f'select t::text from "{t}" t'))
    assert name in dump and PASSWORD not in dump and wrong not in dump
    report_figures("secrets: password_env on PostgreSQL", {"commands checked": len(outputs), "tables searched": len(tables),
                                                           "secrets leaked": len(leaks)})
