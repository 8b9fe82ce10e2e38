"""optuna-dashboard served on loopback and the HTML report, loaded in real headless Chromium."""

import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from hpo.analysis.dashboard import publish_to_dashboard
from hpo.analysis.report import build_report
from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.store.stored import load_stored_study
from tests.conftest import ROOT, chromium, free_port, require

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def study_db(toy_study, tmp_path):
    study = load_study(toy_study(name="browser-toy", n_trials=4))
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    publish_to_dashboard(load_stored_study(study.storage_url(), study.name))  # as `hpo run` does at the end
    return study


def test_dashboard_renders_the_study_and_its_trials(study_db, tmp_path):
    require("chromium")
    port = free_port()
    url = study_db.storage_url()
    server = subprocess.Popen([sys.executable, "-m", "hpo.cli", "dashboard", "--storage", url, "--port", str(port),
                               "--artifacts", str(tmp_path / "artifacts")], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        page = f"http://127.0.0.1:{port}/dashboard/studies/1"
        r = chromium("--virtual-time-budget=10000", "--dump-dom", page, user_data_dir=tmp_path / "chrome-dom")
        dom = r.stdout
        assert "browser-toy" in dom, r.stderr[-2000:]
        assert "History" in dom and "val_mae" in dom
        text = _text(chromium("--virtual-time-budget=10000", "--dump-dom", page + "/trials", user_data_dir=tmp_path / "chrome-list").stdout)
        assert "4 Trials" in text, text[:500]
        for t in load_stored_study(url, study_db.name).trials:
            assert f"Trial {t.number} {t.state.name.capitalize()}" in text, text[:800]
        note = _text(chromium("--virtual-time-budget=10000", "--dump-dom", page + "/note", user_data_dir=tmp_path / "chrome-note").stdout)
        assert "Curve diagnosis" in note and "Plans vs tuned" in note and "current" in note
        shot = tmp_path / "dashboard.png"
        chromium("--virtual-time-budget=10000", f"--screenshot={shot}", "--window-size=1400,900", page, user_data_dir=tmp_path / "chrome-shot")
        assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        _keep(shot)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_report_opens_in_chromium_and_draws_its_figures(study_db, tmp_path):
    require("chromium")
    ostudy = load_stored_study(study_db.storage_url(), study_db.name)
    report = build_report(ostudy, tmp_path / "report.html")
    r = chromium("--virtual-time-budget=10000", "--dump-dom", report.as_uri(), user_data_dir=tmp_path / "chrome-r")
    assert "Plans vs tuned" in r.stdout and r.stdout.count("plot-container") >= 4  # plotly drew the figures
    shot = tmp_path / "report.png"
    chromium("--virtual-time-budget=10000", f"--screenshot={shot}", "--window-size=1400,2400", report.as_uri(), user_data_dir=tmp_path / "chrome-s")
    assert shot.exists() and shot.stat().st_size > 50_000
    _keep(shot)


def _text(dom: str) -> str:
    import re

    dom = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def _keep(path):
    """Also keep screenshots under runs/screenshots/ for people to look at."""
    dest = ROOT / "runs" / "screenshots"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dest / path.name)
