"""Shared helpers of the benchmarks: where the real data is, running a study file in-process with
overrides into its own store, and summarising what it spent and found."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("HPO_BENCH_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "runs" / "bench"


def data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"benchmark data not found: {path} (set HPO_BENCH_DATA to the folder with the shared datasets)")
    return path


def machine() -> dict:
    import torch

    return {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


@dataclass
class StudyRun:
    name: str
    wall_s: float
    trials: list = field(default_factory=list)
    directions: list = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return sum(t.user_attrs.get("epochs_run", 0) for t in self.trials)

    def count(self, state: str) -> int:
        return sum(t.state.name == state for t in self.trials)

    def best(self) -> Any:
        done = [t for t in self.trials if t.state.name == "COMPLETE"]
        if not done:
            return None
        sign = 1 if self.directions[0] == "minimize" else -1
        return min(done, key=lambda t: sign * t.value)

    def anytime(self) -> list[float | None]:
        """Best value after each trial (in trial order)."""
        sign = 1 if self.directions[0] == "minimize" else -1
        out, best = [], None
        for t in sorted(self.trials, key=lambda t: t.number):
            if t.state.name == "COMPLETE" and (best is None or sign * t.value < sign * best):
                best = t.value
            if t.user_attrs.get("stop_reason") not in ("constraint", "invalid_config", "surplus"):
                out.append(best)
        return out


def outdir(quick: bool) -> Path:
    """Where a benchmark writes its stores: quick runs never share (or resume) the stores of full runs."""
    return OUT / "quick" if quick else OUT


def run_study_file(path: Path, sets: list[str], tag: str, workdir: Path, **opts) -> StudyRun:
    """Run a study file (with ``--set`` overrides) in this process into its own, fresh SQLite store
    (a store left by an earlier run is removed: a benchmark must not resume an older study)."""
    import optuna

    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.store.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / (tag + ".db")
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    study = load_study(path, [*sets, f"storage={url}", f"artifacts={workdir / 'artifacts'}"])
    t0 = time.perf_counter()
    run_study(study, RunOptions(cache_dir=str(OUT / "cache"), **opts))
    wall = time.perf_counter() - t0
    st = optuna.load_study(study_name=study.name, storage=open_storage(url, heartbeat=False))
    return StudyRun(tag, wall, st.get_trials(), [d.name.lower() for d in st.directions])


def save(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))) for v in r] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)] if cells else [len(h) for h in headers]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])
