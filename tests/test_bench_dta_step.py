"""bench/dta_step.py refuses bad flags before it loads data or writes a result: exit 2 and ``--flag: rule, but got X``."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps: must be >= 1, but got 0"),
    (["--threads", "-1"], "--threads: must be >= 1, but got -1"),
    (["--data", "no-such-folder"], "--data: must be DeepDTA's Davis folder, but got no-such-folder (not a folder)"),
])
def test_bad_flags_exit_2_with_the_rule_and_write_nothing(tmp_path, args, message):
    env = {"HPO_BENCH_DATA": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "dta_step.py"), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert r.stdout == ""  # nothing measured: the table is printed before the result is saved
