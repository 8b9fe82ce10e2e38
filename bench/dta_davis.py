"""Benchmark: DeepBindNet on Davis (DeepDTA folder, pKd, official folds) beside DeepDTA's published figures.

    python bench/dta_davis.py --quick          # ~30 s: tiny model, 1 epoch on 512 pairs, 1,000 test pairs
    python bench/dta_davis.py                  # one epoch of the CPU baseline: ~7 min on 2 idle CPU cores
    python bench/dta_davis.py --epochs 3       # a longer budget
    python bench/dta_davis.py --config seed --epochs 100 --device cuda   # the seed's full baseline (GPU)

Protocol: training = training folds 1-4, validation = training fold 0 (model selection: the epoch with the
lowest validation MSE), test = the official test fold, read once at the end. Reported: seconds per epoch,
validation and test MSE / CI / r_m², and DeepDTA's (and GraphDTA's) published test figures on the same
fold. A short CPU budget is not the published protocol (DeepDTA: 100 epochs on a GPU): read the figures
as "how far a small budget gets", not as a reproduction. Without ``--quick`` the script also times a few
training steps of the seed's full-size baseline (hidden 256, four fusion layers) and extrapolates its
epoch time on this machine.

The data folder defaults to ``../shared/data/davis`` beside the repository (``--data`` to change it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PUBLISHED = {  # Davis, official test fold, pKd
    "DeepDTA (Öztürk et al. 2018)": {"mse": 0.261, "ci": 0.878, "rm2": 0.630},
    "GraphDTA GIN (Nguyen et al. 2021)": {"mse": 0.229, "ci": 0.893, "rm2": math.nan},
}

#: the seed's baseline (plan 004 defaults); on CPU an epoch of it takes hours
SEED_BASELINE = {"hidden_dim": 256, "feature_dim": 512, "fusion_heads": 8, "fusion_layers": 4, "dropout_rate": 0.1,
                 "gated": True, "batch_size": 128, "lr": 1.0e-4, "weight_decay": 1.0e-3, "scheduler": "none",
                 "patience": 15}
#: the same architecture narrowed to a CPU budget; a short budget also wants a larger, one-cycle lr
CPU_BASELINE = {**SEED_BASELINE, "hidden_dim": 64, "feature_dim": 128, "fusion_heads": 4, "fusion_layers": 2,
                "embed_dim": 32, "protein_pool": 4, "lr": 1.0e-3, "scheduler": "onecycle"}
DAVIS_DATA = {"max_smiles_len": 85, "max_protein_len": 1200}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis", help="DeepDTA Davis folder")
    ap.add_argument("--quick", action="store_true", help="tiny model, 1 epoch on subsamples of every split: ~30 s")
    ap.add_argument("--config", choices=["cpu", "seed"], default="cpu", help="cpu: narrowed baseline; seed: the seed's")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-seed-timing", action="store_true", help="skip timing the seed's full-size baseline")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from hpo.tasks import Splits, get_task
    from hpo.train import fit
    from hpo.train.loop import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"{args.data}: Davis folder not found (use --data)", file=sys.stderr)
        return 2
    Task = get_task("drug_target")
    task = Task(Task.DatasetSpec.model_validate({"format": "deepdta", "path": str(args.data), "pkd": True, "val_fold": 0}))

    if args.quick:
        flat = {**Task.presets["tiny"], **DAVIS_DATA, "batch_size": 64, "scheduler": "onecycle"}
    else:
        flat = {**(CPU_BASELINE if args.config == "cpu" else SEED_BASELINE), **DAVIS_DATA}
    flat.update(epochs=args.epochs or 1, seed=args.seed)
    train_cfg, model_cfg, data_cfg = Task.split_config(flat)

    t0 = time.perf_counter()
    splits = task.load(data_cfg)
    load_s = time.perf_counter() - t0
    test = splits["test"]  # read once here for the final evaluation; training and selection never see it
    if args.quick:
        test = _subset(test, 1000, args.seed)
        splits = Splits(_subset(splits["train"], 512, args.seed), _subset(splits["val"], 256, args.seed), test, splits.info)
    sample = " sample" if args.quick else ""
    print(f"Davis: {splits.info['n_drugs']} drugs x {splits.info['n_proteins']} proteins; train{sample} {splits.size('train')}, "
          f"val{sample} {splits.size('val')} (training fold 0), test{sample} {len(test)} (official fold); load {load_s:.1f}s")
    print(f"config ({'quick' if args.quick else args.config}): {json.dumps(flat, sort_keys=True)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")

    with splits.locked_test():
        result = fit(task, splits, train_cfg, model_cfg, monitor="val_mse", direction="minimize", device=args.device,
                     on_epoch=lambda e, m: print(f"  epoch {e}: train_loss {m['train_loss']:.4f}  val_mse {m['val_mse']:.4f}  "
                                                 f"val_ci {m['val_ci']:.4f}", flush=True))
    model = task.build_model(model_cfg, splits)
    model.load_state_dict(result.best_state)
    test_splits = Splits(splits["train"], splits["val"], test, splits.info)
    test_metrics = evaluate(task, model, test_splits, "test", batch_size=256, device=args.device)
    epoch_s = [s for s in result.curves["epoch_seconds"] if s is not None]

    print(f"\nparameters {result.n_params:,}; {result.epochs_run} epochs, {np.mean(epoch_s):.1f} s/epoch "
          f"(train + val eval), best epoch {result.best_epoch}; {result.stop_detail}")
    rows = [("ours: validation (fold 0)", {k[4:]: v for k, v in result.best.items() if k.startswith("val_")}),
            (f"ours: test (official fold{sample})", {k[5:]: v for k, v in test_metrics.items() if k.startswith("test_")})]
    rows += [(f"{name}: test", figures) for name, figures in PUBLISHED.items()]
    print(f"\n{'':41s} {'MSE':>7s} {'CI':>7s} {'r_m2':>7s} {'RMSE':>7s}")
    for name, m in rows:
        print(f"{name:41s} {_f(m.get('mse')):>7s} {_f(m.get('ci')):>7s} {_f(m.get('rm2')):>7s} {_f(m.get('rmse')):>7s}")

    seed_timing = None
    if not args.quick and not args.no_seed_timing and args.config != "seed":
        seed_timing = time_seed_baseline(task, Task, splits, args.device)
        print(f"\nseed baseline (hidden 256, 4 fusion layers, protein length 1200) on this machine: "
              f"{seed_timing['seconds_per_pair'] * 1000:.0f} ms per training pair -> ~{seed_timing['epoch_hours']:.1f} h per "
              f"epoch of {splits.size('train')} pairs (timed on batches of {seed_timing['batch']}; its activations take ~5 GB "
              "per 16 pairs, so batch 128 is a GPU run)")
    if args.json:
        args.json.write_text(json.dumps({"config": flat, "epochs_run": result.epochs_run, "seconds_per_epoch": float(np.mean(epoch_s)),
                                         "best_epoch": result.best_epoch, "val": rows[0][1], "test": rows[1][1],
                                         "published": PUBLISHED, "seed_baseline_timing": seed_timing}, indent=1, default=float))
    return 0


def time_seed_baseline(task, Task, splits, device: str, batch: int = 8, steps: int = 2) -> dict:
    """Seconds per training pair of the seed's full-size model (forward, backward, AdamW step)."""
    from hpo.train.optim import make_optimizer

    train_cfg, model_cfg, _ = Task.split_config({**SEED_BASELINE, **DAVIS_DATA, "batch_size": batch})
    model = task.build_model(model_cfg, splits).to(device).train()
    opt = make_optimizer(task.group_parameters(model), train_cfg)
    times = []
    for i, b in enumerate(task.loader(splits, "train", batch, shuffle=True, seed=0)):
        if i > steps:
            break
        b = {k: v.to(device) for k, v in b.items()}
        t0 = time.perf_counter()
        task.step(model, b, train=True).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    per_pair = min(times[1:] or times) / batch  # the first step pays one-off set-up
    return {"batch": batch, "seconds_per_pair": per_pair, "epoch_hours": per_pair * splits.size("train") / 3600}


def _subset(part, n: int, seed: int):
    import numpy as np

    from models.drug_target.data import PairSet

    ix = np.sort(np.random.default_rng(seed).permutation(len(part))[:n])
    return PairSet(part.tables, part.drug_idx[ix], part.protein_idx[ix], part.y[ix])


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
