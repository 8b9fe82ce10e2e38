"""``hpo tensorboard``: a study's learning curves as TensorBoard event files (one run per trial, the hparams
plugin), written by :mod:`hpo.analysis.tensorboard` (the optional extra ``fusion-hpo[tensorboard]``)."""

from __future__ import annotations

import argparse

from hpo.cli._output import out
from hpo.cli._registry import command


def _tensorboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store (a stage: PLAN/STAGE)")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--out", help="folder of the runs (default runs/tensorboard/STUDY, '/' written '__'); "
                                 "an earlier export there is replaced")


@command("tensorboard", "export a study's learning curves as TensorBoard event files (one run per trial, hparams)",
         _tensorboard_args)
def cmd_tensorboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo.analysis.tensorboard import _tensorboardx, check_out, default_out, export_tensorboard
    from hpo.cli.results import _stored

    _tensorboardx()  # without the extra: say so before opening the store
    target = Path(args.out) if args.out else default_out(args.study_name)
    check_out(target)  # a folder of other files: refused before the store is opened
    _, ostudy = _stored(args)
    result = export_tensorboard(ostudy, target)
    left_out = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
    out(f"wrote {len(result.runs)} runs ({result.n_points} scalar points) to {result.out}/"
        + (f"; left out (no curves): {left_out}" if left_out else ""))
    out(f"view: tensorboard --logdir {result.out}   # Scalars: curves per trial; HParams: params vs final metrics")
    return 0
