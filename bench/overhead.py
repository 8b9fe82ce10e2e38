"""Per-trial overhead of the service vs the bare training loop, and the data-cache hit rate.

The same config (a study's first baseline) is trained by the bare loop (``hpo.train.fit``, no store)
and as trials of a real study run by the real worker loop on a fresh SQLite store (budget checks,
sampling, per-epoch report + pruner, curves/metrics user attrs, best checkpoint upload), alternating
one by one in one process (bare, service, bare, service, ...) so that machine drift hits both alike.
Target: service <= 1.02x bare per trial. Figures:

- end to end, wall and CPU time: each service trial against the mean of the bare trials on either side
  (paired ratio); the median of those ratios with a bootstrap 95 % interval, and the ratio of medians;
- accounted: what the service does besides training, timed directly — the trial's wall time outside its
  training, plus the time inside training spent in the service's per-epoch hook (report + pruning) —
  over the median bare trial. Free of the training's own run-to-run noise.

Then runs the study itself with a fresh cache directory and prints the cache hit rate (processed data
built once, then reused by every trial).

    python bench/overhead.py                                    # the quickstart study, 12 pairs
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


def bootstrap_ci(xs: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median."""
    import random

    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="studies/quickstart.yaml", help="relative to the working directory or the project root")
    ap.add_argument("--reps", type=int, default=12, help="trials of each kind")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores)")
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    ap.add_argument("--quick", action="store_true", help="toy task, 3 reps: checks the script runs")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if not Path(args.study).exists() and (ROOT / args.study).exists():
        args.study = str(ROOT / args.study)

    import optuna
    import torch

    from hpo.data.cache import DataCache
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

    from hpo.run.loop import run_worker
    from hpo.run.options import RunOptions
    from hpo.run.study import create_or_load

    # The service: one real worker loop (budget checks, sampling, per-epoch report and pruning, curves
    # and metrics, checkpoint upload) on a fresh SQLite store, every trial the same config. After each
    # service trial, the bare loop trains the same config once (from the trial callback): the two
    # alternate in one process, so machine noise hits both alike.
    svc_url = f"sqlite:///{tmp}/bench.db"
    ostudy = create_or_load(study, svc_url, "overhead")
    n = args.reps + 1  # the first service trial pays the worker's start-up and is not counted
    for _ in range(n):
        ostudy.enqueue_trial(b.params, user_attrs={"baseline": name, "overrides": b.overrides})

    if args.threads:
        torch.set_num_threads(args.threads)

    def bare() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with splits.locked_test():
            fit(task, splits, train_cfg, model_cfg, monitor=study.monitor.metric, direction=study.monitor.direction)
        return time.perf_counter() - t0, time.process_time() - c0

    # the service's per-epoch hook (report to the study + pruning decision), timed where it runs
    from hpo.run.handles import OptunaHandle

    hook = {"s": 0.0}
    report = OptunaHandle.report

    def timed_report(self, *a, **kw):
        t = time.perf_counter()
        try:
            return report(self, *a, **kw)
        finally:
            hook["s"] += time.perf_counter() - t

    OptunaHandle.report = timed_report

    bare_w, bare_c, svc_w, svc_c, t_fit, t_hook = [], [], [], [], [], []
    mark = [None, None]

    def between_trials(_study, trial) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if mark[0] is not None:  # the first trial pays the worker's start-up: not counted
            svc_w.append(now - mark[0])
            svc_c.append(cpu - mark[1])
            t_fit.append(trial.user_attrs.get("seconds", float("nan")))  # its training, timed inside the trial
            t_hook.append(hook["s"])
        hook["s"] = 0.0
        w, c = bare()
        bare_w.append(w)
        bare_c.append(c)
        mark[0], mark[1] = time.perf_counter(), time.process_time()

    bare()  # warm-up (first-call costs of torch kernels)
    try:
        run_worker(study, svc_url, "overhead", n_trials=n, timeout=None,
                   opts=RunOptions(cache_dir=str(tmp / "cache"), artifacts=str(tmp / "artifacts")), on_trial=between_trials)
    finally:
        OptunaHandle.report = report
    # order: S0 B0 S1 B1 ... S(n-1) B(n-1); counted service trial j is S(j+1), between B(j) and B(j+1)
    states = {t.state.name for t in ostudy.get_trials()}
    pw = [s_ / ((a + b) / 2) for s_, a, b in zip(svc_w, bare_w, bare_w[1:])]
    pc = [s_ / ((a + b) / 2) for s_, a, b in zip(svc_c, bare_c, bare_c[1:])]
    mb, ms = statistics.median(bare_w), statistics.median(svc_w)
    outside = statistics.median(s_ - f_ for s_, f_ in zip(svc_w, t_fit))  # outside training: noise-free
    inside = statistics.median(t_hook)
    accounted = (mb + outside + inside) / mb
    # cache hit rate over a whole (short) study with a fresh cache directory
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions

    hit_study = load_study(args.study, [f"storage=sqlite:///{tmp}/hits.db", f"artifacts={tmp}/artifacts"])
    summary = run_study(hit_study, RunOptions(cache_dir=str(tmp / "cache-fresh"), checkpoints=False))
    c = summary.cache
    result = {
        "study": args.study,
        "config": name,
        "epochs": config.get("epochs"),
        "pairs": len(pw),
        "threads": torch.get_num_threads(),
        "bare_s": [round(x, 4) for x in bare_w],
        "service_s": [round(x, 4) for x in svc_w],
        "bare_cpu_s": [round(x, 4) for x in bare_c],
        "service_cpu_s": [round(x, 4) for x in svc_c],
        "bare_median_s": round(mb, 4),
        "service_median_s": round(ms, 4),
        "ratio_of_medians": round(ms / mb, 4),
        "paired_ratio_wall": {"median": round(statistics.median(pw), 4), "ci95": [round(x, 4) for x in bootstrap_ci(pw)]},
        "paired_ratio_cpu": {"median": round(statistics.median(pc), 4), "ci95": [round(x, 4) for x in bootstrap_ci(pc)]},
        "outside_training_s": round(outside, 4),
        "per_epoch_hook_s": round(inside, 4),
        "ratio_accounted": round(accounted, 4),
        "trial_states": sorted(states),
        "cache": {"trials": summary.budget.used, "builds": c.misses, "disk_hits": c.disk_hits,
                  "memory_hits": c.memory_hits, "hit_rate": round(c.hit_rate, 4), "build_s": round(c.build_seconds, 3)},
    }
    lo, hi = result["paired_ratio_wall"]["ci95"]
    clo, chi = result["paired_ratio_cpu"]["ci95"]
    print(f"config {name!r} of {args.study}: {config.get('epochs')} epochs, {len(pw)} service trials each between two bare ones, "
          f"{result['threads']} threads")
    print(f"  bare loop   median {mb:.3f} s/trial   {[round(x, 2) for x in bare_w]}")
    print(f"  service     median {ms:.3f} s/trial   {[round(x, 2) for x in svc_w]}")
    print(f"  end to end, wall: paired ratio median {statistics.median(pw):.4f}x (95% CI {lo:.4f}-{hi:.4f}); "
          f"ratio of medians {ms / mb:.4f}x")
    print(f"  end to end, CPU : paired ratio median {statistics.median(pc):.4f}x (95% CI {clo:.4f}-{chi:.4f})")
    print(f"  accounted: outside training {outside * 1000:.0f} ms + per-epoch hook {inside * 1000:.1f} ms per trial "
          f"-> {accounted:.4f}x of a bare trial (target <= 1.02x)")
    print(f"  data cache over a {summary.budget.used}-trial study: {c.misses} build(s) in {c.build_seconds:.2f}s, "
          f"{c.memory_hits + c.disk_hits} hits -> hit rate {c.hit_rate:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    from common import machine, save

    save("overhead" + ("-quick" if args.quick else ""), {"machine": machine(), **result})
    return result


if __name__ == "__main__":
    main()
