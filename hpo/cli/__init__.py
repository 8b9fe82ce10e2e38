"""The ``hpo`` command line: one subcommand per verb, registered in :data:`COMMANDS`.

Heavy libraries (torch, optuna, plotly) are imported inside the commands, so ``hpo --help`` is fast.
User errors print one line each and exit with code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable

from hpo import __version__
from hpo.errors import HpoError

logger = logging.getLogger("hpo")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    def deco(fn: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(name, help, configure, fn)
        return fn

    return deco


def out(line: str = "") -> None:
    """Print a line for people, keeping a progress bar (if any) intact."""
    bar = _ProgressState.bar
    if bar is not None:
        bar.write(line)
    else:
        print(line, flush=True)


class _ProgressState:
    bar = None


def _stored(args: argparse.Namespace):
    """(storage URL, the stored study named by args.study_name) for the commands that read a store."""
    from hpo.analysis.export import load_stored_study
    from hpo.spec.load import DEFAULT_STORAGE

    from hpo.spec.urls import check_url

    url = args.storage or DEFAULT_STORAGE
    check_url(url)
    return url, load_stored_study(url, args.study_name)


# ------------------------------------------------------------------------------ run / worker / create
def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the study file, e.g. --set task.dataset.path=data/x.json (repeatable)")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="storage URL (default: the study's, else sqlite:///runs/hpo.db)")
    p.add_argument("--study-name", help="name of the study in the store (default: the file's name:)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _study_args(p)
    _store_args(p)
    p.add_argument("--trials", type=int, help="total trials of the study (overrides budget.n_trials)")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts (overrides budget.timeout)")
    p.add_argument("--workers", type=int, help="local worker processes on the same store (default: one per GPU, else 1)")
    p.add_argument("--gpus", help="GPU ids to use, e.g. 0,1,3 (default: all visible; one trial per GPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads per worker (default: cores // workers)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="force the training device")
    p.add_argument("--artifacts", help="checkpoint folder (default: the study's artifacts, else runs/artifacts)")
    p.add_argument("--no-checkpoints", action="store_true", help="do not keep best checkpoints")
    p.add_argument("--backend", choices=["local", "ray"], help="execution backend (default: the study's backend)")
    p.add_argument("--address", help="Ray cluster address for --backend ray: auto, local or ray://host:port")
    p.add_argument("--resume-changed", action="store_true",
                   help="continue a stored study of the same name whose task, dataset, objectives or space differ from this file")


def _options(args: argparse.Namespace):
    from hpo.run.runner import RunOptions
    from hpo.spec.urls import check_url

    if args.storage:
        check_url(args.storage)  # a password in --storage is refused before anything reads or writes
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if getattr(args, "gpus", None) else None
    return RunOptions(
        storage=args.storage,
        study_name=args.study_name,
        n_trials=getattr(args, "trials", None),
        timeout=getattr(args, "timeout", None),
        workers=getattr(args, "workers", None),
        gpus=gpus,
        device=None if getattr(args, "device", None) in (None, "auto") else args.device,
        artifacts=getattr(args, "artifacts", None),
        checkpoints=not getattr(args, "no_checkpoints", False),
        threads=getattr(args, "threads", None),
        resume_changed=getattr(args, "resume_changed", False),
    )


def _load(args: argparse.Namespace, check_data: bool = True):
    from hpo.spec.load import apply_sets, load_study
    from hpo.spec.yaml_io import load_yaml

    study = load_study(args.study, args.sets, check_data=check_data)
    raw = apply_sets(load_yaml(args.study), args.sets, args.study)
    return study, raw


@command("run", "create or resume a study and run its trials", _run_args)
def cmd_run(args: argparse.Namespace) -> int:
    study, raw = _load(args)
    opts = _options(args)
    backend = args.backend or study.spec.backend
    if backend == "ray":
        from hpo.run.backends.ray import run_ray

        summary = run_ray(study, opts, address=args.address, raw=raw, on_trial=_trial_printer(study), on_start=_start_printer(study))
    else:
        from hpo.run.runner import run_study

        with _progress() as progress:
            summary = run_study(study, opts, raw=raw, on_trial=_trial_printer(study, progress), on_start=_start_printer(study, progress))
    _print_summary(study, summary, opts)
    _publish(study, summary, opts)
    return 0


def _publish(study, summary, opts) -> None:
    """Attach learning curves and the diagnosis to the study in optuna-dashboard (best effort)."""
    try:
        from hpo.analysis.export import load_stored_study
        from hpo.analysis.report import publish_to_dashboard

        publish_to_dashboard(load_stored_study(study.storage_url(opts.storage), summary.study_name))
    except Exception as e:  # the study itself is complete and stored; say why the notes are missing
        logger.warning("could not attach the learning curves to the dashboard: %s", e)


def _worker_args(p: argparse.ArgumentParser) -> None:
    _study_args(p)
    _store_args(p)
    p.add_argument("--trials", type=int, help="total trials of the study (overrides budget.n_trials)")
    p.add_argument("--timeout", type=float, help="seconds after which this worker starts no new trial")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--gpus", help="GPU id(s) this worker may use (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--threads", type=int, help="CPU threads for this worker's training")
    p.add_argument("--artifacts", help="checkpoint folder (shared by all workers)")
    p.add_argument("--no-checkpoints", action="store_true")
    p.add_argument("--resume-changed", action="store_true",
                   help="serve a stored study whose task, dataset, objectives or space differ from this file")


@command("worker", "serve trials of an existing study (start more on other machines against the same store)", _worker_args)
def cmd_worker(args: argparse.Namespace) -> int:
    import os

    if args.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus
    study, _ = _load(args)
    opts = _options(args)
    from hpo.data.validate import check_study_data

    check_study_data(study, opts.cache_dir)  # bad data is refused before this worker serves a trial
    import optuna
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from hpo.analysis.export import load_stored_study
    from hpo.run.runner import run_worker

    storage_url = study.storage_url(opts.storage)
    name = opts.study_name or study.name
    load_stored_study(storage_url, name)  # must exist: `hpo create` or `hpo run` made it
    n_trials = opts.n_trials if opts.n_trials is not None else study.spec.budget.n_trials
    timeout = opts.timeout if opts.timeout is not None else study.spec.budget.timeout
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stopped = run_worker(study, storage_url, name, n_trials=n_trials, timeout=timeout, opts=opts, on_trial=_trial_printer(study))
    out(f"worker stopped: {stopped}")
    return 0


def _create_args(p: argparse.ArgumentParser) -> None:
    _study_args(p)
    _store_args(p)
    p.add_argument("--resume-changed", action="store_true",
                   help="keep a stored study of the same name whose task, dataset, objectives or space differ from this file")


@command("create", "create the study in the store and enqueue its baselines, without running trials", _create_args)
def cmd_create(args: argparse.Namespace) -> int:
    from hpo.run.runner import create_or_load, prepare
    from hpo.spec.urls import redact

    from hpo.data.validate import check_study_data

    study, _ = _load(args)
    opts = _options(args)
    check_study_data(study, opts.cache_dir)
    url = study.storage_url(opts.storage)
    ostudy = create_or_load(study, url, opts.study_name or study.name, resume_changed=opts.resume_changed)
    info = prepare(study, ostudy)
    out(f"study {ostudy.study_name!r} in {redact(url)}: {len(ostudy.trials)} trials; enqueued baselines: {', '.join(info['enqueued_baselines']) or 'none'}")
    return 0


def _start_printer(study, progress=None):
    def on_start(info: dict) -> None:
        b = info["budget"]
        ds = study.record.get("dataset", {})
        fmt = ds.get("format", "?") if isinstance(ds, dict) else "?"
        from hpo.spec.urls import redact

        out(f"study {info['study_name']} · {redact(info['storage'])} · task {study.task_cls.name} ({fmt}"
            + (f", target {study.spec.task.target}" if study.spec.task.target else "") + ")")
        places = info["placements"]
        where = ", ".join(f"gpu {p.gpu}" if p.gpu is not None else "cpu" for p in places)
        budget = f"{info['n_trials']} trials" if info["n_trials"] is not None else "no trial limit"
        if info["timeout"]:
            budget += f", timeout {info['timeout']:g}s"
        out(f"budget {budget} ({b.used} done, {b.running} running, {b.waiting} queued) · sampler {study.spec.sampler.type} · "
            f"pruner {study.spec.pruner.type} · {len(places)} worker(s): {where}, {places[0].threads} thread(s) each")
        if info["enqueued_baselines"]:
            out(f"enqueued baselines: {', '.join(info['enqueued_baselines'])}")
        if info["requeued"]:
            out(f"re-queued interrupted trials: {', '.join(f'#{n}' for n in info['requeued'])}")
        if progress is not None and info["n_trials"] is not None:
            progress.start(total=info["n_trials"], initial=min(b.used, info["n_trials"]))

    return on_start


def _trial_printer(study, progress=None):
    from hpo.run.runner import best_trials, describe_trial
    from hpo.store.record import NOT_TRAINED

    metrics = [o.metric for o in study.objectives]

    def on_trial(ostudy, trial) -> None:
        out(describe_trial(trial, metrics, best_trials(ostudy) if not study.multi_objective else ()))
        if progress is not None and trial.user_attrs.get("stop_reason") not in NOT_TRAINED and trial.user_attrs.get("stop_reason") != "interrupted":
            progress.update()

    return on_trial


class _progress:
    """A tqdm bar on a terminal (nothing otherwise)."""

    def __enter__(self):
        return self

    def start(self, total: int, initial: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            _ProgressState.bar = tqdm(total=total, initial=initial, unit="trial", dynamic_ncols=True, leave=False)

    def update(self) -> None:
        if _ProgressState.bar is not None:
            _ProgressState.bar.update(1)

    def __exit__(self, *exc):
        if _ProgressState.bar is not None:
            _ProgressState.bar.close()
            _ProgressState.bar = None
        return False


def _print_summary(study, summary, opts) -> None:
    import optuna

    from hpo.analysis.export import exported, load_stored_study
    from hpo.spec.yaml_io import dump_yaml

    b = summary.budget
    out(f"\ndone ({summary.stopped_because}): {b.used} trials trained ({b.complete} complete, {b.pruned} pruned, {b.failed} failed)"
        + (f", {b.rejected} rejected by constraints" if b.rejected else "")
        + (f", {b.rerun} re-run" if b.rerun else "")
        + f" in {_duration(summary.seconds)}")
    c = summary.cache
    if c is not None and c.lookups:
        out(f"data cache: {c.misses} built ({c.build_seconds:.1f}s), {c.disk_hits} loaded from disk, {c.memory_hits} reused in memory"
            f" (hit rate {c.hit_rate:.0%})")
    url = study.storage_url(opts.storage)
    if summary.best:
        ostudy = load_stored_study(url, summary.study_name)
        for best in summary.best[:5]:
            trial = ostudy.trials[best["number"]]
            doc = exported(ostudy, trial, url)
            vals = ", ".join(f"{k}={v:.5g}" for k, v in doc["source"]["values"].items())
            tag = f" [{best['baseline']}]" if best["baseline"] else ""
            out(f"best: trial #{trial.number}{tag} {vals}")
        first = ostudy.trials[summary.best[0]["number"]]
        out("best config:")
        out("  " + dump_yaml(first.user_attrs.get("config", {})).rstrip().replace("\n", "\n  "))
        if first.user_attrs.get("checkpoint"):
            out(f"checkpoint: artifact {first.user_attrs['checkpoint']} in {study.artifacts_dir(opts.artifacts)}")
    else:
        out("no complete trial yet")
    from hpo.spec.urls import redact

    storage_flag = f" --storage {redact(summary.storage)}" if opts.storage or study.spec.storage else ""
    out(f"store:     {redact(summary.storage)} (study {summary.study_name!r})")
    out(f"dashboard: hpo dashboard{storage_flag}   # then open http://127.0.0.1:8080")
    out(f"export:    hpo export {summary.study_name}{storage_flag} --format yaml --out best.yaml")
    del optuna


def _duration(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


# ------------------------------------------------------------------------------ validate
def _validate_args(p: argparse.ArgumentParser) -> None:
    _study_args(p)
    p.add_argument("--no-data", action="store_true", help="do not check that the dataset files resolve")


@command("validate", "check a study and its search space without running anything", _validate_args)
def cmd_validate(args: argparse.Namespace) -> int:
    from hpo.spec.load import load_study

    study = load_study(args.study, args.sets, check_data=not args.no_data)
    if not args.no_data:
        from hpo.data.validate import check_study_data

        check_study_data(study)  # reads the dataset as a trial would; every problem, exit 2
    space = study.space
    out(f"{args.study}: valid")
    out(f"  task       {study.task_cls.name}" + (f" (target {study.spec.task.target})" if study.spec.task.target else ""))
    out("  objectives " + ", ".join(f"{o.metric} ({o.direction})" for o in study.objectives))
    out(f"  space      {len(space.params)} params, {len(space.fixed)} fixed, {len(space.derived)} derived, {len(space.constraints)} constraints"
        + (f" ({study.space_file})" if study.space_file else ""))
    for p in space.params:
        cond = f"  when {p.when.source}" if p.when else ""
        out(f"    {p.name:<28s} {p.kind:<12s} {p.describe()}{cond}")
    out(f"  baselines  {', '.join(space.baselines) or 'none'}")
    out(f"  sampler    {study.spec.sampler.type} · pruner {study.spec.pruner.type} · budget {study.spec.budget.n_trials or '-'} trials"
        + (f", max {study.spec.budget.max_epochs} epochs" if study.spec.budget.max_epochs else ""))
    from hpo.spec.urls import redact

    out(f"  storage    {redact(study.storage_url())}")
    return 0


# ------------------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", help="study file whose space defines the config (with -p / --baseline)")
    p.add_argument("--config", help="a config written by `hpo export`")
    p.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value (parameters of the space, or any other config key); repeatable")
    p.add_argument("--baseline", help="train this named baseline of the study's space")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a key of the study file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--threads", type=int, help="CPU threads (default: the exported trial's, for bit-exact reruns)")
    p.add_argument("--out", help="folder for the best checkpoint (default: runs/train/<name>)")


@command("train", "train one config: an exported one (--config) or one of a study's space (-p / --baseline)", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from hpo.errors import UsageError
    from hpo.run.single import job_from_export, job_from_study, run_job
    from hpo.spec.yaml_io import loads_yaml

    if bool(args.config) == bool(args.study):
        raise UsageError("hpo train: give either --config FILE or a study file (with -p KEY=VALUE or --baseline NAME)")
    if args.config:
        from hpo.analysis.export import read_exported

        job = job_from_export(read_exported(args.config), args.config)
        name = f"{job.source.get('study', 'config')}-trial{job.source.get('trial', '')}"
    else:
        from hpo.spec.load import load_study

        study = load_study(args.study, args.sets)
        values = {}
        for item in args.params:
            key, sep, text = item.partition("=")
            if not sep:
                raise UsageError(f"-p {item!r}: must be KEY=VALUE")
            values[key.strip()] = loads_yaml(text, "-p")
        job = job_from_study(study, values, args.baseline)
        name = f"{study.name}-{args.baseline or 'params'}"
    threads = args.threads or job.source.get("threads")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    device = None if args.device in (None, "auto") else args.device
    out(f"training {job.task_cls.name} config ({len(job.config)} keys) on {device or 'auto'} with {torch.get_num_threads()} thread(s)")
    result, path = run_job(job, device=device, out_dir=args.out or f"runs/train/{name}")
    out(f"{result.stop_detail} in {_duration(result.seconds)}")
    for k in sorted(result.best):
        out(f"  {k:<20s} {result.best[k]:.6g}")
    ref = (job.source.get("values") or {}).get(job.monitor)
    got = result.best.get(job.monitor)
    if ref is not None and got is not None:
        same = "reproduced exactly" if got == ref else f"Δ = {got - ref:+.3g} ({(got - ref) / abs(ref) * 100 if ref else 0:+.3f} %)"
        out(f"{job.monitor}: {got:.6g}; trial #{job.source.get('trial')} of study {job.source.get('study')!r} had {ref:.6g}: {same}")
    if path:
        out(f"checkpoint: {path}")
    return 0


# ------------------------------------------------------------------------------ export / status / dashboard
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--top", type=int, default=1, help="export the K best trials (multi-objective: the Pareto front)")
    p.add_argument("--format", choices=["yaml", "json", "cli"], default="yaml")
    p.add_argument("--out", help="file (one config) or folder (several); default: standard output")


@command("export", "export the best (top-K, Pareto-optimal) configs as YAML/JSON or as the command that trains them", _export_args)
def cmd_export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from hpo.analysis.export import as_cli, exported, select_trials
    from hpo.spec.yaml_io import dump_yaml

    url, ostudy = _stored(args)
    trials = select_trials(ostudy, args.top)
    docs = [exported(ostudy, t, url, rank=i + 1) for i, t in enumerate(trials)]
    ext = {"yaml": "yaml", "json": "json", "cli": "sh"}[args.format]

    def render(doc: dict) -> str:
        if args.format == "yaml":
            return f"# fusion-hpo export: study {doc['source']['study']}, trial #{doc['source']['trial']}\n" + dump_yaml(doc)
        if args.format == "json":
            return json.dumps(doc, indent=2) + "\n"
        return as_cli(doc) + "\n"

    if args.out and len(docs) > 1:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for i, doc in enumerate(docs):
            (folder / f"rank{i + 1}-trial{doc['source']['trial']}.{ext}").write_text(render(doc))
        out(f"wrote {len(docs)} configs to {folder}/")
    elif args.out:
        Path(args.out).write_text(render(docs[0]))
        out(f"wrote trial #{docs[0]['source']['trial']} to {args.out}")
    else:
        sep = "---\n" if args.format == "yaml" else ""
        sys.stdout.write(sep.join(render(d) for d in docs))
    return 0


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", nargs="?", help="one study (default: all)")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")


@command("status", "studies in a store: trial counts by state and best values", _status_args)
def cmd_status(args: argparse.Namespace) -> int:
    import optuna

    from hpo.run.budget import budget_of
    from hpo.spec.load import DEFAULT_STORAGE
    from hpo.store.storage import open_storage
    from hpo.spec.urls import redact

    url = args.storage or DEFAULT_STORAGE
    storage = open_storage(url, heartbeat=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if args.study_name:
        summaries = [s for s in summaries if s.study_name == args.study_name]
        if not summaries:
            from hpo.analysis.export import load_stored_study

            load_stored_study(url, args.study_name)  # raises with the known names
    out(f"{redact(url)}: {len(summaries)} stud{'y' if len(summaries) == 1 else 'ies'}")
    out(f"{'study':<28s} {'complete':>8s} {'pruned':>7s} {'failed':>7s} {'running':>8s} {'queued':>7s}  best")
    for s in summaries:
        st = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = st.get_trials(deepcopy=False)
        b = budget_of(trials)
        fail = sum(t.state.name == "FAIL" for t in trials)
        pruned = sum(t.state.name == "PRUNED" for t in trials)
        if len(s.directions) == 1 and s.best_trial is not None:
            best = f"#{s.best_trial.number} {s.best_trial.value:.5g} ({s.direction.name.lower()})"
        elif len(s.directions) > 1:
            best = f"{len(st.best_trials)} Pareto-optimal"
        else:
            best = "-"
        out(f"{s.study_name:<28s} {b.complete:>8d} {pruned:>7d} {fail:>7d} {b.running:>8d} {b.waiting:>7d}  {best}")
    return 0


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--artifacts", default=None, help="checkpoint folder to browse (default runs/artifacts)")


@command("dashboard", "serve optuna-dashboard on the store", _dashboard_args)
def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from hpo.spec.load import DEFAULT_ARTIFACTS, DEFAULT_STORAGE
    from hpo.store.storage import artifact_store, open_storage
    from hpo.spec.urls import redact

    url = args.storage or DEFAULT_STORAGE
    storage = open_storage(url, heartbeat=False)
    out(f"optuna-dashboard on {redact(url)}: http://{args.host}:{args.port}/  (Ctrl-C to stop)")
    run_server(storage, host=args.host, port=args.port, artifact_store=artifact_store(args.artifacts or DEFAULT_ARTIFACTS))
    return 0


# ------------------------------------------------------------------------------ report / narrow
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--out", help="HTML file (default runs/reports/STUDY.html)")
    p.add_argument("--no-dashboard", action="store_true", help="do not attach the curves and diagnosis to the study in optuna-dashboard")


@command("report", "write a self-contained HTML report of a study (and attach curves + diagnosis to the dashboard)", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from hpo.analysis.report import build_report, publish_to_dashboard
    from hpo.spec.urls import redact

    url, ostudy = _stored(args)
    t0 = time.monotonic()
    path = build_report(ostudy, args.out or f"runs/reports/{args.study_name}.html", redact(url))
    out(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f}s")
    if not args.no_dashboard:
        publish_to_dashboard(ostudy)
        out("attached the learning curves and the diagnosis note to the study (see them in `hpo dashboard`)")
    return 0


def _narrow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--top", type=int, default=5, help="narrow around the N best trials")
    p.add_argument("--margin", type=float, default=0.1, help="widen each narrowed range by this fraction of its spread")
    p.add_argument("--out", required=True, help="the new search space file, e.g. search_spaces/x_phase2.yaml")


@command("narrow", "write a search space narrowed around the top trials of a study (phase 2 of a plan)", _narrow_args)
def cmd_narrow(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo.analysis.narrow import narrow_space
    from hpo.spec.load import load_space
    from hpo.tasks import get_task
    from hpo.spec.yaml_io import dump_yaml

    url, ostudy = _stored(args)
    space, facts = narrow_space(ostudy, args.top, args.margin)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# search space narrowed by `hpo narrow {args.study_name} --top {args.top} --margin {args.margin:g}`\n"
    out_path.write_text(header + dump_yaml(space))
    record = ostudy.user_attrs.get("fusion_hpo", {})
    task_cls = get_task(record["spec"]["task"]["family"])
    load_space(out_path, task_cls, record["spec"].get("training"))  # the new space must be valid
    out(f"wrote {out_path}: narrowed around trials #{', #'.join(map(str, facts['top']))}")
    for name, ch in facts["changed"].items():
        out(f"  {name:<28s} {ch['from']}  ->  {ch['to']}")
    if facts["unchanged"]:
        out(f"  unchanged (inactive in the top trials): {', '.join(facts['unchanged'])}")
    if facts["dropped_baselines"]:
        out(f"  baselines outside the new ranges, dropped: {', '.join(facts['dropped_baselines'])}")
    out(f"phase 2: point a copy of the study file at it (space: {out_path}) and `hpo run` it")
    return 0


def _reevaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--top", type=int, default=1, help="re-evaluate the K best configs")
    p.add_argument("--seeds", type=int, default=5, help="seeds per config (0 .. N-1)")
    p.add_argument("--no-baselines", action="store_true", help="skip the named baselines (plans)")
    p.add_argument("--ensemble", action="store_true", help="also score the mean prediction of the best config's seed runs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)


@command("reevaluate", "retrain the top configs and the plans with several seeds and score them on the test split", _reevaluate_args)
def cmd_reevaluate(args: argparse.Namespace) -> int:
    from hpo.analysis.reevaluate import reevaluate

    url, ostudy = _stored(args)

    def on_run(label: str, seed: int, test: dict) -> None:
        out(f"  {label:<32s} seed {seed}: " + ", ".join(f"test_{k}={v:.5g}" for k, v in test.items() if v is not None))

    res = reevaluate(ostudy, top=args.top, seeds=list(range(args.seeds)), baselines=not args.no_baselines,
                     ensemble=args.ensemble, device=None if args.device in (None, "auto") else args.device, on_run=on_run)
    out(f"\ntest split, mean ± std over {res['n_seeds']} seeds:")
    for label, entry in res["configs"].items():
        out(f"  {label:<32s} " + "  ".join(f"{m}={s['mean']:.5g}±{s['std']:.2g}" for m, s in entry["summary"].items()))
    for c in res["comparisons"]:
        if c["metric"] == res["monitor"].split("_", 1)[-1]:
            verdict = "better (p < 0.05)" if c["significant"] else "not significantly better"
            out(f"  {c['tuned']} vs {c['baseline']}: {c['metric']} {c['tuned_mean']:.5g} vs {c['baseline_mean']:.5g}, Welch p = {c['p_value']:.3g}: {verdict}")
    if res.get("ensemble"):
        out("  ensemble of the best config's seeds: " + ", ".join(f"{k}={v:.5g}" for k, v in res["ensemble"]["metrics"].items()))
    out(f"stored with the study (user attr 'reevaluation'); `hpo report {args.study_name}` shows it")
    return 0


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("analysis", help="an analysis the study's task offers (crystal_text: text_deleted, cka)")
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("--trials", type=int, nargs="+", help="trial numbers whose best checkpoints to analyse (default: the best trial)")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--artifacts", default=None, help="checkpoint folder (default runs/artifacts)")
    p.add_argument("--split", choices=["train", "val", "test"], help="split to analyse (default: the analysis's own)")


@command("analyze", "run a task's analysis of trained checkpoints (e.g. text-deleted robustness, CKA)", _analyze_args)
def cmd_analyze(args: argparse.Namespace) -> int:
    import json

    from hpo.analysis.trained import run_analysis
    from hpo.analysis.export import select_trials
    from hpo.spec.load import DEFAULT_ARTIFACTS

    _, ostudy = _stored(args)
    numbers = args.trials or [select_trials(ostudy, 1)[0].number]
    result = run_analysis(ostudy, args.analysis, numbers, artifacts_dir=args.artifacts or DEFAULT_ARTIFACTS, split=args.split)
    out(json.dumps(result, indent=2, default=float))
    out(f"stored with the study as user attr 'analysis_{args.analysis}'")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("trial_a", type=int, metavar="A", help="the reference trial (e.g. the standard model)")
    p.add_argument("trial_b", type=int, metavar="B", help="the trial compared with it (e.g. the gated model)")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--artifacts", default=None, help="checkpoint folder (default runs/artifacts)")
    p.add_argument("--split", choices=["val", "test"], default="val", help="split to compare on (default val)")
    p.add_argument("--out", help="HTML file (default runs/reports/STUDY-compare-A-B.html)")


@command("compare", "compare two trained trials: pred vs true, error histogram, metric bars, improvement %% (HTML)", _compare_args)
def cmd_compare(args: argparse.Namespace) -> int:
    from hpo.analysis.trained import run_analysis
    from hpo.spec.load import DEFAULT_ARTIFACTS

    _, ostudy = _stored(args)
    html = args.out or f"runs/reports/{args.study_name}-compare-{args.trial_a}-{args.trial_b}.html"
    res = run_analysis(ostudy, "compare", [args.trial_a, args.trial_b], artifacts_dir=args.artifacts or DEFAULT_ARTIFACTS,
                       split=args.split, out=html)
    for name, m in res.get("metrics", {}).items():
        out(f"  {name:<24s} " + "  ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, (int, float))))
    for k, v in (res.get("improvement") or {}).items():
        out(f"  improvement {k}: {v:+.2f} %")
    out(f"wrote {html}")
    return 0


# ------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpo",
        description="fusion-hpo: hyperparameter optimisation for multimodal fusion models",
    )
    parser.add_argument("--version", action="version", version=f"fusion-hpo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


class _Handler(logging.StreamHandler):
    """Log lines to the progress bar's stream, or to ``sys.stderr`` as it is when the line is written (not
    the stream of when the handler was made: a caller may have replaced it since, and closed the old one)."""

    def emit(self, record: logging.LogRecord) -> None:
        if _ProgressState.bar is not None:
            _ProgressState.bar.write(self.format(record), file=sys.stderr)
        else:
            self.stream = sys.stderr
            super().emit(record)


def _setup_logging(args: argparse.Namespace) -> None:
    handler = _Handler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.getLogger("hpo").setLevel(level)
    logging.getLogger("models").setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(logging.DEBUG if args.verbose > 1 else logging.WARNING)
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if args.command not in ("validate",):
        _setup_logging(args)
    else:
        logging.basicConfig(level=logging.WARNING)
    from hpo.train.interrupt import graceful_sigint

    t0 = time.monotonic()
    try:
        if args.command in ("run", "worker", "train"):
            with graceful_sigint():
                return COMMANDS[args.command].run(args)
        return COMMANDS[args.command].run(args)
    except HpoError as e:
        if args.debug:
            raise
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        import signal

        from hpo.train.interrupt import last_signal

        signum = last_signal() or signal.SIGINT  # SIGTERM (docker stop, Kubernetes, Slurm) is handled like Ctrl-C
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        lead = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
        print(f"{lead}{what} after {time.monotonic() - t0:.0f}s: the running trial is recorded as interrupted and runs "
              "again when you run the same command (the study resumes)", file=sys.stderr)
        return 128 + signum
