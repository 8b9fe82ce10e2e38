"""Process-level helpers for a training run: seeding, device choice and the worker's identity."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (CPU runs are then bit-exact for the same thread count)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def resolve_device(device: str | None = None):
    """``None``/"auto" -> the first visible CUDA device if any, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_threads() -> int:
    import torch

    return torch.get_num_threads()


def visible_gpus() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def worker_id() -> str:
    """``host:pid`` of this worker (stored with each trial: which machine and process ran it)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
