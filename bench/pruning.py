"""Pruning pays: the same study (same sampler seed, same number of trials) with the pruners none,
median and hyperband, on real data; total epochs trained, wall time and best validation metric.
Target: a pruner reaches within 1 % of the unpruned best with at most 1/3 of its epochs.

    python bench/pruning.py                      # Los-loop and Davis, bounded budget (< 30 min on 2 cores)
    python bench/pruning.py --budget long        # the target's regime: many trials of 10 epochs (~1 h per dataset)
    python bench/pruning.py --datasets los_loop  # one of them; --trials N --epochs N --set K=V override the budget
    python bench/pruning.py --budget long --datasets los_loop --seed 1 --pruners median  # another sampler seed
    python bench/pruning.py --seeds 0 1 2        # every arm with each sampler seed: mean ± std over the seeds
    python bench/pruning.py --quick              # a few minutes: checks the script runs

The arms (dataset x pruner) run as separate processes, ``--jobs`` at a time (default: one per core),
each on one CPU thread, so every arm trains under the same conditions; epochs and values do not
depend on the load, wall times do.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from common import ROOT, machine, outdir, run_study_file, save, table

STUDIES = {"los_loop": ROOT / "bench" / "studies" / "los_loop.yaml", "davis": ROOT / "bench" / "studies" / "davis.yaml"}
PRUNERS = {
    "none": "pruner={type: none}",
    "median": "pruner={type: median, n_startup_trials: 2, n_warmup_steps: 1}",
    "hyperband": "pruner={type: hyperband, min_resource: 1, reduction_factor: 3}",
}
# CPU fidelity of each budget, on top of the study file (trials, epochs, then any other override).
# Los-loop: every 24th training window in batches of 16 (~3-12 s an epoch); Davis: 2 % of the training
# pairs, proteins max-pooled over 16 tokens (validation: the whole fold 0, every epoch).
BUDGETS = {
    "quick": {  # a minute per dataset: only checks that everything runs
        "los_loop": (2, 2, ["space.fixed.train_stride=48", "task.dataset.train_frac=0.77", "task.dataset.val_frac=0.03"]),
        "davis": (2, 2, ["space.fixed.train_subsample=0.02"]),
    },
    "default": {
        "los_loop": (16, 6, ["space.fixed.train_stride=24", "training.batch_size=16"]),
        "davis": (10, 4, ["space.fixed.train_subsample=0.02", "space.fixed.protein_pool=16"]),
    },
    "long": {
        "los_loop": (30, 10, ["space.fixed.train_stride=24", "training.batch_size=16"]),
        "davis": (30, 10, ["space.fixed.train_subsample=0.02", "space.fixed.protein_pool=16"]),
    },
}


def study_sets(ds: str, budget: str, trials: int | None, epochs: int | None, extra: list[str]) -> list[str]:
    n, e, fidelity = BUDGETS[budget][ds]
    n, e = trials or n, epochs or e
    # the pruners compete on the same sampled configs, not on the plans
    return ["baselines={}", f"budget.n_trials={n}", f"budget.max_epochs={e}", f"training.epochs={e}", *fidelity, *extra]


def run_arm(ds: str, pruner: str, sets: list[str], run: str) -> dict:
    """One arm in its own process, on one thread (its store: runs/bench/[quick/]pruning/RUN/DS-PRUNER.db)."""
    import torch

    torch.set_num_threads(1)
    workdir = outdir(run.startswith("quick")) / "pruning" / run
    r = run_study_file(STUDIES[ds], [*sets, PRUNERS[pruner]], f"{ds}-{pruner}", workdir, threads=1)
    best = r.best()
    return {"trials": len(r.trials), "complete": r.count("COMPLETE"), "pruned": r.count("PRUNED"), "epochs": r.epochs,
            "wall_s": round(r.wall_s, 1), "best_val": best.value if best else None,
            "best_trial": best.number if best else None, "direction": r.directions[0],
            "epochs_per_trial": [t.user_attrs.get("epochs_run", 0) for t in sorted(r.trials, key=lambda t: t.number)]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    ap.add_argument("--budget", choices=["default", "long"], default="default")
    ap.add_argument("--trials", type=int, help="trials per study (default: the budget's)")
    ap.add_argument("--epochs", type=int, help="epochs per trial (default: the budget's)")
    ap.add_argument("--seed", type=int, help="sampler seed (default: the study's, 0)")
    ap.add_argument("--seeds", type=int, nargs="+", help="run every arm with each of these sampler seeds and print the "
                    "ratios' mean ± std over them (the target must hold over seeds, not for one)")
    ap.add_argument("--pruners", nargs="+", default=list(PRUNERS), choices=list(PRUNERS), help="arms to run (none always runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="more study overrides, as hpo run --set")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="arms run at once (one thread each)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.seeds:
        return over_seeds(args, sys.argv[1:] if argv is None else list(argv))
    budget = "quick" if args.quick else args.budget
    run = budget + (f"-seed{args.seed}" if args.seed is not None else "")  # names the stores and the result file
    extra = [*args.set, *([f"sampler.seed={args.seed}"] if args.seed is not None else [])]
    pruners = ["none", *(p for p in args.pruners if p != "none")]
    result: dict = {"machine": {**machine(), "threads": 1, "jobs": args.jobs}, "budget": budget, "datasets": {}}
    arms = [(ds, name) for ds in args.datasets for name in pruners]
    sets = {ds: study_sets(ds, budget, args.trials, args.epochs, extra) for ds in args.datasets}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        # unpruned arms first: they are the longest
        futures = {arm: pool.submit(run_arm, arm[0], arm[1], sets[arm[0]], run)
                   for arm in sorted(arms, key=lambda a: a[1] != "none")}
        runs = {arm: f.result() for arm, f in futures.items()}
    for ds in args.datasets:
        ref = runs[(ds, "none")]
        rows, entry = [], {"overrides": sets[ds]}
        for name in pruners:
            r = runs[(ds, name)]
            best, rel = r["best_val"], None
            if best is not None and ref["best_val"] is not None:
                rel = (best - ref["best_val"]) / abs(ref["best_val"]) * 100 * (1 if r["direction"] == "minimize" else -1)
            ep = r["epochs"] / ref["epochs"] if ref["epochs"] else None
            ok = rel is not None and rel <= 1.0 and ep is not None and ep <= 1 / 3
            entry[name] = {**r, "best_vs_none_pct": rel, "epochs_vs_none": ep, "meets_target": ok if name != "none" else None}
            rows.append([name, r["trials"], r["pruned"], r["epochs"], round(r["wall_s"]), best, rel, ep,
                         ("yes" if ok else "no") if name != "none" else "-"])
        result["datasets"][ds] = entry
        print(f"\n{ds} ({'lower' if ref['direction'] == 'minimize' else 'higher'} is better; {' '.join(sets[ds])})")
        print(table(rows, ["pruner", "trials", "pruned", "epochs", "wall s", "best val", "best vs none %", "epochs / none", "target met"]))
        print()
    save("pruning" + ("" if run == "default" else f"-{run}"), result)
    return result


def over_seeds(args, argv: list[str]) -> dict:
    """Each sampler seed as its own run (its own stores and result file), then per dataset and pruner the mean ±
    std over the seeds of best-vs-none % and epochs / none, and how many seeds met the target."""
    import statistics

    rest, skip = [], False
    for a in argv:  # the same flags, less --seeds and its values
        if a == "--seeds":
            skip = True
        elif skip and a.lstrip("-").isdigit() and not a.startswith("--"):
            continue
        else:
            skip = False
            rest.append(a)
    per_seed = {seed: main([*rest, "--seed", str(seed)]) for seed in args.seeds}
    summary: dict = {"seeds": args.seeds, "datasets": {}}
    ms = lambda xs: (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)  # noqa: E731
    for ds in args.datasets:
        rows, entry = [], {}
        pruners = [p for p in per_seed[args.seeds[0]]["datasets"][ds] if p not in ("overrides", "none")]
        for name in pruners:
            arms = [per_seed[seed]["datasets"][ds][name] for seed in args.seeds]
            rel = [a["best_vs_none_pct"] for a in arms if a["best_vs_none_pct"] is not None]
            ep = [a["epochs_vs_none"] for a in arms if a["epochs_vs_none"] is not None]
            met = sum(bool(a["meets_target"]) for a in arms)
            entry[name] = {"best_vs_none_pct": ms(rel) if rel else None, "epochs_vs_none": ms(ep) if ep else None,
                           "seeds_meeting_target": met}
            fmt = lambda v: "" if v is None else f"{v[0]:.3g} ± {v[1]:.2g}"  # noqa: E731
            rows.append([name, fmt(entry[name]["best_vs_none_pct"]), fmt(entry[name]["epochs_vs_none"]),
                         f"{met}/{len(args.seeds)}"])
        summary["datasets"][ds] = entry
        print(f"\n{ds}, sampler seeds {' '.join(map(str, args.seeds))} (mean ± std over seeds)")
        print(table(rows, ["pruner", "best vs none %", "epochs / none", "seeds meeting target"]))
    budget = "quick" if args.quick else args.budget
    save(f"pruning-{budget}-seeds" + "-".join(map(str, args.seeds)), summary)
    return summary


if __name__ == "__main__":
    main()
