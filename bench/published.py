"""Against published numbers, on the same data and protocols, with the compute used stated.

Los-loop (T-GCN protocol): the first 80 % of the 2,016 five-minute steps for training, the last 20 %
for test; 12 steps in; horizons of 3/6/9/12 steps (15/30/45/60 min), each scored over all its
predicted steps; RMSE and MAE in mph, accuracy = 1 - ||Y - Ŷ||_F / ||Y||_F. T-GCN picks its epoch on
the test split; here the epoch is picked on a validation part carved from the training 80 % (its last
5 % of the 2,016 steps, chronologically: 6 hours), and the test part is read once per seed. One model predicts 12 steps; a
horizon of k steps is scored on its first k (T-GCN trains one model per horizon). Published: T-GCN
15 min RMSE 5.13, accuracy 0.913.

Davis (DeepDTA protocol): pKd, the official folds, validation = training fold 0, the test fold read
once per seed. Published: DeepDTA MSE 0.261, CI 0.878, r_m² 0.630; GraphDTA (GIN) MSE 0.229, CI 0.893.

The config of each is the best one found by the other benchmarks (runs/bench/*), else the first plan
of the benchmark study; it is retrained with several seeds (mean ± std).

    python bench/published.py           # ~20 min on 2 cores
    python bench/published.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import OUT, ROOT, machine, outdir, save, table

LOS = ROOT / "bench" / "studies" / "los_loop.yaml"
DAVIS = ROOT / "bench" / "studies" / "davis.yaml"
TGCN = {"rmse_15min": 5.13, "accuracy_15min": 0.913}
DEEPDTA = {"mse": 0.261, "ci": 0.878, "rm2": 0.630}
GRAPHDTA = {"mse": 0.229, "ci": 0.893}


def best_config(stores: list[str], study_name: str, fallback_study, fallback_plan: str, quick: bool) -> tuple[dict, str]:
    """The best config found by an earlier benchmark run (first store that exists), else a plan."""
    import optuna

    for rel in stores:
        path = outdir(quick) / rel
        if path.exists():
            st = optuna.load_study(study_name=study_name, storage=f"sqlite:///{path}")
            done = [t for t in st.trials if t.state.name == "COMPLETE"]
            if done:
                t = min(done, key=lambda t: t.value)
                return dict(t.user_attrs["config"]), f"{rel} trial #{t.number}"
    b = fallback_study.space.baselines[fallback_plan]
    return fallback_study.space.resolve(b.params, b.overrides), f"plan {fallback_plan!r} of {fallback_study.file.name}"


def train_and_predict(study, config: dict, seed: int):
    """Train ``config`` with ``seed`` (epoch chosen on val), then predict the test split once."""
    from hpo.data.cache import DataCache
    from hpo.train import fit
    from hpo.train.loop import predict

    task = study.make_task(DataCache(OUT / "cache"))
    tr, m, d = task.split_config({**config, "seed": seed})
    splits = task.load(d)
    with splits.locked_test():
        r = fit(task, splits, tr, m, monitor=study.monitor.metric, direction=study.monitor.direction)
    model = task.build_model(m, splits)
    model.load_state_dict(r.best_state)
    pred, target = predict(task, model, splits, "test", tr.batch_size)
    return r, pred, target, task


def los_loop(args) -> dict:
    import torch

    from hpo.spec import load_study

    study = load_study(LOS)
    config, source = best_config(["search_vs_plans/svp-tpe.db", "pruning/long/los_loop-none.db", "pruning/default/los_loop-none.db",
                                  "pruning/quick/los_loop-none.db"],
                                 "bench-los-loop", study, "phase1", args.quick)
    config.update(output_len=12, train_stride=args.los_stride, epochs=args.los_epochs, patience=args.los_patience)
    seeds = list(range(args.seeds))
    per = {k: {"rmse": [], "mae": [], "accuracy": []} for k in (3, 6, 9, 12)}
    t0, epochs = time.perf_counter(), 0
    for seed in seeds:
        r, pred, target, _ = train_and_predict(study, config, seed)
        epochs += r.epochs_run
        for k in per:  # (N, H, nodes), mph; Los-loop has no missing readings
            p, y = pred[:, :k].reshape(-1).double(), target[:, :k].reshape(-1).double()
            err = p - y
            per[k]["rmse"].append(float(err.pow(2).mean().sqrt()))
            per[k]["mae"].append(float(err.abs().mean()))
            per[k]["accuracy"].append(float(1 - torch.linalg.norm(err) / torch.linalg.norm(y)))
        print(f"  los_loop seed {seed}: 15-min RMSE {per[3]['rmse'][-1]:.3f}, accuracy {per[3]['accuracy'][-1]:.4f} "
              f"({r.epochs_run} epochs, best {r.best_epoch})", flush=True)
    wall = time.perf_counter() - t0
    summary = {f"{k * 5}min": {m: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
                               for m, v in ms.items()} for k, ms in per.items()}
    rows = [[f"{k * 5} min", *(f"{summary[f'{k * 5}min'][m]['mean']:.3f} ± {summary[f'{k * 5}min'][m]['std']:.3f}" for m in ("rmse", "mae", "accuracy")),
             f"{TGCN['rmse_15min']} / {TGCN['accuracy_15min']}" if k == 3 else "-"] for k in per]
    print(table(rows, ["horizon", "RMSE mph", "MAE mph", "accuracy", "T-GCN RMSE / acc"]))
    return {"config_source": source, "config": config, "seeds": seeds, "horizons": summary, "published": TGCN,
            "compute": {"epochs": epochs, "wall_s": round(wall, 1), "train_stride": args.los_stride}}


def davis(args) -> dict:
    from models.drug_target.metrics import regression_metrics

    from hpo.spec import load_study

    study = load_study(DAVIS)
    config, source = best_config(["pruning/long/davis-none.db", "pruning/default/davis-none.db", "pruning/quick/davis-none.db"],
                                 "bench-davis", study, "seed_default", args.quick)
    config.update(train_subsample=args.davis_subsample, epochs=args.davis_epochs, patience=args.davis_patience)
    seeds = list(range(args.seeds_davis))
    vals: dict[str, list] = {"mse": [], "ci": [], "rm2": []}
    t0, epochs = time.perf_counter(), 0
    for seed in seeds:
        r, pred, target, _ = train_and_predict(study, config, seed)
        epochs += r.epochs_run
        m = regression_metrics(target, pred)
        for k in vals:
            vals[k].append(m[k])
        print(f"  davis seed {seed}: test MSE {m['mse']:.3f}, CI {m['ci']:.3f}, r_m2 {m['rm2']:.3f} ({r.epochs_run} epochs)", flush=True)
    wall = time.perf_counter() - t0
    summary = {k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0} for k, v in vals.items()}
    print(table([["fusion-hpo (this run)", *(f"{summary[k]['mean']:.3f} ± {summary[k]['std']:.3f}" for k in ("mse", "ci", "rm2"))],
                 ["DeepDTA (published)", DEEPDTA["mse"], DEEPDTA["ci"], DEEPDTA["rm2"]],
                 ["GraphDTA GIN (published)", GRAPHDTA["mse"], GRAPHDTA["ci"], "-"]], ["Davis test", "MSE", "CI", "r_m²"]))
    return {"config_source": source, "config": config, "seeds": seeds, "test": summary, "published": {"DeepDTA": DEEPDTA, "GraphDTA": GRAPHDTA},
            "compute": {"epochs": epochs, "wall_s": round(wall, 1), "train_subsample": args.davis_subsample}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["los_loop", "davis"], choices=["los_loop", "davis"])
    ap.add_argument("--seeds", type=int, default=3, help="Los-loop seeds")
    ap.add_argument("--los-epochs", type=int, default=6)
    ap.add_argument("--los-patience", type=int, default=4)
    ap.add_argument("--los-stride", type=int, default=12, help="train on every k-th window (1: all)")
    ap.add_argument("--seeds-davis", type=int, default=2)
    ap.add_argument("--davis-epochs", type=int, default=4)
    ap.add_argument("--davis-patience", type=int, default=3)
    ap.add_argument("--davis-subsample", type=float, default=0.2, help="fraction of the training pairs")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.los_epochs, args.los_stride = 2, 1, 48
        args.seeds_davis, args.davis_epochs, args.davis_subsample = 2, 1, 0.02
    result = {"machine": machine()}
    if "los_loop" in args.datasets:
        result["los_loop"] = los_loop(args)
    if "davis" in args.datasets:
        result["davis"] = davis(args)
    save("published" + ("-quick" if args.quick else ""), result)
    return result


if __name__ == "__main__":
    main()
