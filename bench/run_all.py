"""Run every benchmark (``make bench``), or every one at a tiny budget (``make bench-quick``, which CI
runs so the benchmarks cannot rot). Results are written to runs/bench/*.json; BENCHMARKS.md records
the figures of full runs with their commands.

    python bench/run_all.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, command without --quick, reads the shared real data[, arguments of the full run only]); order: the
# search benchmarks feed published.py their best configs
SUITE = [
    ("overhead", ["overhead.py"], False),
    ("scaling", ["scaling.py"], False),
    ("report_scale", ["report_scale.py"], False),
    ("scale", ["scale.py"], False),
    ("throughput", ["throughput.py"], True),
    ("traffic_throughput", ["traffic_throughput.py"], True),
    ("pruning", ["pruning.py"], True),
    ("search_vs_plans", ["search_vs_plans.py"], True),
    ("published", ["published.py"], True),
    ("dta_davis", ["dta_davis.py"], True),
    ("dta_cost", ["dta_cost.py"], True),
    ("dta_step", ["dta_step.py"], True),
    ("crystal_graphs", ["crystal_graphs.py"], True),
    # 2-minute arms keep `make bench` under 30 minutes; the 30- and 60-minute arms are flags (BENCHMARKS.md)
    ("time_to_quality", ["time_to_quality.py"], True, ["--minutes", "2"]),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: checks every benchmark runs")
    ap.add_argument("--only", nargs="+", choices=[n for n, *_ in SUITE])
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from common import SHARED_DATA

    have_data = SHARED_DATA.is_dir()
    if not have_data:
        print(f"real data not found at {SHARED_DATA} (set HPO_BENCH_DATA): the benchmarks on it are skipped")
    failed, skipped = [], []
    for name, cmd, needs_data, *full_only in SUITE:
        if args.only and name not in args.only:
            continue
        if needs_data and not have_data:
            skipped.append(name)
            continue
        full = [sys.executable, str(HERE / cmd[0]), *cmd[1:], *(["--quick"] if args.quick else [a for f in full_only for a in f])]
        print(f"\n=== {name}: {' '.join(full[1:])}", flush=True)
        t0 = time.monotonic()
        r = subprocess.run(full, cwd=HERE)
        print(f"=== {name}: {'ok' if r.returncode == 0 else f'FAILED ({r.returncode})'} in {time.monotonic() - t0:.0f}s", flush=True)
        if r.returncode != 0:
            failed.append(name)
    if skipped:
        print(f"\nskipped (no real data): {', '.join(skipped)}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    print("\nall benchmarks ran" if not skipped else "\nthe others ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
