"""docker/: Docker cannot run here, so check the files' structure and that every command they run is
an `hpo` command line the CLI accepts (the same commands the other tests exercise)."""

import re
import shlex

import yaml

from hpo.cli import build_parser
from tests.conftest import ROOT

DOCKER = ROOT / "docker"


def _parse_hpo(argv: list[str]) -> None:
    argv = [re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", a) for a in argv]  # compose defaults
    args = build_parser().parse_args(argv)
    assert args.command


def test_compose_has_postgres_dashboard_and_worker_replicas():
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    s = doc["services"]
    pg = s["postgres"]
    assert pg["image"].startswith("postgres:") and any("/var/lib/postgresql/data" in v for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "pgdata" in doc["volumes"]
    assert str(s["worker"]["deploy"]["replicas"]).startswith("${WORKERS")
    assert s["worker"]["depends_on"]["create"]["condition"] == "service_completed_successfully"
    assert s["create"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "8080:8080" in s["dashboard"]["ports"]
    for name in ("create", "worker", "worker-gpu", "dashboard"):
        cmd = s[name]["command"]
        _parse_hpo(cmd)
        url = cmd[cmd.index("--storage") + 1]
        assert url.startswith("postgresql+psycopg://hpo@") and ":" not in url.split("@")[0].split("//")[1]  # no password
        assert s[name]["environment"]["PGPASSWORD"].startswith("${HPO_DB_PASSWORD")
    assert s["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfiles_install_torch_first_and_run_hpo():
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DOCKER / name).read_text()
        torch_at = text.index("torch==2.13.0")
        assert torch_at < text.index('pip install ".[postgres,ray]"')
        assert 'ENTRYPOINT ["hpo"]' in text
        for src in re.findall(r"^COPY (\S+)", text, re.M):
            assert (ROOT / src).exists(), src


def test_ray_cluster_file():
    doc = yaml.safe_load((DOCKER / "ray" / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "head_start_ray_commands", "worker_start_ray_commands", "docker"):
        assert key in doc
    assert any("ray start --head" in c for c in doc["head_start_ray_commands"])
    cmd = next(line for line in (DOCKER / "ray" / "cluster.yaml").read_text().splitlines() if line.startswith("# hpo run"))
    _parse_hpo(shlex.split(cmd[2:])[1:])
