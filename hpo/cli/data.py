"""``hpo data fetch NAME [--dir DIR]`` and ``hpo data list``: the public datasets the seed studies name,
downloaded into the layout the studies read (see :mod:`hpo.data.fetch`)."""

from __future__ import annotations

import argparse

from hpo.cli._output import out
from hpo.cli._registry import command


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_action", metavar="ACTION")
    f = sub.add_parser("fetch", help="download a dataset (checksums, resume, progress bar)",
                       description="download a public dataset a seed study names, into the folder the study reads")
    f.add_argument("name", metavar="NAME", help="a dataset of `hpo data list` (dft_3d, metr_la, pems_bay, davis, kiba)")
    f.add_argument("--dir", default=None,
                   help="data root (default: $HPO_DATA, else ./data, where the studies' ../data/... paths point)")
    f.add_argument("--mirror", default=None,
                   help="base URL replacing the registry's: files come from MIRROR/PATH (default: $HPO_DATA_MIRROR)")
    ls = sub.add_parser("list", help="the datasets `hpo data fetch` knows, and whether they are here",
                        description="the datasets `hpo data fetch` knows, their files and whether they are here")
    ls.add_argument("--dir", default=None, help="data root (default: $HPO_DATA, else ./data)")


@command("data", "download the public datasets the seed studies name (hpo data fetch NAME, hpo data list)", _data_args)
def cmd_data(args: argparse.Namespace) -> int:
    from hpo.errors import UsageError

    action = getattr(args, "data_action", None)
    if action == "fetch":
        return _fetch(args)
    if action == "list":
        return _list(args)
    raise UsageError("data: must be followed by an action, fetch NAME or list, but got none")


def _fetch(args: argparse.Namespace) -> int:
    from hpo.data import fetch as F

    res = F.fetch(args.name, args.dir, mirror=args.mirror, progress=F.terminal_bar)
    ds = F.get_dataset(args.name)
    for p in res.downloaded:
        how = "no pinned checksum: its sha256 is stored beside it" if p in res.unpinned else "sha256 verified"
        out(f"downloaded {res.root / p}  ({how})")
    for p in res.present:
        how = "kept as found, its sha256 stored beside it" if p in res.unpinned else "verified"
        out(f"present    {res.root / p}  ({how})")
    for p in res.extracted:
        out(f"extracted  {res.root / p}")
    used = f" for {', '.join(f'studies/{s}.yaml' for s in ds.studies)}" if ds.studies else ""
    out(f"{ds.name}: ready under {res.root}{used}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from hpo.data import fetch as F

    root = F.data_root(args.dir)
    out(f"data root: {root}  (--dir, ${F.DATA_ENV}, default ./{F.DEFAULT_ROOT})")
    for ds in F.DATASETS.values():
        size = sum(f.size for f in ds.files if f.size) if ds.pinned else None
        out(f"{ds.name:<9s} {F.status(ds, args.dir):<8s} {ds.description}")
        out(f"          files: {', '.join(ds.outputs())}" + (f" ({size / 1e6:.1f} MB)" if size else ""))
        out(f"          from:  {ds.source}" + ("" if ds.pinned else f"; {ds.note}"))
        if ds.studies:
            out(f"          used by: {', '.join(f'studies/{s}.yaml' for s in ds.studies)}")
    return 0
