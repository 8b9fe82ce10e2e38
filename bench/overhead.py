"""Per-trial overhead of the service vs the bare training loop, and the data-cache hit rate.

The same config (a study's first baseline) is trained by the bare loop (``hpo.train.fit``, no store)
and as trials of a real study run by the real worker loop on a fresh SQLite store (budget checks,
sampling, per-epoch report + pruner, curves/metrics user attrs, best checkpoint upload), in alternating
blocks of two trials in one process so that machine noise hits both alike. Prints the median per-trial wall time of each and their ratio (target: service
<= 1.02x bare). Then runs the study itself with a fresh cache directory and prints the cache hit rate
(processed data built once, then reused by every trial).

    python bench/overhead.py                                    # the quickstart study, 6 reps
    python bench/overhead.py --study studies/smoke/crystal_text.yaml --reps 5
    python bench/overhead.py --quick                            # a few seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="studies/quickstart.yaml", help="relative to the working directory or the project root")
    ap.add_argument("--reps", type=int, default=6, help="trials of each kind")
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    ap.add_argument("--quick", action="store_true", help="toy task, 3 reps: checks the script runs")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if not Path(args.study).exists() and (ROOT / args.study).exists():
        args.study = str(ROOT / args.study)

    import optuna
    import torch

    from hpo.cache import DataCache
    from hpo.spec import load_study
    from hpo.train import fit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="hpo-overhead-"))
    sets = [f"storage=sqlite:///{tmp}/bench.db", f"artifacts={tmp}/artifacts"]
    if args.quick:
        study_file = tmp / "toy.yaml"
        study_file.write_text(
            "name: overhead-toy\ntask: {family: toy, dataset: {n_samples: 512}}\n"
            "space: {params: {hidden: [32, 64]}, baselines: {b: {hidden: 64}}}\n"
            "objectives: [val_mae]\nbudget: {n_trials: 3}\ntraining: {epochs: 20, scheduler: cosine}\n"
        )
        args.study, args.reps = str(study_file), 3
    study = load_study(args.study, sets)
    if args.epochs:
        study = load_study(args.study, sets + [f"training.epochs={args.epochs}", f"budget.max_epochs={args.epochs}"])
    name = next(iter(study.space.baselines), None)
    if name is None:
        raise SystemExit(f"{args.study}: needs a baseline (the config to time)")
    b = study.space.baselines[name]
    config = study.space.resolve(b.params, b.overrides)
    config.setdefault("seed", study.spec.seed)
    cap = study.spec.budget.max_epochs
    if cap and config.get("epochs", 100) > cap:
        config["epochs"] = cap

    task = study.make_task(DataCache(tmp / "cache"))
    train_cfg, model_cfg, data_cfg = task.split_config(config)
    splits = task.load(data_cfg)  # both sides reuse the loaded data, as trials of a study do

    from hpo.runner import RunOptions, create_or_load, run_worker

    # The service: one real worker loop (budget checks, sampling, per-epoch report and pruning, curves
    # and metrics, checkpoint upload) on a fresh SQLite store, every trial the same config. After each
    # service trial, the bare loop trains the same config once (from the trial callback): the two
    # alternate in one process, so machine noise hits both alike.
    svc_url = f"sqlite:///{tmp}/bench.db"
    ostudy = create_or_load(study, svc_url, "overhead")
    n = 2 * args.reps + 1
    for _ in range(n):
        ostudy.enqueue_trial(b.params, user_attrs={"baseline": name, "overrides": b.overrides})

    def bare() -> float:
        t0 = time.perf_counter()
        with splits.locked_test():
            fit(task, splits, train_cfg, model_cfg, monitor=study.monitor.metric, direction=study.monitor.direction)
        return time.perf_counter() - t0

    t_bare, t_service, t_fit = [], [], []
    mark = [None]

    def between_trials(_study, trial) -> None:
        now = time.perf_counter()
        if mark[0] is not None:  # the first trial pays the worker's start-up: not counted
            t_service.append(now - mark[0])
            t_fit.append(trial.user_attrs.get("seconds", float("nan")))  # its training, timed inside the trial
        t_bare.append(bare())
        mark[0] = time.perf_counter()

    bare()  # warm-up (first-call costs of torch kernels)
    run_worker(study, svc_url, "overhead", n_trials=n, timeout=None,
               opts=RunOptions(cache_dir=str(tmp / "cache"), artifacts=str(tmp / "artifacts")), on_trial=between_trials)
    t_bare = t_bare[1:]
    states = {t.state.name for t in ostudy.get_trials()}
    mb, ms = statistics.median(t_bare), statistics.median(t_service)
    fixed = statistics.median(s_ - f_ for s_, f_ in zip(t_service, t_fit))  # outside training: noise-free

    # cache hit rate over a whole (short) study with a fresh cache directory
    from hpo.runner import RunOptions, run_study

    hit_study = load_study(args.study, [f"storage=sqlite:///{tmp}/hits.db", f"artifacts={tmp}/artifacts"])
    summary = run_study(hit_study, RunOptions(cache_dir=str(tmp / "cache-fresh"), checkpoints=False))
    c = summary.cache
    result = {
        "study": args.study,
        "config": name,
        "epochs": config.get("epochs"),
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "bare_s": [round(x, 4) for x in t_bare],
        "service_s": [round(x, 4) for x in t_service],
        "bare_median_s": round(mb, 4),
        "service_median_s": round(ms, 4),
        "ratio": round(ms / mb, 4),
        "fixed_overhead_s": round(fixed, 4),
        "fit_in_service_median_s": round(statistics.median(t_fit), 4),
        "ratio_fixed_part": round((mb + fixed) / mb, 4),
        "trial_states": sorted(states),
        "cache": {"trials": summary.budget.used, "builds": c.misses, "disk_hits": c.disk_hits,
                  "memory_hits": c.memory_hits, "hit_rate": round(c.hit_rate, 4), "build_s": round(c.build_seconds, 3)},
    }
    print(f"config {name!r} of {args.study}: {config.get('epochs')} epochs, {len(t_service)} trials each way, {result['threads']} threads")
    print(f"  per-trial overhead of the service: {(ms - mb) * 1000:.0f} ms (difference of medians; noisy)")
    print(f"  of which outside training (trial wall - its own training time): {fixed * 1000:.0f} ms "
          f"-> {(mb + fixed) / mb:.3f}x of a bare trial; training inside the service: median {statistics.median(t_fit):.3f} s")
    print(f"  bare loop   median {mb:.3f} s/trial   {[round(x, 3) for x in t_bare]}")
    print(f"  service     median {ms:.3f} s/trial   {[round(x, 3) for x in t_service]}")
    print(f"  ratio service/bare = {ms / mb:.3f}x (target <= 1.02x)")
    print(f"  data cache over a {summary.budget.used}-trial study: {c.misses} build(s) in {c.build_seconds:.2f}s, "
          f"{c.memory_hits + c.disk_hits} hits -> hit rate {c.hit_rate:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    from common import machine, save

    save("overhead" + ("-quick" if args.quick else ""), {"machine": machine(), **result})
    return result


if __name__ == "__main__":
    main()
