"""docker/: Docker cannot run here, so check the files' structure and that every command they run is
an `hpo` command line the CLI accepts (the same commands the other tests exercise); that deployments are
private by default (nothing published beyond loopback, Ray with token auth); and run the `share`
profile's nginx template for real, with Debian's nginx, in front of a real `hpo dashboard`."""

import base64
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from hpo.cli import build_parser
from tests.conftest import ROOT, free_port, require

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
    assert s["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    for name in ("create", "worker", "worker-gpu", "dashboard"):
        cmd = s[name]["command"]
        _parse_hpo(cmd)
        url = cmd[cmd.index("--storage") + 1]
        assert url.startswith("postgresql+psycopg://hpo@") and ":" not in url.split("@")[0].split("//")[1]  # no password
        assert s[name]["environment"]["PGPASSWORD"].startswith("${HPO_DB_PASSWORD")
    assert s["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("worker", "worker-gpu"):  # time for SIGTERM to record the running trial before docker's SIGKILL
        assert int(s[name]["stop_grace_period"].rstrip("s")) >= 30


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


def _defaults(text: str) -> str:
    """A compose value with every ${VAR:-default} replaced by its default (what `up` uses unset)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", str(text))


def _host_ip(port_spec) -> str | None:
    """The host address of a compose port mapping ("IP:HOST:CONTAINER"; None when it has none, i.e. all
    interfaces)."""
    if isinstance(port_spec, dict):
        return port_spec.get("host_ip")
    parts = _defaults(port_spec).split(":")
    return parts[0] if len(parts) == 3 else None


def test_compose_publishes_nothing_beyond_loopback_and_has_an_authenticating_share_profile():
    text = (DOCKER / "compose.yaml").read_text()
    doc = yaml.safe_load(text)
    s = doc["services"]
    published = {name: svc.get("ports", []) for name, svc in s.items() if svc.get("ports")}
    assert "postgres" not in published and "expose" not in s["postgres"]  # the database: compose network only
    assert set(published) == {"dashboard", "dashboard-proxy"}, published
    for name, ports in published.items():
        for spec in ports:
            assert _host_ip(spec) == "127.0.0.1", f"{name} publishes {spec} beyond loopback"
    # the share profile: nginx with basic auth from a secret file, in front of the dashboard
    proxy = s["dashboard-proxy"]
    assert proxy["profiles"] == ["share"] and proxy["image"].startswith("nginx:")
    assert proxy["secrets"] == ["htpasswd"] and "file" in doc["secrets"]["htpasswd"]
    assert proxy["environment"]["HPO_HTPASSWD_FILE"] == "/run/secrets/htpasswd"
    assert proxy["environment"]["HPO_DASHBOARD_UPSTREAM"] == "dashboard:8080"
    mount = next(v for v in proxy["volumes"] if "dashboard.conf.template" in v)
    src, dst = mount.split(":")[:2]
    assert (DOCKER / src).resolve() == DOCKER / "nginx" / "dashboard.conf.template" and dst.startswith("/etc/nginx/templates/")
    for name in ("dashboard", "postgres"):
        assert "share" not in s[name].get("profiles", [])  # the dashboard itself stays private in every profile
    # no secret written in the file: every password-like value comes from the environment
    for name, svc in s.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"pass|secret|token", key, re.I) and not key.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name}.{key} holds a literal secret"
    assert "--profile share" in text and "htpasswd" in text


def test_ray_cluster_uses_token_auth_and_no_public_dashboard():
    path = DOCKER / "ray" / "cluster.yaml"
    text = path.read_text()
    doc = yaml.safe_load(text)
    head = " ".join(doc["head_start_ray_commands"])
    starts = [c for c in doc["head_start_ray_commands"] + doc["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "--env RAY_AUTH_MODE=token" in doc["docker"]["run_options"]  # drivers and jobs in the containers too
    assert "--dashboard-host=127.0.0.1" in head or "--include-dashboard=false" in head
    assert "0.0.0.0" not in text
    assert "~/.ray/auth_token" in doc["file_mounts"]  # the token file is synced, never written here
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text)
    # the floor admits only Ray releases that have token auth (2.52)
    pyproject = (ROOT / "pyproject.toml").read_text()
    floors = re.findall(r"ray\[tune\]>=([0-9.]+)", pyproject)
    assert floors and all(tuple(map(int, f.split("."))) >= (2, 52) for f in floors), floors


# ------------------------------------------------------------------------ the share profile, for real
def _ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _envsubst(text: str, env: dict) -> str:
    """What the nginx image's entrypoint does with a template: ``envsubst`` of the defined variables only."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), text)


def _request(url: str, method: str = "GET", auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url, method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait_http(url: str, proc: subprocess.Popen, what: str, deadline: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (401 is an answer)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{what} did not answer on {url}")


@pytest.mark.slow
def test_share_profile_nginx_requires_credentials_in_front_of_a_real_dashboard(tmp_path, report_figures):
    """The template the `share` profile mounts, run by Debian's nginx on loopback in front of a real
    `hpo dashboard`: 401 without or with wrong credentials (GET and DELETE), 200 with the right ones,
    and an unauthenticated DELETE /api/studies/1 leaves the study in the store."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    require("nginx (Debian package nginx-light)", found=nginx is not None)
    import optuna

    db = tmp_path / "hpo.db"
    url = f"sqlite:///{db}"
    st = optuna.create_study(study_name="kept", storage=url)
    st.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    dash_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dash = subprocess.Popen([sys.executable, "-m", "hpo.cli", "dashboard", "--storage", url, "--host", "127.0.0.1",
                             "--port", str(dash_port), "--artifacts", str(tmp_path / "art")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proxy = None
    try:
        _wait_http(f"http://127.0.0.1:{dash_port}/api/studies", dash, "hpo dashboard")
        user, password = "alice", "correct horse battery staple"
        (tmp_path / "htpasswd").write_text(f"{user}:{_ssha(password)}\n")
        conf_d = tmp_path / "conf.d"
        conf_d.mkdir()
        template = (DOCKER / "nginx" / "dashboard.conf.template").read_text()
        assert set(re.findall(r"\$\{(\w+)\}", template)) == {"HPO_PROXY_LISTEN", "HPO_DASHBOARD_UPSTREAM", "HPO_HTPASSWD_FILE"}
        (conf_d / "dashboard.conf").write_text(_envsubst(template, {
            "HPO_PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
            "HPO_DASHBOARD_UPSTREAM": f"127.0.0.1:{dash_port}",
            "HPO_HTPASSWD_FILE": str(tmp_path / "htpasswd"),
        }))
        # the image's nginx.conf in brief: the http block includes conf.d/*.conf
        temp = {k: tmp_path / k for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (tmp_path / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\nerror_log {tmp_path / 'error.log'};\npid {tmp_path / 'nginx.pid'};\n"
            + "events { worker_connections 64; }\nhttp {\n  access_log off;\n"
            + "".join(f"  {k}_temp_path {v};\n" if k != "body" else f"  client_body_temp_path {v};\n" for k, v in temp.items())
            + f"  include {conf_d}/*.conf;\n}}\n")
        check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{proxy_port}"
        _wait_http(base + "/", proxy, "nginx")
        refused = 0
        for path in ("/dashboard/", "/api/studies", "/api/studies/1"):
            assert _request(base + path) == 401
            assert _request(base + path, auth=(user, "wrong")) == 401
            assert _request(base + path, auth=("mallory", password)) == 401
            refused += 3
        for method in ("DELETE", "POST", "PUT"):
            assert _request(base + "/api/studies/1", method=method) == 401
            assert _request(base + "/api/studies/1", method=method, auth=(user, "wrong")) == 401
            refused += 2
        assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["kept"]
        assert len(optuna.load_study(study_name="kept", storage=url).trials) == 2
        assert _request(base + "/api/studies", auth=(user, password)) == 200
        assert _request(base + "/dashboard/", auth=(user, password)) == 200
        report_figures("share profile (nginx basic auth)", {"unauthenticated requests refused": refused, "studies lost": 0})
    finally:
        for p in (proxy, dash):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM if p is proxy else signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
