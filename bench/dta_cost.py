"""Benchmark: the cost of one training pair of the seed-size DeepBindNet on Davis-shaped batches, today's
way against the deduplicated, packed way (issue #17, item 4).

    python bench/dta_cost.py            # ~5 min on 2 idle CPU cores: 12 timed steps per way
    python bench/dta_cost.py --quick    # ~20 s: the tiny preset, 3 timed steps per way

Both ways train the seed's model (hidden 256, 4 gated fusion layers, feature 512, dropout 0.1; SMILES cut
to 85 tokens, proteins to 1,200) with AdamW on batches of ``--batch`` pairs; a step is forward, backward
and the optimizer step, and the first step of each way is left out (one-off set-up).

- **old** (today's way, dedup off in effect): uniformly shuffled pairs (``batch_proteins: 0``), so a
  batch of 8 holds ~8 distinct proteins, and the padded fusion (``packed=False``): every pair padded to
  the batch's longest protein and SMILES.
- **new**: batches drawn from about ``--proteins`` proteins at a time (``batch_proteins``), each distinct
  protein and drug encoded once and its first-layer projections computed once, and the fusion run on
  each pair's real tokens only (``packed=True``, the default).

Each way runs in a fresh process with ``--threads`` torch threads (peak memory is its own). Before timing,
the new way checks on its first batch that the packed and the padded forward agree. The data are Davis
(``../shared/data/davis``, DeepDTA format, training folds) when the folder is there, else synthetic with
Davis' shapes (68 drugs x 442 proteins, SMILES of 40-85 characters, proteins of 250-1,350 residues).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED_DATA, machine, save
from dta_davis import DAVIS_DATA, SEED_BASELINE

SYNTHETIC_DAVIS = {"format": "synthetic", "n_drugs": 68, "n_proteins": 442, "smiles_length": [40, 85],
                   "protein_length": [250, 1350], "seed": 0}


def dataset(path: Path) -> tuple[dict, str]:
    if path.is_dir():
        return {"format": "deepdta", "path": str(path), "pkd": True, "val_fold": 0}, f"Davis ({path.name}, training folds)"
    return SYNTHETIC_DAVIS, "synthetic, Davis-shaped (68 x 442; the Davis folder was not found)"


def worker(way: str, args) -> dict:
    """Runs in its own process: time ``args.steps`` training steps of one way."""
    import resource

    import torch
    import torch.nn.functional as F

    from hpo.data.cache import DataCache
    from hpo.tasks import get_task
    from hpo.train.optim import make_optimizer

    torch.set_num_threads(args.threads)
    T = get_task("drug_target")
    section, _ = dataset(args.data)
    task = T(T.DatasetSpec.model_validate(section), None, DataCache(None))
    model_keys = {**T.presets["tiny"]} if args.quick else dict(SEED_BASELINE)
    model_keys.pop("epochs", None)
    packed = way == "new"
    flat = {**model_keys, **DAVIS_DATA, "batch_size": args.batch, "batch_proteins": args.proteins if packed else 0}
    train_cfg, model_cfg, data_cfg = T.split_config(flat)
    splits = task.load(data_cfg)
    torch.manual_seed(0)
    model = task.build_model(model_cfg, splits).train()
    opt = make_optimizer(task.group_parameters(model), train_cfg)

    def step(b):
        z = model(b["drug"], b["protein"], b["drug_index"], b["protein_index"], packed=packed)
        loss = F.mse_loss(z, model.scale(b["y"]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    batches = iter(task.loader(splits, "train", args.batch, shuffle=True, seed=0))
    agree = None
    times, pairs, proteins, tokens, cpu = [], 0, 0, 0, 0.0
    for i in range(args.steps + 1):
        b = next(batches)
        if packed and i == 0:  # the two computations agree on this batch (eval mode: no dropout)
            model.eval()
            with torch.no_grad():
                agree = float((model(b["drug"], b["protein"], b["drug_index"], b["protein_index"], packed=True)
                               - model(b["drug"], b["protein"], b["drug_index"], b["protein_index"], packed=False)).abs().max())
            model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        step(b)
        dt = time.perf_counter() - t0
        if i > 0:
            times.append(dt)
            cpu += time.process_time() - c0
            pairs += len(b["y"])
            proteins += b["protein"].shape[0]
            tokens += int((b["protein"] != 0).sum(1)[b["protein_index"]].sum())
    per_pair = [t / args.batch for t in times]
    return {"way": way, "batch": args.batch, "batch_proteins": flat["batch_proteins"], "packed": packed, "steps": len(times),
            "ms_per_pair": 1000 * sum(times) / pairs, "ms_per_pair_best_step": 1000 * min(per_pair),
            "cpu_ms_per_pair": 1000 * cpu / pairs,
            "distinct_proteins_per_batch": proteins / len(times), "protein_tokens_per_pair": tokens / pairs,
            "max_abs_diff_packed_vs_padded": agree, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the tiny preset and 3 timed steps: checks that the script runs")
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "davis", help="DeepDTA Davis folder (else synthetic)")
    ap.add_argument("--batch", type=int, default=8, help="pairs per batch (BENCHMARKS' 729 ms figure: 8)")
    ap.add_argument("--proteins", type=int, default=1, help="new way: batch_proteins (about this many proteins a batch)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per way (default 12; --quick 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=["old", "new"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 12)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return {}
    _, what = dataset(args.data)
    print(f"data: {what}; {'tiny preset' if args.quick else 'seed-size DeepBindNet'}, batch {args.batch}, "
          f"{args.threads} threads, {args.steps} timed steps per way", flush=True)
    result = {"machine": machine(), "data": what, "quick": args.quick, "ways": {}}
    forward = ["--batch", str(args.batch), "--proteins", str(args.proteins), "--steps", str(args.steps),
               "--threads", str(args.threads), "--data", str(args.data), *(["--quick"] if args.quick else [])]
    for way in ("old", "new"):
        r = subprocess.run([sys.executable, __file__, "--worker", way, *forward], capture_output=True, text=True,
                           cwd=ROOT / "bench", timeout=1800)
        if r.returncode != 0:
            raise SystemExit(f"{way} way failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        result["ways"][way] = res
        print(f"{way}: {res['ms_per_pair']:.0f} ms per training pair (best step {res['ms_per_pair_best_step']:.0f}, CPU time {res['cpu_ms_per_pair']:.0f}); "
              f"{res['distinct_proteins_per_batch']:.2f} distinct proteins per batch, {res['protein_tokens_per_pair']:.0f} "
              f"protein tokens per pair; peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    old, new = result["ways"]["old"], result["ways"]["new"]
    result["ratio_new_over_old"] = new["ms_per_pair"] / old["ms_per_pair"]
    print(f"new / old = {result['ratio_new_over_old']:.3f} (best steps: {new['ms_per_pair_best_step'] / old['ms_per_pair_best_step']:.3f}); "
          f"packed vs padded forward on the first new batch: max |diff| {new['max_abs_diff_packed_vs_padded']:.2e}")
    save("dta_cost" + ("-quick" if args.quick else ""), result)
    return result


if __name__ == "__main__":
    main()
