"""Throughput per model family: training samples/s and peak memory on CPU for the family's *default*
config (its config dataclass defaults: the seed's own model), on real data where there is some; and the
crystal family's graph building time per 1,000 structures on the JARVIS sample. Each family runs in a
fresh process, so peak memory (max RSS) is its own; "model + data" is the peak above the RSS before
the data were loaded.

    python bench/throughput.py            # a few minutes
    python bench/throughput.py --quick    # fewer steps
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import ROOT, data, machine, save, table

FAMILIES = {
    # family -> (task section, config overrides, batch size, what the data are)
    "crystal_text": (lambda: {"family": "crystal_text", "target": "optb88vdw_bandgap",
                              "dataset": {"format": "alignn_folder", "path": str(data("jarvis_alignn_sample", "optb88vdw_bandgap")),
                                          "val_fraction": 0.1, "test_fraction": 0.1}}, {}, 16, "50 JARVIS crystals"),
    "traffic": (lambda: {"family": "traffic", "dataset": {"format": "csv", "path": str(data("metr_la", "los_speed.csv")),
                                                         "adj": str(data("metr_la", "los_adj.csv")), "start": "2012-03-05 00:00"}},
                {}, 32, "Los-loop, 207 sensors, 12 -> 12 steps"),
    "drug_target": (lambda: {"family": "drug_target", "dataset": {"format": "deepdta", "path": str(data("davis")), "pkd": True}},
                    {"max_smiles_len": 85, "max_protein_len": 1200}, 32, "Davis pairs (DeepDTA lengths 85 / 1200)"),
    "face3d": (lambda: {"family": "face3d", "dataset": {"format": "synthetic", "n_samples": 512}}, {}, 32,
               "synthetic faces (16 keypoints + identity)"),
}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(family: str, steps: int, quick: bool = False) -> dict:
    """Runs in its own process: load data, build the default model, time `steps` training steps."""
    import resource

    import torch

    from hpo.data.cache import DataCache
    from hpo.tasks import get_task
    from hpo.train.optim import make_optimizer

    section, overrides, batch, _ = FAMILIES[family]
    section = section()
    if quick:  # only checks the script runs
        batch = 4
    T = get_task(family)
    task = T(T.DatasetSpec.model_validate(section["dataset"]), section.get("target"), DataCache(None))
    before = rss_mb()
    train, model_cfg, data_cfg = T.split_config({**overrides, "batch_size": batch})
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits)
    opt = make_optimizer(task.group_parameters(model), train)
    loader = task.loader(splits, "train", batch, shuffle=True, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    model.train()
    done, samples, t_run = 0, 0, 0.0
    while done < steps + 1:
        for b in loader:
            t0 = time.perf_counter()
            out = task.step(model, b, train=True)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            if done > 0:  # the first step pays one-time costs
                t_run += dt
                samples += out.n
            done += 1
            if done >= steps + 1:
                break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"family": family, "params": n_params, "batch": batch, "steps": steps, "samples_per_s": samples / t_run,
            "peak_rss_mb": peak, "model_and_data_mb": peak - before, "threads": torch.get_num_threads()}


def graph_building(n_rep: int) -> dict:
    """Graphs + line graphs + descriptions of the 50 JARVIS sample crystals, uncached, per 1,000."""
    from hpo.tasks import get_task
    from models.crystal_text.processing import build_structures

    T = get_task("crystal_text")
    spec = T.DatasetSpec.model_validate({"format": "alignn_folder", "path": str(data("jarvis_alignn_sample", "optb88vdw_bandgap"))})
    cfg = T.DataConfig()
    build_structures(spec, "optb88vdw_bandgap", cfg)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_rep):
        out = build_structures(spec, "optb88vdw_bandgap", cfg)
    dt = (time.perf_counter() - t0) / n_rep
    n = len(out["ids"])
    return {"structures": n, "seconds": dt, "per_1000_s": dt / n * 1000, "cutoff": cfg.cutoff, "max_neighbors": cfg.max_neighbors}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    steps = args.steps or (1 if args.quick else 6)
    if args.worker:
        print(json.dumps(worker(args.worker, steps, args.quick)))
        return {}
    result = {"machine": machine(), "families": {}}
    rows = []
    for family, (_, _, batch, what) in FAMILIES.items():
        r = subprocess.run([sys.executable, __file__, "--worker", family, "--steps", str(steps), *(["--quick"] if args.quick else [])],
                           capture_output=True, text=True,
                           cwd=ROOT / "bench", timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"{family} failed:\n{r.stderr[-3000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["data"] = what
        result["families"][family] = res
        rows.append([family, what, f"{res['params'] / 1e6:.2f} M", res["batch"], round(res["samples_per_s"], 2), round(res["peak_rss_mb"]),
                     round(res["model_and_data_mb"])])
        print(f"{family}: {res['samples_per_s']:.2f} samples/s, peak {res['peak_rss_mb']:.0f} MB", flush=True)
    g = graph_building(1 if args.quick else 3)
    result["crystal_graph_building"] = g
    print(table(rows, ["family (default config)", "data", "parameters", "batch", "train samples/s", "peak RSS MB", "model + data MB"]))
    print(f"crystal graphs (periodic graph + line graph + description, cutoff {g['cutoff']} Å, {g['max_neighbors']} neighbours): "
          f"{g['seconds']:.2f} s for {g['structures']} JARVIS structures -> {g['per_1000_s']:.1f} s per 1,000")
    save("throughput" + ("-quick" if args.quick else ""), result)
    return result


if __name__ == "__main__":
    main()
