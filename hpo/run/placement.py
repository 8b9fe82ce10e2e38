"""Where workers run: one trial per GPU by default (``CUDA_VISIBLE_DEVICES`` per worker), CPU threads
divided between the workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from hpo.errors import UsageError


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: its GPU (via CUDA_VISIBLE_DEVICES) and its CPU threads."""

    worker: int
    gpu: str | None  # the CUDA_VISIBLE_DEVICES value for this worker, None on CPU
    threads: int


def plan_workers(workers: int | None, gpus: Sequence[str], cpus: int, threads: int | None = None) -> list[Placement]:
    """One trial per GPU by default; CPU threads divided between workers.

    ``workers`` None means one per GPU (or 1 without GPUs). More workers than GPUs share GPUs round
    robin; fewer use the first ones. ``threads`` overrides the per-worker thread count.
    """
    gpus = [str(g) for g in gpus]
    n = workers if workers is not None else max(1, len(gpus))
    if n < 1:
        raise UsageError(f"--workers must be >= 1, but got {n}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, but got {threads}")
    threads = threads or max(1, cpus // n)
    return [Placement(i, gpus[i % len(gpus)] if gpus else None, threads) for i in range(n)]


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - no torch / broken driver: CPU
        return []


def gpus_for(gpus: Sequence[str] | None, device: str | None) -> list[str]:
    """The GPUs a run uses: those given, none when forced onto the CPU, else every visible one."""
    return list(gpus) if gpus is not None else ([] if device == "cpu" else visible_gpus())
