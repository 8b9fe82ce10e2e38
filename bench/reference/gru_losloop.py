"""A GRU encoder-decoder on Los-loop in plain PyTorch, under a wall-clock budget: the reference arm of
bench/time_to_quality.py on traffic.

    python bench/reference/gru_losloop.py --minutes 5 --seed 0
    python bench/reference/gru_losloop.py --minutes 30 --seed 1 --json runs/bench/gru_seed1.json

Data: T-GCN's Los-loop (``los_speed.csv``: 2016 five-minute steps x 207 sensors, mph; 0 would be a missing
reading). The time axis is cut chronologically into train 70 % / validation 10 % / test 20 % (T-GCN's test
part is its last 20 %); windows never cross a cut. A z-score (one mean and std) is fitted on the observed
training readings; the inputs are the scaled reading (missing -> 0) and the time of day in [0, 1) (the file
starts at midnight). 12 steps in, 12 steps out.

Model (DCRNN-sized, without the graph; T-GCN's recurrent half): a 2-layer GRU (64 units) encodes each
sensor's input window (weights shared over sensors), a 2-layer GRU decoder is fed its own previous output and
the forecast step's time of day, and a linear read-out gives the scaled speed. Loss: masked MAE in mph; Adam
lr 1e-3, batch 32 windows, gradient norm clipped at 5. The epoch with the lowest validation MAE (all 12
steps) is the model; the test part is scored after each epoch for the record only (its time is left out of
the elapsed time): masked MAE / RMSE over all steps and at the 15-minute horizon (step 3; T-GCN: RMSE 5.13,
MAE 3.18 on its 80/20 split).

The budget (``--minutes``) counts from the start of the process (or ``--t0``) and includes the imports and
the data preparation: no epoch starts that would, at the pace of the previous one, end after it. This script
imports neither ``hpo`` nor ``models``.
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

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "metr_la" / "los_speed.csv"
PUBLISHED = {"rmse_h3": 5.13, "mae_h3": 3.18}  # T-GCN (Zhao et al. 2019), Los-loop, 15 minutes
STEPS_PER_DAY = 288


def load(path: Path, train_frac: float, val_frac: float, L: int, H: int) -> dict:
    """The three chronological parts: ``x`` (T_part, N, 2) inputs, ``y`` (T_part, N) mph, ``tf`` (T_part, 1)."""
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)  # (T, N); the first row holds sensor ids
    if values.ndim != 2 or not np.isfinite(values).all():
        raise SystemExit(f"{path}: readings: must be a finite time x sensors matrix, but got shape {values.shape}")
    T = values.shape[0]
    n_train, n_val = int(round(T * train_frac)), int(round(T * val_frac))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, T)}
    obs = values[:n_train][values[:n_train] != 0]
    mean, std = float(obs.mean()), float(max(obs.std(), 1e-6))
    tod = (np.arange(T) % STEPS_PER_DAY / STEPS_PER_DAY).astype(np.float32)[:, None]  # (T, 1)
    scaled = np.where(values != 0, (values - mean) / std, 0.0).astype(np.float32)
    x = np.concatenate([scaled[:, :, None], np.broadcast_to(tod[:, None, :], (*values.shape, 1))], axis=2)
    parts = {}
    for k, (a, b) in bounds.items():
        if b - a < L + H:
            raise SystemExit(f"{path}: {k} part: must hold at least {L + H} steps, but got {b - a}")
        parts[k] = {"x": torch.from_numpy(np.ascontiguousarray(x[a:b])), "y": torch.from_numpy(values[a:b].copy()),
                    "tf": torch.from_numpy(tod[a:b].copy()), "n": b - a - L - H + 1}
    return {"parts": parts, "mean": mean, "std": std, "n_nodes": values.shape[1]}


def window_batch(part: dict, starts: torch.Tensor, L: int, H: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, L, N, 2), y (B, H, N), tf (B, H, 1) of the windows starting at ``starts``."""
    t_in = starts[:, None] + torch.arange(L)
    t_out = starts[:, None] + L + torch.arange(H)
    return part["x"][t_in], part["y"][t_out], part["tf"][t_out]


class GRUSeq2Seq(nn.Module):
    """(B, L, N, F), (B, H, F_t) -> (B, H, N) scaled; one sequence per sensor, weights shared."""

    def __init__(self, in_features: int, time_features: int, horizon: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.H, self.Ft = horizon, time_features
        self.encoder = nn.GRU(in_features, hidden, layers, batch_first=True)
        self.decoder = nn.GRU(1 + time_features, hidden, layers, batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        B, L, N, F = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(B * N, L, F)
        _, h = self.encoder(seq)
        prev = seq[:, -1:, :1]  # (B*N, 1, 1) the last scaled reading
        tfn = tf[:, :, None, :].expand(B, self.H, N, self.Ft).permute(0, 2, 1, 3).reshape(B * N, self.H, self.Ft)
        outs = []
        for t in range(self.H):
            o, h = self.decoder(torch.cat([prev, tfn[:, t:t + 1]], dim=-1), h)
            prev = self.readout(o)
            outs.append(prev)
        return torch.cat(outs, dim=1).view(B, N, self.H).transpose(1, 2)


def masked_mae(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = y != 0
    return torch.where(m, (pred - y).abs(), torch.zeros_like(pred)).sum() / m.sum().clamp(min=1)


@torch.no_grad()
def metrics(model, data: dict, part: str, L: int, H: int, batch: int = 64) -> dict:
    """Masked MAE / RMSE (mph) over all steps and at step 3 (15 minutes)."""
    model.eval()
    p = data["parts"][part]
    preds, ys = [], []
    for s in range(0, p["n"], batch):
        x, y, tf = window_batch(p, torch.arange(s, min(s + batch, p["n"])), L, H)
        preds.append(model(x, tf) * data["std"] + data["mean"])
        ys.append(y)
    pred, y = torch.cat(preds).double(), torch.cat(ys).double()
    out = {}
    for name, (pp, yy) in {"": (pred, y), "_h3": (pred[:, 2], y[:, 2])}.items():
        m = yy != 0
        err = (pp - yy)[m]
        out[f"mae{name}"] = float(err.abs().mean())
        out[f"rmse{name}"] = float(math.sqrt(float((err ** 2).mean())))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget, start-up and data included (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="T-GCN's los_speed.csv (default ../shared/data/metr_la/los_speed.csv)")
    ap.add_argument("--epochs", type=int, default=200, help="most epochs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-stride", type=int, default=1, help="train on every k-th window start (quick runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--t0", type=float, default=None, help="epoch seconds the budget counts from (default: this process's start)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-epoch record here")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        raise SystemExit(f"--minutes: must be > 0, but got {args.minutes}")
    if args.train_stride < 1:
        raise SystemExit(f"--train-stride: must be >= 1, but got {args.train_stride}")
    if not args.data.is_file():
        raise SystemExit(f"--data: must be T-GCN's los_speed.csv, but got {args.data} (not a file)")
    t0 = args.t0 if args.t0 is not None else _START
    budget = args.minutes * 60.0
    L = H = 12
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    data = load(args.data, 0.7, 0.1, L, H)
    train = data["parts"]["train"]
    starts_all = torch.arange(0, train["n"], args.train_stride)
    model = GRUSeq2Seq(2, 1, H, hidden=args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"GRU seq2seq on Los-loop: {data['n_nodes']} sensors; windows train {len(starts_all)} (stride {args.train_stride}), "
          f"val {data['parts']['val']['n']}, test {data['parts']['test']['n']} (70/10/20 chronological); "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {torch.get_num_threads()} threads; budget {budget:.0f} s; "
          f"set-up {time.time() - t0:.1f} s", flush=True)

    record, best, excluded, last = [], None, 0.0, None  # excluded: seconds spent scoring the test part
    for epoch in range(1, args.epochs + 1):
        start = time.time() - t0 - excluded
        if last is not None and start + last > budget:
            break
        model.train()
        total, n = 0.0, 0
        order = starts_all[torch.randperm(len(starts_all), generator=gen)]
        for s in range(0, len(order), args.batch_size):
            x, y, tf = window_batch(train, order[s:s + args.batch_size], L, H)
            loss = masked_mae(model(x, tf) * data["std"] + data["mean"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total, n = total + float(loss.detach()) * len(x), n + len(x)
        val = metrics(model, data, "val", L, H)
        elapsed = time.time() - t0 - excluded
        last = elapsed - start
        t_test = time.time()
        test = metrics(model, data, "test", L, H)  # for the record only: never selects anything
        excluded += time.time() - t_test
        if best is None or val["mae"] < best["val_mae"]:
            best = {"epoch": epoch, "val_mae": val["mae"], **{f"test_{k}": v for k, v in test.items()}}
        row = {"epoch": epoch, "elapsed_s": elapsed, "train_loss": total / max(n, 1), **{f"val_{k}": v for k, v in val.items()},
               **{f"test_{k}": v for k, v in test.items()}, "selected_epoch": best["epoch"],
               "selected_test_rmse_h3": best["test_rmse_h3"], "in_budget": elapsed <= budget}
        record.append(row)
        print(f"epoch {epoch:3d}  elapsed {elapsed:7.1f} s  train_mae {row['train_loss']:.3f}  val_mae {val['mae']:.3f}  "
              f"test_mae {test['mae']:.3f}  test_rmse_h3 {test['rmse_h3']:.3f}  test_mae_h3 {test['mae_h3']:.3f}  | selected epoch "
              f"{best['epoch']}: test_rmse_h3 {best['test_rmse_h3']:.3f}{'' if elapsed <= budget else '  (past the budget)'}", flush=True)

    inside = [r for r in record if r["in_budget"]]
    sel = min(inside, key=lambda r: r["val_mae"]) if inside else None
    if sel is None:
        print("no epoch ended within the budget")
    else:
        print(f"\nat the budget: epoch {sel['epoch']} (best validation MAE {sel['val_mae']:.3f}): test at 15 min RMSE "
              f"{sel['test_rmse_h3']:.3f}, MAE {sel['test_mae_h3']:.3f}; all 12 steps MAE {sel['test_mae']:.3f}  "
              f"(T-GCN published at 15 min: RMSE {PUBLISHED['rmse_h3']}, MAE {PUBLISHED['mae_h3']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"reference": "gru_seq2seq", "dataset": "los_loop", "seed": args.seed, "budget_s": budget,
                                         "metric": "test_rmse_h3", "epochs": record, "selected": sel, "published": PUBLISHED,
                                         "threads": torch.get_num_threads()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
