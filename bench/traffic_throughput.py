"""Training throughput and peak memory of the traffic model (Phase-1 baseline): today's implementation
against its first version (frozen in ``bench/legacy/traffic_v1.py``) and against a plain GRU seq2seq.

    python bench/traffic_throughput.py            # Los-loop CSV from ../shared/data if present, else synthetic
    python bench/traffic_throughput.py --quick    # a few seconds: batch 4, 2 timed steps
    python bench/traffic_throughput.py --json out.json --batch-size 32 --steps 5
    python bench/traffic_throughput.py --models traffic traffic_v1 --allocators malloc   # a subset (A/B runs)

Timings on a shared machine depend on its load: the 1-minute load average before and after is
reported with the figures; with more runnable processes than cores, ``--threads 1`` is steadier.

All models train on the *same* batches (the first ones of the seeded training loader) with AdamW
and the task's masked MAE in data units, one optimizer step per batch; ``traffic`` (the config defaults),
``traffic_recompute`` (the same model with ``recompute: block``: backward recomputes each stream block
instead of keeping what it needs) and ``traffic_v1`` start from
the same seeded parameters (the same architecture: issue #17 changed how it computes, not what), and their
losses on the first batch in eval mode (no dropout) are reported to show it (``eval loss``; the first
training step's loss differs a little, since today's model draws its dropout masks otherwise than
``F.dropout``: ``models/layers/dropout.py``). Reported per model:

- ``samples_per_s``: windows per second over the timed steps (after ``--warmup`` untimed steps), wall
  clock; ``cpu_samples_per_s`` the same over the process's CPU time (steadier on a loaded machine);
- ``peak_mib``: peak resident memory of the training steps above the process's resident memory just
  before the model was built (so the data, the interpreter and torch itself are excluded). Each model
  is measured in a fresh process (``spawn``), because the peak RSS (``getrusage().ru_maxrss``) is a
  high-water mark that never goes down. ``tracemalloc`` would not do: torch allocates tensor memory
  in C++, outside Python's allocator, so tracemalloc sees almost none of it.

Each traffic model is measured under two allocator settings, each in its own process: glibc's default
(``malloc``: what a plain run resides in; glibc keeps freed tensor memory in its heap, so the peak RSS is
above the most memory live at once) and ``MALLOC_MMAP_THRESHOLD_=131072`` (``mmap``: every block over
128 KiB is its own mapping, returned when freed, so the peak RSS is the tensors' own peak). Ratios compare
models under the same setting.

The GRU baseline is DCRNN-sized without the graph: a 2-layer GRU encoder (64 units) over each sensor's
input window, a 2-layer GRU decoder fed its own previous output and the forecast step's time
features, and a linear read-out. Ratios: traffic / traffic_v1 (issue #17's target: samples/s >= 2x,
peak memory <= 1/3) and traffic / GRU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "metr_la"


def dataset_spec(kind: str) -> dict:
    speed, adj = SHARED / "los_speed.csv", SHARED / "los_adj.csv"
    if kind == "auto":
        kind = "los_loop" if speed.exists() and adj.exists() else "synthetic"
    if kind == "los_loop":
        return {"format": "csv", "path": str(speed), "adj": str(adj), "header": True, "start": "2012-03-01 00:00"}
    return {"format": "synthetic", "n_nodes": 207, "n_days": 7, "steps_per_day": 288}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_gru(info, hidden: int = 64, layers: int = 2):
    import torch
    import torch.nn as nn

    class GRUSeq2Seq(nn.Module):
        """(B, L, N, F), (B, H, F_t) -> (B, H, N) scaled; one sequence per sensor."""

        def __init__(self) -> None:
            super().__init__()
            self.H, self.Ft = info["output_len"], info["time_features"]
            self.encoder = nn.GRU(info["in_features"], hidden, layers, batch_first=True)
            self.decoder = nn.GRU(1 + self.Ft, hidden, layers, batch_first=True)
            self.readout = nn.Linear(hidden, 1)
            self.register_buffer("mean", torch.as_tensor(info["scaler_mean"]))
            self.register_buffer("std", torch.as_tensor(info["scaler_std"]))

        def forward(self, x, tf):
            B, L, N, F = x.shape
            seq = x.permute(0, 2, 1, 3).reshape(B * N, L, F)
            _, h = self.encoder(seq)
            prev = seq[:, -1:, :1]  # (B*N, 1, 1) last scaled reading
            tfn = tf[:, :, None, :].expand(B, self.H, N, self.Ft).permute(0, 2, 1, 3).reshape(B * N, self.H, self.Ft)
            outs = []
            for t in range(self.H):
                o, h = self.decoder(torch.cat([prev, tfn[:, t : t + 1]], dim=-1), h)
                prev = self.readout(o)
                outs.append(prev)
            return torch.cat(outs, dim=1).view(B, N, self.H).transpose(1, 2)

        def unscale(self, y):
            return y * self.std + self.mean

    return GRUSeq2Seq()


def measure(which: str, spec: dict, batch_size: int, warmup: int, steps: int, threads: int, queue) -> None:
    """Runs in a fresh process: load data, build one model, time its training steps."""
    sys.path.insert(0, str(ROOT))
    import torch

    from hpo.data.cache import DataCache
    from hpo.tasks import get_task
    from models.traffic.metrics import masked_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    Task = get_task("traffic")
    task = Task(Task.DatasetSpec.model_validate(spec), cache=DataCache(None))
    # the Phase-1 baseline (config defaults); traffic_recompute: the same, recomputing each stream block in backward
    _, model_cfg, data_cfg = Task.split_config({"recompute": "block"} if which == "traffic_recompute" else {})
    splits = task.load(data_cfg)
    batches = []
    for b in task.loader(splits, "train", batch_size, shuffle=True, seed=0):
        batches.append(b)
        if len(batches) == warmup + steps:
            break
    base = rss_mib()
    if which == "traffic_v1":
        from bench.legacy.traffic_v1 import TrafficTransformer

        i = splits.info
        model = TrafficTransformer(model_cfg, n_nodes=i["n_nodes"], in_features=i["in_features"],
                                   time_features=i["time_features"], input_len=i["input_len"],
                                   output_len=i["output_len"], adj=i["adj"], scaler_mean=i["scaler_mean"],
                                   scaler_std=i["scaler_std"])
    else:
        model = task.build_model(model_cfg, splits) if which.startswith("traffic") else make_gru(splits.info)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-4)
    model.eval()  # the first batch's loss without dropout: the same parameters give the same number
    with torch.no_grad():
        eval_loss = masked_loss(model.unscale(model(batches[0]["x"], batches[0]["tf"])), batches[0]["y"]).item()
    model.train()
    times, cpu_times, losses = [], [], []
    for i, b in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        pred = model.unscale(model(b["x"], b["tf"]))
        loss = masked_loss(pred, b["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    n = sum(len(b["y"]) for b in batches[warmup:])
    queue.put({
        "model": which,
        "params": sum(p.numel() for p in model.parameters()),
        "samples_per_s": n / sum(times),
        "cpu_samples_per_s": n / sum(cpu_times),
        "ms_per_step": 1000 * sum(times) / len(times),
        "peak_mib": peak_rss_mib() - base,
        "first_loss": losses[0],
        "eval_loss": eval_loss,
        "final_loss": losses[-1],
        "n_nodes": splits.info["n_nodes"],
        "threads": torch.get_num_threads(),
    })


#: measured in this order, each in its own fresh process: (model, allocator setting)
MODELS = ("traffic", "traffic_recompute", "traffic_v1")
ALLOCATORS = {"malloc": {}, "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def run(which: str, allocator: str, args, spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=measure, args=(which, spec, args.batch_size, args.warmup, args.steps, args.threads, q))
    saved = dict(os.environ)
    os.environ.update(ALLOCATORS[allocator])  # a spawned child starts with the parent's environment
    try:
        p.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = q.get()
    p.join()
    return {**out, "allocator": allocator}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget: batch 4, 1 warm-up + 2 timed steps")
    ap.add_argument("--data", choices=["auto", "los_loop", "synthetic"], default="auto",
                    help="auto: Los-loop CSV from ../shared/data/metr_la if present, else synthetic (207 sensors)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--models", nargs="+", choices=[*MODELS, "gru"], default=[*MODELS, "gru"],
                    help="measure only these (the ratios need traffic_v1, the GRU ratio gru)")
    ap.add_argument("--allocators", nargs="+", choices=list(ALLOCATORS), default=list(ALLOCATORS))
    ap.add_argument("--json", type=Path, help="write the results here (default: print JSON to stdout)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch_size, args.warmup, args.steps = 4, 1, 2
    spec = dataset_spec(args.data)
    load_before = os.getloadavg()[0]
    rows = {f"{m}/{a}": run(m, a, args, spec) for a in args.allocators for m in MODELS if m in args.models}
    if "gru" in args.models:
        rows["gru/malloc"] = run("gru", "malloc", args, spec)
    t = next(iter(rows.values()))
    g = rows.get("gru/malloc")

    def vs(a: str, b: str) -> dict:
        x, y = rows[a], rows[b]
        return {"samples_per_s": x["samples_per_s"] / y["samples_per_s"],
                "cpu_samples_per_s": x["cpu_samples_per_s"] / y["cpu_samples_per_s"],
                "ms_per_step": x["ms_per_step"] / y["ms_per_step"],
                "peak_mib": x["peak_mib"] / y["peak_mib"] if y["peak_mib"] > 0 else None,
                "first_loss_diff": abs(x["first_loss"] - y["first_loss"]),
                "eval_loss_diff": abs(x["eval_loss"] - y["eval_loss"])}

    def pairs(model: str) -> dict:
        return {a: vs(f"{model}/{a}", f"traffic_v1/{a}") for a in args.allocators
                if f"{model}/{a}" in rows and f"traffic_v1/{a}" in rows}

    tm = rows.get("traffic/malloc")
    result = {
        "data": spec["format"] if spec["format"] == "synthetic" else f"csv:{Path(spec['path']).name}",
        "n_nodes": t["n_nodes"], "batch_size": args.batch_size, "timed_steps": args.steps, "threads": t["threads"],
        "torch": __import__("torch").__version__, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "models": rows,
        "ratio_samples_per_s": tm["samples_per_s"] / g["samples_per_s"] if tm and g else None,
        "ratio_peak_mib": tm["peak_mib"] / g["peak_mib"] if tm and g and g["peak_mib"] > 0 else None,
        "ratio_params": tm["params"] / g["params"] if tm and g else None,
        # today's model (its defaults, and recomputing in backward) against its first version, per allocator setting
        "vs_v1": pairs("traffic"),
        "recompute_vs_v1": pairs("traffic_recompute"),
    }
    print(f"data {result['data']}  sensors {t['n_nodes']}  batch {args.batch_size}  timed steps {args.steps}  "
          f"threads {t['threads']}  load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"{'model / allocator':<30}{'params':>10}{'samples/s':>11}{'cpu s/s':>9}{'ms/step':>10}{'peak MiB':>10}"
          f"{'1st loss':>11}{'eval loss':>11}")
    for name, r in rows.items():
        print(f"{name:<30}{r['params']:>10,}{r['samples_per_s']:>11.2f}{r['cpu_samples_per_s']:>9.2f}"
              f"{r['ms_per_step']:>10.0f}{r['peak_mib']:>10.0f}{r['first_loss']:>11.5f}{r['eval_loss']:>11.5f}")
    for key, name in (("vs_v1", "traffic"), ("recompute_vs_v1", "recompute")):
        for a, r in result[key].items():
            vp = r["peak_mib"]
            print(f"{name + ' / v1 (' + a + ')':<30}{'':>10}{r['samples_per_s']:>11.3f}"
                  f"{r['cpu_samples_per_s']:>9.3f}{r['ms_per_step']:>10.2f}"
                  f"{vp if vp is None else format(vp, '.3f'):>10}{r['first_loss_diff']:>11.1e}{r['eval_loss_diff']:>11.1e}")
    if tm and g:
        rp = result["ratio_peak_mib"]
        print(f"{'ratio traffic / GRU (malloc)':<30}{result['ratio_params']:>10.2f}{result['ratio_samples_per_s']:>11.3f}"
              f"{tm['cpu_samples_per_s'] / g['cpu_samples_per_s']:>9.3f}{tm['ms_per_step'] / g['ms_per_step']:>10.2f}"
              f"{rp if rp is None else format(rp, '.2f'):>10}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    from common import save

    print(f"saved {save('traffic_throughput' + ('-quick' if args.quick else ''), result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
