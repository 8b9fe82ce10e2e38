"""``hpo train``: train one config outside a study, an exported one or one of a study's space, and say whether it
reproduces the stored trial."""

from __future__ import annotations

import argparse

from hpo.cli._registry import command
from hpo.cli._output import duration, out


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", help="study file whose space defines the config (with -p / --baseline)")
    p.add_argument("--config", help="a config written by `hpo export`")
    p.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value (parameters of the space, or any other config key); repeatable")
    p.add_argument("--baseline", help="train this named baseline of the study's space (of a staged study: of the stage that has it)")
    p.add_argument("--stage", help="a staged study's stage whose space, named runs and training defaults to use")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a key of the study file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--threads", type=int, help="CPU threads (default: the exported trial's, for bit-exact reruns)")
    p.add_argument("--out", help="folder for the checkpoints: best.pt, latest.pt, epoch_N.pt (default: runs/train/<name>)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also keep the checkpoint of every N-th epoch as epoch_N.pt (default 0: only best and latest)")


@command("train", "train one config: an exported one (--config) or one of a study's space (-p / --baseline)", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from hpo.errors import UsageError
    from hpo.run.single import job_from_export, job_from_study, run_job, stage_of
    from hpo.spec.yaml_io import loads_yaml

    if bool(args.config) == bool(args.study):
        raise UsageError("hpo train: give either --config FILE or a study file (with -p KEY=VALUE or --baseline NAME)")
    if args.save_every < 0:
        raise UsageError(f"--save-every: must be >= 0 (0: only best.pt and latest.pt), but got {args.save_every}")
    if args.config:
        from hpo.analysis.export import read_exported

        job = job_from_export(read_exported(args.config), args.config)
        name = f"{job.source.get('study', 'config')}-trial{job.source.get('trial', '')}"
    else:
        from hpo.spec import load_study

        plan = load_study(args.study, args.sets)
        study = stage_of(plan, args.stage, args.baseline)
        values = {}
        for item in args.params:
            key, sep, text = item.partition("=")
            if not sep:
                raise UsageError(f"-p {item!r}: must be KEY=VALUE")
            values[key.strip()] = loads_yaml(text, "-p")
        job = job_from_study(study, values, args.baseline)
        name = f"{plan.name}-{args.stage + '-' if args.stage else ''}{args.baseline or 'params'}"
    threads = args.threads or job.source.get("threads")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    device = None if args.device in (None, "auto") else args.device
    out(f"training {job.task_cls.name} config ({len(job.config)} keys) on {device or 'auto'} with {torch.get_num_threads()} thread(s)")
    result, path = run_job(job, device=device, out_dir=args.out or f"runs/train/{name.replace('/', '__')}", save_every=args.save_every)
    out(f"{result.stop_detail} in {duration(result.seconds)}")
    for k in sorted(result.best):
        out(f"  {k:<20s} {result.best[k]:.6g}")
    ref = (job.source.get("values") or {}).get(job.monitor)
    got = result.best.get(job.monitor)
    if ref is not None and got is not None:
        same = "reproduced exactly" if got == ref else f"Δ = {got - ref:+.3g} ({(got - ref) / abs(ref) * 100 if ref else 0:+.3f} %)"
        out(f"{job.monitor}: {got:.6g}; trial #{job.source.get('trial')} of study {job.source.get('study')!r} had {ref:.6g}: {same}")
    if path:
        out(f"checkpoint: {path} (also latest.pt{', epoch_N.pt every %d epochs' % args.save_every if args.save_every else ''})")
    return 0
