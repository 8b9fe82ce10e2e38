"""Scaling of the service on one machine, each figure a ratio against a baseline from the same run.

1. Throughput: trials/hour of the same short study with 1 worker and with 2 local workers
   (target: 2 workers >= 1.8x one). Each worker gets cores // workers torch threads.
2. Orchestration overhead per trial on SQLite, Optuna's journal file and PostgreSQL: the wall time of
   trivial trials run through the service minus the bare training time of the same configs.
3. Ray Tune backend vs local backend, same study, same concurrency (target: Ray <= 1.2x local wall
   time), with the Ray cluster already running (as on a real cluster) and including its start.

    python bench/scaling.py            # ~6 minutes on 2 cores
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


def run(path: Path, tmp: Path, workers: int = 1, backend: str = "local") -> float:
    from hpo.runner import RunOptions, run_study
    from hpo.spec import load_study
    from hpo.spec.load import apply_sets
    from hpo.yaml_io import load_yaml

    study = load_study(path)
    raw = apply_sets(load_yaml(path), [], str(path))
    opts = RunOptions(workers=workers, cache_dir=str(tmp / "cache"), checkpoints=False)
    t0 = time.perf_counter()
    if backend == "ray":
        from hpo.backends.ray_backend import run_ray

        run_ray(study, opts, address="auto", raw=raw)
    else:
        run_study(study, opts, raw=raw, poll_seconds=0.2)
    return time.perf_counter() - t0


def bare_time(path: Path, tmp: Path) -> float:
    """Seconds the bare loop needs for the configs of a finished study (same process, same threads)."""
    import optuna

    from hpo.cache import DataCache
    from hpo.spec import load_study
    from hpo.storage import open_storage
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
    ap.add_argument("--trials", type=int, default=48, help="trials of the 1-vs-2-workers study (2 workers pay their start-up once)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="hpo-scaling-"))
    n = 6 if args.quick else args.trials
    epochs, samples = (4, 512) if args.quick else (10, 2048)
    out: dict = {"cpus": os.cpu_count(), "trials": n, "epochs": epochs, "samples": samples}

    # 1. one vs two workers
    t1 = run(write_study(tmp, "w1", n, epochs, samples, f"sqlite:///{tmp}/w1.db"), tmp, workers=1)
    t2 = run(write_study(tmp, "w2", n, epochs, samples, f"sqlite:///{tmp}/w2.db"), tmp, workers=2)
    out["throughput"] = {"one_worker_trials_per_h": round(n / t1 * 3600, 1), "two_workers_trials_per_h": round(n / t2 * 3600, 1),
                         "speedup": round(t1 / t2, 3), "one_worker_s": round(t1, 2), "two_workers_s": round(t2, 2)}
    print(f"1 worker : {n} trials in {t1:.1f}s = {n / t1 * 3600:.0f} trials/h")
    print(f"2 workers: {n} trials in {t2:.1f}s = {n / t2 * 3600:.0f} trials/h  -> speedup {t1 / t2:.2f}x (target >= 1.8x)")

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

    # 3. Ray vs local, same study, same concurrency (2)
    if not args.no_ray:
        import ray

        rn = 4 if args.quick else 24
        t_start = time.perf_counter()
        from hpo.backends.ray_backend import _local_runtime_env

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env=_local_runtime_env())
        start = time.perf_counter() - t_start
        try:
            ray_path = write_study(tmp, "ray", rn, epochs, samples, f"sqlite:///{tmp}/ray.db")
            ray_path.write_text(ray_path.read_text() + "backend: ray\nray: {cpus_per_trial: 1, scheduler: none}\n")
            t_ray = run(ray_path, tmp, backend="ray")
        finally:
            ray.shutdown()
        t_local = run(write_study(tmp, "local2", rn, epochs, samples, f"sqlite:///{tmp}/l2.db"), tmp, workers=2)
        out["ray"] = {"trials": rn, "ray_s": round(t_ray, 2), "ray_cluster_start_s": round(start, 2), "local_s": round(t_local, 2),
                      "ratio": round(t_ray / t_local, 3), "ratio_with_start": round((t_ray + start) / t_local, 3)}
        print(f"ray vs local ({rn} trials, 2 at a time): ray {t_ray:.1f}s (+{start:.1f}s cluster start) vs local {t_local:.1f}s "
              f"-> {t_ray / t_local:.2f}x (target <= 1.2x), {((t_ray + start) / t_local):.2f}x with the start")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    from common import machine, save

    save("scaling" + ("-quick" if args.quick else ""), {"machine": machine(), **out})
    return out


if __name__ == "__main__":
    main()
