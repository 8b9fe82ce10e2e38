"""Benchmark: one training step of the drug_target family against the plain DeepDTA reference, on the same
Davis batches (issue #17, item 1: what a step of the time-to-quality study's model costs).

    python bench/dta_step.py            # ~1 min on 2 idle CPU cores: 3 models x 8 timed steps, interleaved
    python bench/dta_step.py --quick    # ~15 s: 3 timed steps

Models, each trained by Adam(W) at lr 1e-3 on batches of the pairs of 6 proteins at a time from the Davis training
folds (as both arms of ``bench/time_to_quality.py``), each distinct drug and protein encoded once per batch:

- **reference**: ``bench/reference/deepdta.py``'s DeepDTA (plain PyTorch, proteins padded to 1,200);
- **family, late fusion**: DeepBindNet at ``bench/studies/ttq_davis.yaml``'s ``deepdta`` baseline (read from
  the file: CNN encoders 32-64-96, fusion_layers 0, feature 1024), inputs cut to the batch's longest sequence as the family's loader does;
- **family, 1 fusion layer**: the same with one gated cross-attention fusion layer (the space's other choice).

A step is forward, backward and the optimizer step; the models take turns step by step (so a change of the
machine's load falls on all three alike) and the first step of each is left out. Printed: the median ms per
step and per pair, and each family model's ratio to the reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from common import ROOT, machine, save, table

sys.path[:0] = [str(Path(__file__).resolve().parent / "reference"), str(ROOT)]
import deepdta as reference  # noqa: E402  (bench/reference: the plain script, no hpo import)

STUDY = Path(__file__).resolve().parent / "studies" / "ttq_davis.yaml"


def family_model(fusion_layers: int):
    """DeepBindNet at the time-to-quality study's ``deepdta`` baseline (its fixed values and the baseline's,
    read from ``bench/studies/ttq_davis.yaml``), with ``fusion_layers`` fusion layers."""
    from dataclasses import fields

    import yaml

    from models.drug_target.config import DeepBindConfig
    from models.drug_target.model import DeepBindNet

    spec = yaml.safe_load(STUDY.read_text())
    values = {**spec["space"]["fixed"], **spec["baselines"]["deepdta"], "fusion_layers": fusion_layers}
    cfg = DeepBindConfig(**{f.name: values[f.name] for f in fields(DeepBindConfig) if f.name in values})
    return DeepBindNet(cfg, smiles_vocab_size=len(reference.SMILES_ALPHABET) + 1,
                       protein_vocab_size=len(reference.PROTEIN_ALPHABET) + 1,
                       max_smiles_len=values["max_smiles_len"], max_protein_len=values["max_protein_len"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model (default 8; --quick 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=reference.DATA, help="DeepDTA's Davis folder")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    steps = 3 if args.quick else args.steps
    if steps < 1:
        ap.error(f"--steps: must be >= 1, but got {steps}")
    if args.threads < 1:
        ap.error(f"--threads: must be >= 1, but got {args.threads}")
    if not args.data.is_dir():
        ap.error(f"--data: must be DeepDTA's Davis folder, but got {args.data} (not a folder)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = reference.load_davis(args.data, 85, 1200)
    d_all, p_all, y_all = data["pairs"]["train"]
    batches = list(reference.protein_batches(p_all, 6, torch.Generator().manual_seed(0)))[: steps + 1]

    models = {"reference": reference.DeepDTA(), "family, late fusion": family_model(0), "family, 1 fusion layer": family_model(1)}
    optims = {k: torch.optim.Adam(m.parameters(), 1e-3) if k == "reference" else torch.optim.AdamW(m.parameters(), 1e-3, weight_decay=1e-6)
              for k, m in models.items()}

    def step(name: str, ix: torch.Tensor) -> float:
        model, opt = models[name], optims[name]
        d_u, d_inv = torch.unique(d_all[ix], return_inverse=True)
        p_u, p_inv = torch.unique(p_all[ix], return_inverse=True)
        drugs, proteins = data["drugs"][d_u], data["proteins"][p_u]
        start = time.perf_counter()
        if name == "reference":
            pred = model.pairs(model.drug(drugs), model.protein(proteins), d_inv, p_inv)
        else:  # the family's loader cuts each batch to its longest sequences
            drugs = drugs[:, : int((drugs != 0).sum(1).max())]
            proteins = proteins[:, : int((proteins != 0).sum(1).max())]
            pred = model(drugs, proteins, d_inv, p_inv)
        loss = torch.mean((pred - y_all[ix]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {k: [] for k in models}
    pairs = [len(ix) for ix in batches[1:]]
    for i, ix in enumerate(batches):
        for name in models:
            t = step(name, ix)
            if i:
                times[name].append(t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    per_pair = statistics.median(pairs)
    rows = [[k, sum(p.numel() for p in models[k].parameters()), f"{ms[k]:.1f}", f"{ms[k] / per_pair:.3f}",
             f"{ms[k] / ms['reference']:.2f}"] for k in models]
    print(f"{steps} timed steps per model, median {per_pair:.0f} pairs per batch, {args.threads} threads")
    print(table(rows, ["model", "parameters", "ms per step (median)", "ms per pair", "/ reference"]))
    save("dta_step" + ("-quick" if args.quick else ""), {"machine": machine(), "steps": steps, "threads": args.threads, "pairs": pairs,
                      "ms_per_step": ms, "ratio": {k: ms[k] / ms["reference"] for k in models}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
