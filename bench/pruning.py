"""Pruning pays: the same study (same sampler seed, same number of trials) with the pruners none,
median and hyperband, on real data; total epochs trained, wall time and best validation metric.
Target: a pruner reaches within 1 % of the unpruned best with at most 1/3 of its epochs.

    python bench/pruning.py                      # Los-loop and Davis (~40-60 min on 2 cores; BENCHMARKS.md)
    python bench/pruning.py --datasets los_loop  # one of them
    python bench/pruning.py --quick              # a few minutes: checks the script runs
"""

from __future__ import annotations

import argparse

from common import ROOT, machine, outdir, run_study_file, save, table

STUDIES = {"los_loop": ROOT / "bench" / "studies" / "los_loop.yaml", "davis": ROOT / "bench" / "studies" / "davis.yaml"}
PRUNERS = {
    "none": "pruner={type: none}",
    "median": "pruner={type: median, n_startup_trials: 2, n_warmup_steps: 1}",
    "hyperband": "pruner={type: hyperband, min_resource: 1, reduction_factor: 3}",
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    ap.add_argument("--trials", type=int, help="trials per study (default: the study's)")
    ap.add_argument("--epochs", type=int, help="epochs per trial (default: the study's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="more study overrides, as hpo run --set")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    result: dict = {"machine": machine(), "datasets": {}}
    for ds in args.datasets:
        sets = ["baselines={}"]  # the pruners compete on the same sampled configs, not on the plans
        if args.trials:
            sets.append(f"budget.n_trials={args.trials}")
        if args.epochs:
            sets += [f"budget.max_epochs={args.epochs}", f"training.epochs={args.epochs}"]
        sets += args.set
        if args.quick:
            sets += ["budget.n_trials=2", "budget.max_epochs=2", "training.epochs=2", *QUICK.get(ds, [])]
        runs = {}
        for name, pruner in PRUNERS.items():
            runs[name] = run_study_file(STUDIES[ds], [*sets, pruner], f"{ds}-{name}", outdir(args.quick) / "pruning")
            r = runs[name]
            best = r.best()
            print(f"{ds:<9s} {name:<10s} trials {len(r.trials)} ({r.count('COMPLETE')} complete, {r.count('PRUNED')} pruned), "
                  f"{r.epochs} epochs, {r.wall_s:.0f}s, best {best.value if best else float('nan'):.4f}", flush=True)
        ref = runs["none"]
        rows, entry = [], {}
        for name, r in runs.items():
            best = r.best().value if r.best() else None
            rel = (best - ref.best().value) / abs(ref.best().value) * 100 if best is not None and ref.best() else None
            if rel is not None and r.directions[0] == "maximize":
                rel = -rel
            ep = r.epochs / ref.epochs if ref.epochs else None
            ok = rel is not None and rel <= 1.0 and ep is not None and ep <= 1 / 3
            entry[name] = {"trials": len(r.trials), "complete": r.count("COMPLETE"), "pruned": r.count("PRUNED"),
                           "epochs": r.epochs, "wall_s": round(r.wall_s, 1), "best_val": best,
                           "best_vs_none_pct": rel, "epochs_vs_none": ep, "meets_target": ok if name != "none" else None}
            rows.append([name, len(r.trials), r.count("PRUNED"), r.epochs, round(r.wall_s), best, rel, ep,
                         ("yes" if ok else "no") if name != "none" else "-"])
        result["datasets"][ds] = entry
        print(f"\n{ds} ({'lower' if ref.directions[0] == 'minimize' else 'higher'} is better)")
        print(table(rows, ["pruner", "trials", "pruned", "epochs", "wall s", "best val", "best vs none %", "epochs / none", "target met"]))
        print()
    save("pruning" + ("-quick" if args.quick else ""), result)
    return result


QUICK = {  # a minute per dataset: only checks that everything runs
    "davis": ["space.fixed.train_subsample=0.02"],
    "los_loop": ["space.fixed.train_stride=48", "task.dataset.train_frac=0.77", "task.dataset.val_frac=0.03"],
}

if __name__ == "__main__":
    main()
