"""DeepDTA on Davis in plain PyTorch, under a wall-clock budget: the reference arm of bench/time_to_quality.py.

    python bench/reference/deepdta.py --minutes 5 --seed 0
    python bench/reference/deepdta.py --minutes 30 --seed 1 --json runs/bench/deepdta_seed1.json

The model is DeepDTA's (Öztürk, Özgür, Ozkirimli, Bioinformatics 34(17):i821, 2018): a 128-wide character
embedding and three 1-D convolutions per branch (32, 64 and 96 filters; kernels 4, 6, 8 for SMILES and 4, 8,
12 for proteins, no padding, ReLU), global max-pooling, the two 96-wide codes concatenated into a
1024-1024-512 fully connected head (dropout 0.1 after the first two layers) and one output; MSE on pKd, Adam
at lr 1e-3. SMILES are cut to 85 characters and proteins to 1200 residues (DeepDTA's Davis lengths).

Batches of about 256 pairs are formed from a few proteins at a time (256 / the mean number of training pairs
per protein, ~6 on Davis) with every pair of those proteins, and each distinct protein and drug of a batch is
encoded once; evaluation encodes each of the 442 proteins and 68 drugs once and scores the pairs from those
codes. Protocol: training = training folds 1-4, validation = training fold 0 (the epoch with the lowest
validation MSE is the model), test = the official test fold, scored after each epoch for the record only
(its time is left out of the elapsed time; nothing is selected on it).

The budget (``--minutes``) counts from the start of the process (or ``--t0``, the time the caller launched it)
and includes the imports and the data preparation: no epoch starts that would, at the pace of the previous
one, end after it. This script imports neither ``hpo`` nor ``models``.
"""

from __future__ import annotations

import time

_START = time.time()  # before the heavy imports: they count in the budget

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "davis"
PUBLISHED = {"mse": 0.261, "ci": 0.878, "rm2": 0.630}  # DeepDTA, Davis official test fold
SMILES_ALPHABET = "#%()+-./0123456789=@ABCDEFGHIKLMNOPRSTUVWXYZ[\\]abcdefgilmnorstuy"  # DeepDTA's CHARISOSMISET
PROTEIN_ALPHABET = "ABCDEFGHIKLMNOPQRSTUVWXYZ"  # DeepDTA's CHARPROTSET


# --------------------------------------------------------------------------------------------- data
def encode(seqs: list[str], alphabet: str, max_len: int) -> torch.Tensor:
    """(S, max_len) long: 1-based character ids, 0 after the end (and for a character outside the alphabet)."""
    ids = {c: i + 1 for i, c in enumerate(alphabet)}
    out = np.zeros((len(seqs), max_len), np.int64)
    for r, s in enumerate(seqs):
        for c_ix, ch in enumerate(s[:max_len]):
            out[r, c_ix] = ids.get(ch, 0)
    return torch.from_numpy(out)


def load_davis(folder: Path, max_smiles: int, max_protein: int) -> dict:
    """Token tables and the train / val / test pairs (drug index, protein index, pKd) of DeepDTA's Davis."""
    drugs = list(json.loads((folder / "ligands_can.txt").read_text()).values())
    proteins = list(json.loads((folder / "proteins.txt").read_text()).values())
    kd = np.loadtxt(folder / "drug-target_interaction_affinities_Kd__Davis_et_al.2011v1.txt")
    if kd.shape != (len(drugs), len(proteins)):
        raise SystemExit(f"{folder}: affinity matrix: must be drugs x proteins {len(drugs)} x {len(proteins)}, but got {kd.shape}")
    y = -np.log10(kd / 1e9)  # pKd
    rows, cols = np.where(~np.isnan(y))  # DeepDTA's pair order: the non-NaN entries, row-major
    folds = json.loads((folder / "folds" / "train_fold_setting1.txt").read_text())
    test = np.asarray(json.loads((folder / "folds" / "test_fold_setting1.txt").read_text()))
    parts = {"train": np.concatenate([np.asarray(f) for f in folds[1:]]), "val": np.asarray(folds[0]), "test": test}
    pairs = {k: (torch.from_numpy(rows[ix]), torch.from_numpy(cols[ix]), torch.from_numpy(y[rows[ix], cols[ix]]).float())
             for k, ix in parts.items()}
    return {"drugs": encode(drugs, SMILES_ALPHABET, max_smiles), "proteins": encode(proteins, PROTEIN_ALPHABET, max_protein),
            "pairs": pairs}


def protein_batches(protein_idx: torch.Tensor, per_batch: int, gen: torch.Generator):
    """Index tensors into the training pairs: the pairs of ``per_batch`` proteins at a time, proteins and
    pairs in a fresh random order each epoch."""
    order = torch.randperm(len(protein_idx), generator=gen)
    by_protein: dict[int, list[int]] = {}
    for i in order.tolist():
        by_protein.setdefault(int(protein_idx[i]), []).append(i)
    groups = list(by_protein.values())
    perm = torch.randperm(len(groups), generator=gen).tolist()
    for s in range(0, len(perm), per_batch):
        yield torch.tensor([i for g in perm[s:s + per_batch] for i in groups[g]])


# --------------------------------------------------------------------------------------------- model
class Branch(nn.Module):
    """Embedding, three valid 1-D convolutions with ReLU, global max-pool: ``(S, L)`` ids -> ``(S, filters[-1])``."""

    def __init__(self, vocab: int, embed: int, filters: list[int], kernels: list[int]) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, embed)
        widths = [embed, *filters]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k) for a, b, k in zip(widths[:-1], widths[1:], kernels))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)  # (S, E, L)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.amax(dim=2)  # (S, F)


class DeepDTA(nn.Module):
    def __init__(self, embed: int = 128, filters=(32, 64, 96), drug_kernels=(4, 6, 8), protein_kernels=(4, 8, 12),
                 fc=(1024, 1024, 512), dropout: float = 0.1) -> None:
        super().__init__()
        self.drug = Branch(len(SMILES_ALPHABET), embed, list(filters), list(drug_kernels))
        self.protein = Branch(len(PROTEIN_ALPHABET), embed, list(filters), list(protein_kernels))
        layers, width = [], 2 * filters[-1]
        for i, f in enumerate(fc):
            layers += [nn.Linear(width, f), nn.ReLU()] + ([nn.Dropout(dropout)] if i < len(fc) - 1 else [])
            width = f
        self.head = nn.Sequential(*layers, nn.Linear(width, 1))

    def pairs(self, d_code: torch.Tensor, p_code: torch.Tensor, d_ix: torch.Tensor, p_ix: torch.Tensor) -> torch.Tensor:
        """Predictions (B,) of pairs ``(d_ix, p_ix)`` (rows of the codes)."""
        return self.head(torch.cat([d_code[d_ix], p_code[p_ix]], dim=1)).squeeze(1)


def train_epoch(model, opt, data: dict, per_batch: int, gen: torch.Generator) -> float:
    """One pass over the training pairs; each distinct drug and protein of a batch is encoded once."""
    model.train()
    d_all, p_all, y_all = data["pairs"]["train"]
    total, n = 0.0, 0
    for ix in protein_batches(p_all, per_batch, gen):
        d_u, d_inv = torch.unique(d_all[ix], return_inverse=True)
        p_u, p_inv = torch.unique(p_all[ix], return_inverse=True)
        pred = model.pairs(model.drug(data["drugs"][d_u]), model.protein(data["proteins"][p_u]), d_inv, p_inv)
        loss = torch.mean((pred - y_all[ix]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(ix), n + len(ix)
    return total / max(n, 1)


@torch.no_grad()
def predict(model, data: dict, part: str, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) of a split: each drug and protein of the split encoded once, then the pairs scored."""
    model.eval()
    d_ix, p_ix, y = data["pairs"][part]
    d_u, d_inv = torch.unique(d_ix, return_inverse=True)
    p_u, p_inv = torch.unique(p_ix, return_inverse=True)
    d_code = torch.cat([model.drug(data["drugs"][d_u[s:s + chunk]]) for s in range(0, len(d_u), chunk)])
    p_code = torch.cat([model.protein(data["proteins"][p_u[s:s + chunk]]) for s in range(0, len(p_u), chunk)])
    pred = torch.cat([model.pairs(d_code, p_code, d_inv[s:s + 8192], p_inv[s:s + 8192]) for s in range(0, len(y), 8192)])
    return pred.numpy().astype(np.float64), y.numpy().astype(np.float64)

# --------------------------------------------------------------------------------------------- metrics
def concordance_index(y: np.ndarray, p: np.ndarray, chunk: int = 1024) -> float:
    """Over pairs with y_i > y_j: the fraction ordered the same by p (ties in p count 1/2)."""
    num = den = 0.0
    for s in range(0, len(y), chunk):
        dy = y[s:s + chunk, None] - y[None, :]
        dp = p[s:s + chunk, None] - p[None, :]
        ordered = dy > 0
        num += float(np.sum((dp > 0) & ordered) + 0.5 * np.sum((dp == 0) & ordered))
        den += float(np.sum(ordered))
    return num / den if den else math.nan


def rm2(y: np.ndarray, p: np.ndarray) -> float:
    """DeepDTA's r_m^2 = r^2 (1 - sqrt(|r^2 - r0^2|)), r0^2 through the origin."""
    r2 = float(np.corrcoef(y, p)[0, 1] ** 2)
    k = float(np.sum(y * p) / np.sum(p * p))
    r02 = 1.0 - float(np.sum((y - k * p) ** 2) / np.sum((y - y.mean()) ** 2))
    return r2 * (1.0 - math.sqrt(abs(r2 - r02)))


def scores(model, data: dict, part: str, full: bool) -> dict:
    pred, y = predict(model, data, part)
    out = {"mse": float(np.mean((pred - y) ** 2))}
    if full:
        out.update(ci=concordance_index(y, pred), rm2=rm2(y, pred))
    return out


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget, start-up and data included (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="DeepDTA's Davis folder (default ../shared/data/davis)")
    ap.add_argument("--epochs", type=int, default=100, help="most epochs (DeepDTA: 100)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--proteins-per-batch", type=int, default=0, help="proteins per batch (default: batch size / mean pairs per protein)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-fraction", type=float, default=1.0, help="train on this seeded fraction of the pairs (quick runs)")
    ap.add_argument("--proteins", type=int, default=0, help="keep only the pairs of this many seeded proteins (quick runs; 0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--t0", type=float, default=None, help="epoch seconds the budget counts from (default: this process's start)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-epoch record here")
    args = ap.parse_args(argv)
    if not 0.0 < args.train_fraction <= 1.0:
        raise SystemExit(f"--train-fraction: must be in (0, 1], but got {args.train_fraction}")
    if args.minutes <= 0:
        raise SystemExit(f"--minutes: must be > 0, but got {args.minutes}")
    if not args.data.is_dir():
        raise SystemExit(f"--data: must be DeepDTA's Davis folder, but got {args.data} (not a folder)")
    t0 = args.t0 if args.t0 is not None else _START
    budget = args.minutes * 60.0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    data = load_davis(args.data, 85, 1200)
    if args.train_fraction < 1.0:
        d, p, y = data["pairs"]["train"]
        keep = torch.randperm(len(y), generator=gen)[: max(1, int(len(y) * args.train_fraction))].sort().values
        data["pairs"]["train"] = (d[keep], p[keep], y[keep])
    if args.proteins > 0:
        keep_p = torch.randperm(len(data["proteins"]), generator=gen)[: args.proteins]
        for part, (d, p, y) in data["pairs"].items():
            m = torch.isin(p, keep_p)
            data["pairs"][part] = (d[m], p[m], y[m])
    n_train = len(data["pairs"]["train"][2])
    n_proteins = len(torch.unique(data["pairs"]["train"][1]))
    per_batch = args.proteins_per_batch or max(1, round(args.batch_size * n_proteins / n_train))
    model = DeepDTA()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sizes = {k: len(v[2]) for k, v in data["pairs"].items()}
    print(f"DeepDTA on Davis: train {sizes['train']} (folds 1-4), val {sizes['val']} (fold 0), test {sizes['test']} "
          f"(official); {per_batch} proteins per batch; {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"{torch.get_num_threads()} threads; budget {budget:.0f} s; set-up {time.time() - t0:.1f} s", flush=True)

    record, best, excluded, last = [], None, 0.0, None  # excluded: seconds spent scoring the test fold
    for epoch in range(1, args.epochs + 1):
        start = time.time() - t0 - excluded
        if last is not None and start + last > budget:
            break
        loss = train_epoch(model, opt, data, per_batch, gen)
        val = scores(model, data, "val", full=True)
        elapsed = time.time() - t0 - excluded
        last = elapsed - start
        t_test = time.time()
        test = scores(model, data, "test", full=True)  # for the record only: never selects anything
        excluded += time.time() - t_test
        if best is None or val["mse"] < best["val_mse"]:
            best = {"epoch": epoch, "val_mse": val["mse"], "test_mse": test["mse"], "test_ci": test["ci"], "test_rm2": test["rm2"]}
        row = {"epoch": epoch, "elapsed_s": elapsed, "train_loss": loss, **{f"val_{k}": v for k, v in val.items()},
               **{f"test_{k}": v for k, v in test.items()}, "selected_epoch": best["epoch"], "selected_test_mse": best["test_mse"],
               "in_budget": elapsed <= budget}
        record.append(row)
        print(f"epoch {epoch:3d}  elapsed {elapsed:7.1f} s  train_loss {loss:.4f}  val_mse {val['mse']:.4f}  val_ci {val['ci']:.4f}  "
              f"test_mse {test['mse']:.4f}  test_ci {test['ci']:.4f}  | selected epoch {best['epoch']}: test_mse "
              f"{best['test_mse']:.4f}{'' if elapsed <= budget else '  (past the budget)'}", flush=True)

    inside = [r for r in record if r["in_budget"]]
    sel = min(inside, key=lambda r: r["val_mse"]) if inside else None
    if sel is None:
        print("no epoch ended within the budget")
    else:
        print(f"\nat the budget: epoch {sel['epoch']} (best validation MSE {sel['val_mse']:.4f}): test MSE {sel['test_mse']:.4f}, "
              f"CI {sel['test_ci']:.4f}, r_m2 {sel['test_rm2']:.4f}  (DeepDTA published: MSE {PUBLISHED['mse']}, "
              f"CI {PUBLISHED['ci']}, r_m2 {PUBLISHED['rm2']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"reference": "deepdta", "dataset": "davis", "seed": args.seed, "budget_s": budget,
                                         "metric": "test_mse", "epochs": record, "selected": sel, "published": PUBLISHED,
                                         "threads": torch.get_num_threads()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
