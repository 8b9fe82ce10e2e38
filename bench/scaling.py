"""Scaling of the service on one machine, each figure a ratio against a baseline from the same run.

1. Throughput: trials/hour of the same short study with 1 worker and with 2 local workers
   (target: 2 workers >= 1.8x one). Two baselines: 1 worker as `hpo run` starts it (all cores' torch
   threads) and 1 worker with 1 thread (the resources of each of the 2 workers). Rates are taken in the
   steady state (first trial start to last trial end, from the store) and, separately, over the whole
   run including the workers' process start-up. Runs interleave (1w, 1w/1t, 2w, then again) ``--reps``
   times so that drift of the machine hits all alike; medians are reported.
2. Orchestration overhead per trial on SQLite, Optuna's journal file and PostgreSQL: the wall time of
   trivial trials run through the service minus the bare training time of the same configs.
3. Ray Tune backend vs local backend, same study, same concurrency (target: Ray <= 1.2x local wall
   time), with the Ray cluster already running (as on a real cluster), interleaved ``--reps`` times;
   the cluster's start is reported apart.

    python bench/scaling.py            # ~15 minutes on 2 cores
    python bench/scaling.py --quick    # a minute: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STUDY = """
name: {name}
task: {{family: toy, dataset: {{n_samples: {samples}}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
    hidden: [32, 64]
    depth: {{type: int, low: 1, high: 2}}
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: {n}}}
training: {{epochs: {epochs}, batch_size: 32}}
storage: {storage}
artifacts: {artifacts}
"""


def write_study(tmp: Path, name: str, n: int, epochs: int, samples: int, storage: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(STUDY.format(name=name, n=n, epochs=epochs, samples=samples, storage=storage, artifacts=tmp / "art"))
    return p


def run(path: Path, tmp: Path, workers: int = 1, backend: str = "local", threads: int | None = None) -> float:
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study
    from hpo.spec import apply_sets
    from hpo.spec.yaml_io import load_yaml

    study = load_study(path)
    raw = apply_sets(load_yaml(path), [], str(path))
    opts = RunOptions(workers=workers, cache_dir=str(tmp / "cache"), checkpoints=False, threads=threads)
    t0 = time.perf_counter()
    if backend == "ray":
        from hpo.run.backends.ray import run_ray

        run_ray(study, opts, address="auto", raw=raw)
    else:
        run_study(study, opts, raw=raw, poll_seconds=0.2)
    return time.perf_counter() - t0


def steady_span(path: Path) -> tuple[float, int]:
    """Seconds from the first trial's start to the last trial's end, and the trials completed."""
    import optuna

    from hpo.spec import load_study
    from hpo.store.storage import open_storage

    study = load_study(path)
    trials = optuna.load_study(study_name=study.name, storage=open_storage(study.storage_url(), heartbeat=False)).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    return (max(t.datetime_complete for t in done) - min(t.datetime_start for t in trials)).total_seconds(), len(done)


def median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def bare_time(path: Path, tmp: Path) -> float:
    """Seconds the bare loop needs for the configs of a finished study (same process, same threads)."""
    import optuna

    from hpo.data.cache import DataCache
    from hpo.spec import load_study
    from hpo.store.storage import open_storage
    from hpo.train import fit

    study = load_study(path)
    task = study.make_task(DataCache(tmp / "cache"))
    st = optuna.load_study(study_name=study.name, storage=open_storage(study.storage_url(), heartbeat=False))
    total = 0.0
    for t in st.get_trials():
        if "config" not in t.user_attrs:
            continue
        tr, m, d = task.split_config(t.user_attrs["config"])
        splits = task.load(d)
        t0 = time.perf_counter()
        fit(task, splits, tr, m)
        total += time.perf_counter() - t0
    return total


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=48, help="trials of the 1-vs-2-workers study")
    ap.add_argument("--ray-trials", type=int, default=48, help="trials of the Ray-vs-local study")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of the throughput and Ray runs")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="hpo-scaling-"))
    n = 6 if args.quick else args.trials
    if args.quick:
        args.reps = 1
    epochs, samples = (4, 512) if args.quick else (10, 2048)
    out: dict = {"cpus": os.cpu_count(), "trials": n, "epochs": epochs, "samples": samples}

    # 1. one vs two workers, interleaved
    kinds = {"1 worker": dict(workers=1), "1 worker, 1 thread": dict(workers=1, threads=1), "2 workers": dict(workers=2)}
    runs: dict[str, list] = {k: [] for k in kinds}
    for rep in range(args.reps):
        for k, kw in kinds.items():
            name = f"w{rep}-{k.replace(' ', '').replace(',', '-')}"
            path = write_study(tmp, name, n, epochs, samples, f"sqlite:///{tmp}/{name}.db")
            wall = run(path, tmp, **kw)
            span, done = steady_span(path)
            if done != n:
                raise SystemExit(f"{k}: {done} of {n} trials completed")
            runs[k].append({"wall_s": round(wall, 2), "steady_s": round(span, 2)})
            print(f"rep {rep + 1}/{args.reps} {k:<19s}: {n} trials in {wall:6.1f}s ({span:6.1f}s first start -> last end)")
    med = {k: {"wall_s": median([r["wall_s"] for r in v]), "steady_s": median([r["steady_s"] for r in v])} for k, v in runs.items()}
    two = med["2 workers"]
    speed = {base: {"steady": round(med[base]["steady_s"] / two["steady_s"], 3), "with_startup": round(med[base]["wall_s"] / two["wall_s"], 3)}
             for base in ("1 worker", "1 worker, 1 thread")}
    out["throughput"] = {"runs": runs, "median": med, "speedup_2_workers_vs": speed,
                         "trials_per_h_steady": {k: round(n / m["steady_s"] * 3600, 1) for k, m in med.items()}}
    for k, m in med.items():
        print(f"{k:<19s}: {n / m['steady_s'] * 3600:6.0f} trials/h steady, {n / m['wall_s'] * 3600:6.0f} with start-up "
              f"(medians of {args.reps})")
    for base, sp in speed.items():
        print(f"2 workers vs {base:<18s}: {sp['steady']:.2f}x steady, {sp['with_startup']:.2f}x with start-up (target >= 1.8x)")

    # 2. orchestration overhead per trial, per storage (trivial trials: 1 epoch on 64 samples)
    stores = {"sqlite": f"sqlite:///{tmp}/o.db", "journal": f"journal://{tmp}/o.log"}
    pg = None
    if not args.no_postgres:
        try:
            from tests.pg import PostgresServer

            pg = PostgresServer()
            os.environ.update(pg.env())
            stores["postgresql"] = pg.url
        except Exception as e:  # no local server: say so, measure the others
            print(f"postgresql: skipped ({e})")
    m = 20 if args.quick else 100
    out["overhead_ms_per_trial"] = {}
    for name, url in stores.items():
        path = write_study(tmp, f"o-{name}", m, 1, 64, url)
        wall = run(path, tmp)
        bare = bare_time(path, tmp)
        per = (wall - bare) / m * 1000
        out["overhead_ms_per_trial"][name] = {"wall_s": round(wall, 3), "bare_s": round(bare, 3), "overhead_ms": round(per, 1)}
        print(f"overhead {name:<10s}: {m} trivial trials, service {wall:.2f}s vs bare {bare:.2f}s -> {per:.1f} ms/trial")
    if pg is not None:
        pg.close()

    # 3. Ray vs local, same study, same concurrency (2), interleaved
    if not args.no_ray:
        import ray

        rn = 4 if args.quick else args.ray_trials
        t_start = time.perf_counter()
        from hpo.run.backends.ray import _local_runtime_env

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env=_local_runtime_env())
        start = time.perf_counter() - t_start
        t_ray, t_local = [], []
        try:
            for rep in range(args.reps):
                ray_path = write_study(tmp, f"ray{rep}", rn, epochs, samples, f"sqlite:///{tmp}/ray{rep}.db")
                ray_path.write_text(ray_path.read_text() + "backend: ray\nray: {cpus_per_trial: 1, scheduler: none}\n")
                t_ray.append(run(ray_path, tmp, backend="ray"))
                t_local.append(run(write_study(tmp, f"local{rep}", rn, epochs, samples, f"sqlite:///{tmp}/l{rep}.db"), tmp, workers=2))
                print(f"rep {rep + 1}/{args.reps} ray vs local ({rn} trials, 2 at a time): ray {t_ray[-1]:.1f}s, local {t_local[-1]:.1f}s")
        finally:
            ray.shutdown()
        mr, ml = median(t_ray), median(t_local)
        out["ray"] = {"trials": rn, "ray_s": [round(x, 2) for x in t_ray], "local_s": [round(x, 2) for x in t_local],
                      "ray_cluster_start_s": round(start, 2), "ratio": round(mr / ml, 3), "ratio_with_start": round((mr + start) / ml, 3)}
        print(f"ray vs local ({rn} trials, 2 at a time, medians of {args.reps}): ray {mr:.1f}s (+{start:.1f}s cluster start) "
              f"vs local {ml:.1f}s -> {mr / ml:.2f}x (target <= 1.2x), {(mr + start) / ml:.2f}x with the start")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    from common import machine, save

    save("scaling" + ("-quick" if args.quick else ""), {"machine": machine(), **out})
    return out


if __name__ == "__main__":
    main()
