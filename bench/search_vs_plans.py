"""Search beats the plans? On Los-loop, with equal budgets of training runs:

- plans:  the seed-002 plans alone (the study's named baselines, run as a grid of named configs);
- tpe:    TPE warm-started from them (the plans are its first trials, then TPE);
- random: random search over the same space (no plans).

Prints the best validation metric after each trial (the anytime curve, also as plotly HTML in
runs/bench/search_vs_plans.html), and each arm's best config re-evaluated on the held-out test split
over 5 seeds (mean ± std; the test split is read only there).

    python bench/search_vs_plans.py           # < 30 min on 2 cores (BENCHMARKS.md); --trials N --seeds N
    python bench/search_vs_plans.py --quick   # a few minutes

The three arms run as separate processes, ``--jobs`` at a time (default: one per core), each on one
CPU thread; then each distinct best config is re-evaluated once (an arm whose best is another arm's
best, e.g. TPE keeping a plan, shares its re-evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from common import OUT, ROOT, machine, outdir, run_study_file, save, table

STUDY = ROOT / "bench" / "studies" / "los_loop.yaml"
# CPU fidelity on top of the study's: every 24th training window in batches of 16 (as many optimiser
# steps per epoch as the study's every 12th in batches of 32, for half the compute)
FIDELITY: list[str] = ["space.fixed.train_stride=24", "training.batch_size=16"]


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_arm(arm: str, sets: list[str], quick: bool):
    _one_thread()
    return run_study_file(STUDY, sets, f"svp-{arm}", outdir(quick) / "search_vs_plans", threads=1)


def reevaluate_arm(arm: str, quick: bool, seeds: int) -> dict:
    """The test metric of ``arm``'s best config over ``seeds`` seeds (the test split is read only here)."""
    _one_thread()
    from hpo.store.stored import load_stored_study
    from hpo.analysis.reevaluate import reevaluate

    url = f"sqlite:///{outdir(quick) / 'search_vs_plans' / ('svp-' + arm + '.db')}"
    re = reevaluate(load_stored_study(url, "bench-los-loop"), top=1, seeds=list(range(seeds)), baselines=False,
                    cache_dir=str(OUT / "cache"))
    return next(iter(re["configs"].values()))["summary"]["mae"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12, help="budget of the tpe and random arms (the plans arm runs its 5 plans)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the test re-evaluation")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="arms run at once (one thread each)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sets = list(FIDELITY)
    n, seeds = args.trials, args.seeds
    if args.quick:
        sets += ["space.fixed.train_stride=48", "task.dataset.train_frac=0.77", "task.dataset.val_frac=0.03",
                 "budget.max_epochs=1", "training.epochs=1"]
        n, seeds = 3, 2
    from hpo.spec import load_study

    plans = list(load_study(STUDY, sets, check_data=False).space.baselines)
    arms = {
        "plans": [*sets, f"budget.n_trials={2 if args.quick else len(plans)}", "pruner={type: none}"],
        "tpe": [*sets, f"budget.n_trials={n}"],
        "random": [*sets, f"budget.n_trials={n}", "baselines={}", "sampler={type: random, seed: 0}"],
    }
    result = {"machine": {**machine(), "threads": 1, "jobs": args.jobs}, "overrides": sets, "plans": plans, "arms": {}}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        futures = {arm: pool.submit(run_arm, arm, arm_sets, args.quick) for arm, arm_sets in arms.items()}
        runs = {arm: f.result() for arm, f in futures.items()}
        for arm, r in runs.items():
            print(f"{arm:<7s} {len(r.trials)} trials, {r.epochs} epochs, {r.wall_s:.0f}s, best val {r.best().value:.4f} "
                  f"(trial #{r.best().number}{' ' + r.best().user_attrs['baseline'] if r.best().user_attrs.get('baseline') else ''})", flush=True)
        # one re-evaluation per distinct best config
        key = {arm: json.dumps(r.best().user_attrs["config"], sort_keys=True) for arm, r in runs.items()}
        first = {}
        for arm in runs:
            first.setdefault(key[arm], arm)
        tests = {arm: pool.submit(reevaluate_arm, arm, args.quick, seeds) for arm in set(first.values())}
        tests = {arm: tests[first[key[arm]]].result() for arm in runs}
    rows = []
    for arm, r in runs.items():
        test, best = tests[arm], r.best()
        shared = first[key[arm]] if first[key[arm]] != arm else None
        result["arms"][arm] = {"trials": len(r.trials), "epochs": r.epochs, "wall_s": round(r.wall_s, 1),
                               "best_val_mae": best.value, "best_trial": best.number, "best_is_plan": best.user_attrs.get("baseline"),
                               "anytime": r.anytime(), "test_mae_mean": test["mean"], "test_mae_std": test["std"],
                               "test_mae_values": test["values"], "test_shared_with": shared, "best_config": best.user_attrs["config"]}
        rows.append([arm, len(r.trials), r.epochs, round(r.wall_s), best.value, best.user_attrs.get("baseline") or f"#{best.number}",
                     f"{test['mean']:.4f} ± {test['std']:.4f}" + (f" (= {shared}'s config)" if shared else "")])
        print(f"{arm:<7s} test MAE over {seeds} seeds: {test['mean']:.4f} ± {test['std']:.4f}", flush=True)
    print()
    print(table(rows, ["arm", "trials", "epochs", "wall s", "best val MAE", "best config", f"test MAE ({seeds} seeds)"]))
    print("\nanytime best val MAE after each trial:")
    width = max(len(r.anytime()) for r in runs.values())
    for arm, r in runs.items():
        a = r.anytime()
        print(f"  {arm:<7s} " + " ".join(f"{v:.3f}" if v is not None else "  -  " for v in a + [a[-1]] * (width - len(a))))
    _anytime_html(runs, outdir(args.quick) / "search_vs_plans.html")
    save("search_vs_plans" + ("-quick" if args.quick else ""), result)
    return result


def _anytime_html(runs, path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for arm, r in runs.items():
        a = r.anytime()
        fig.add_trace(go.Scatter(x=list(range(1, len(a) + 1)), y=a, mode="lines+markers", name=arm, line={"shape": "hv"}))
    fig.update_layout(title="Los-loop: best validation MAE after each trial (equal budgets)", xaxis_title="trials trained",
                      yaxis_title="best val MAE (mph)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True)


if __name__ == "__main__":
    main()
