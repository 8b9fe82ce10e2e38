"""Training-time augmentation of a batch (only in ``step(train=True)``), driven by the model config.

All of it acts on the scaled inputs ``x`` (B, L, N, F) (feature 0 = signal; 0 is the missing marker)
and, for mixup / cutmix, on the targets ``y`` (B, H, N) in data units. Draws use torch's global RNG,
which the trainer seeds, so a run is reproducible.

- ``noise_std``: Gaussian noise added to the observed input signal.
- ``mask_ratio``: that share of input readings is hidden, i.e. set to the missing marker, so the model
  learns to forecast through sensor drop-outs like the ones real data has.
- ``temporal_shift``: each window's input signal is delayed by a random 0..k steps (the first reading
  repeated at the start); the time features and the target stay put. This simulates late data
  (latency) rather than moving the window: with stride-1 windows a moved window is just another
  training sample.
- ``mixup_alpha``: mixup for regression (Zhang et al. 2018): inputs and targets of a window and of a
  randomly paired one are mixed with lambda ~ Beta(a, a) (the pair's time features are mixed too).
  A mixed target counts only where both readings exist (elsewhere it is set to missing).
- ``cutmix_prob``: with this probability a batch swaps a random subset of sensors (a Beta(1, 1) share)
  between paired windows, inputs and targets together. For images CutMix mixes labels by area; here
  every sensor keeps its own target, so the labels stay exact and only the spatial context is mixed.

Label smoothing is a classification device (it softens one-hot targets) and is not offered.
"""

from __future__ import annotations

import torch

from models.traffic.config import TrafficConfig


def augment(x: torch.Tensor, y: torch.Tensor, tf: torch.Tensor, cfg: TrafficConfig):
    """Return augmented copies of ``x`` (B, L, N, F), ``y`` (B, H, N), ``tf`` (B, H, F_t)."""
    B, L, N, _ = x.shape
    on = (cfg.noise_std, cfg.mask_ratio, cfg.temporal_shift, cfg.mixup_alpha, cfg.cutmix_prob)
    if B == 0 or not any(on):
        return x, y, tf
    x = x.clone()
    sig = x[..., 0]  # (B, L, N) view into x
    if cfg.temporal_shift > 0:
        shift = torch.randint(0, cfg.temporal_shift + 1, (B, 1, 1), device=x.device)
        idx = (torch.arange(L, device=x.device)[None, :, None] - shift).clamp(min=0).expand(B, L, N)
        sig.copy_(torch.gather(sig, 1, idx))
    missing = sig == 0
    if cfg.noise_std > 0:
        sig.add_(torch.randn_like(sig) * cfg.noise_std)
        sig.masked_fill_(missing, 0.0)
    if cfg.mask_ratio > 0:
        sig.masked_fill_(torch.rand_like(sig) < cfg.mask_ratio, 0.0)
    if cfg.mixup_alpha > 0 and B > 1:
        lam = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample())
        perm = torch.randperm(B, device=x.device)
        both = (y != 0) & (y[perm] != 0)
        y = torch.where(both, lam * y + (1 - lam) * y[perm], torch.zeros_like(y))
        x = lam * x + (1 - lam) * x[perm]
        tf = lam * tf + (1 - lam) * tf[perm]
    if cfg.cutmix_prob > 0 and B > 1 and float(torch.rand(())) < cfg.cutmix_prob:
        perm = torch.randperm(B, device=x.device)
        nodes = torch.rand(N, device=x.device) < float(torch.rand(()))
        x = torch.where(nodes[None, None, :, None], x[perm], x)
        y = torch.where(nodes[None, None, :], y[perm], y)
    return x, y, tf
