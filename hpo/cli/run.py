"""``hpo run``, ``hpo worker`` and ``hpo create``: the commands that create a study in a store and serve its trials.

On a staged study (``stages:``) ``hpo run`` runs the plan (:func:`hpo.plan.runner.run_plan`: each stage a study
``PLAN/STAGE``, resumed where it stopped; ``--trials`` / ``--timeout`` then apply to every stage), ``hpo create``
creates the first stage's study, and ``hpo worker`` serves the stage in progress."""

from __future__ import annotations

import argparse
import contextlib
import logging

from hpo.cli._registry import command, store_args, study_args
from hpo.cli._output import Progress, out, print_summary, start_printer, trial_printer

logger = logging.getLogger("hpo")


def _run_args(p: argparse.ArgumentParser) -> None:
    study_args(p)
    store_args(p)
    p.add_argument("--trials", type=int, help="total trials of the study (overrides budget.n_trials; of each stage of a staged study)")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts (overrides budget.timeout; per stage of a staged study)")
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
    from hpo.run.options import RunOptions
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


def _load(args: argparse.Namespace):
    """(the study, the study file's raw document with the --set overrides applied)."""
    from hpo.spec import apply_sets, load_study
    from hpo.spec.yaml_io import load_yaml

    study = load_study(args.study, args.sets)
    raw = apply_sets(load_yaml(args.study), args.sets, args.study)
    return study, raw


@command("run", "create or resume a study and run its trials", _run_args)
def cmd_run(args: argparse.Namespace) -> int:
    study, raw = _load(args)
    opts = _options(args)
    from hpo.run.backends import make_backend

    backend = make_backend(args.backend or study.spec.backend, address=args.address)
    if study.stages:
        return _run_plan(study, opts, backend)
    with (Progress() if backend.progress_bar else contextlib.nullcontext()) as bar:
        summary = backend.run(study, opts, raw=raw, on_trial=trial_printer(study, bar), on_start=start_printer(study, bar))
    print_summary(study, summary, opts)
    _publish(study, summary, opts)
    return 0


def _run_plan(study, opts, backend) -> int:
    """``hpo run`` on a staged study: the plan's stages in order, each stage's summary as it ends, then the plan's."""
    from hpo.plan.runner import DONE, describe_plan, run_plan

    bar = Progress() if backend.progress_bar else None

    def on_start(info: dict) -> None:
        if bar is not None:
            bar.__exit__(None, None, None)  # one bar per stage
        stage_study = info.get("stage_study", study)
        out(f"\n== stage {info.get('stage')} ({info['study_name']})"
            + (f" · {info['told']} earlier trial(s) told to the sampler (warm start)" if info.get("told") else ""))
        start_printer(stage_study, bar)(info)

    def on_stage(event: str, run) -> None:
        if event == "done before":
            out(f"stage {run.name} ({run.study_name}): done before · next: {(run.decision or {}).get('next')}")
            return
        if event in ("done", "stopped") and run.summary is not None:
            stage_study = run.study or study.stages[run.index].study
            print_summary(stage_study, run.summary, opts)
            _publish(stage_study, run.summary, opts)
        if event == "done" and run.state == DONE:
            from hpo.plan.decide import describe_decision

            out(f"stage {run.name}: {describe_decision(run.decision)}")

    try:
        summary = run_plan(study, opts, backend=backend, on_trial=trial_printer(study, bar), on_start=on_start,
                           on_stage=on_stage)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    out("")
    for line in describe_plan(summary):
        out(line)
    return 0


def _publish(study, summary, opts) -> None:
    """Attach learning curves and the diagnosis to the study in optuna-dashboard (best effort)."""
    try:
        from hpo.analysis.dashboard import publish_to_dashboard
        from hpo.store.stored import load_stored_study

        publish_to_dashboard(load_stored_study(study.storage_url(opts.storage), summary.study_name))
    except Exception as e:  # the study itself is complete and stored; say why the notes are missing
        logger.warning("could not attach the learning curves to the dashboard: %s", e)


def _worker_args(p: argparse.ArgumentParser) -> None:
    study_args(p)
    store_args(p)
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
    from hpo.run.loop import run_worker
    from hpo.store.stored import load_stored_study

    storage_url = study.storage_url(opts.storage)
    name = opts.study_name or study.name
    if study.stages:  # a plan: serve its stage in progress (a study `hpo run` created)
        import dataclasses

        from hpo.plan.runner import stage_in_progress

        study, name = stage_in_progress(study, opts)
        opts = dataclasses.replace(opts, study_name=name)
        out(f"serving stage study {name!r}")
    load_stored_study(storage_url, name)  # must exist: `hpo create` or `hpo run` made it
    n_trials = opts.n_trials if opts.n_trials is not None else study.spec.budget.n_trials
    timeout = opts.timeout if opts.timeout is not None else study.spec.budget.timeout
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stopped = run_worker(study, storage_url, name, n_trials=n_trials, timeout=timeout, opts=opts, on_trial=trial_printer(study))
    out(f"worker stopped: {stopped}")
    return 0


def _create_args(p: argparse.ArgumentParser) -> None:
    study_args(p)
    store_args(p)
    p.add_argument("--resume-changed", action="store_true",
                   help="keep a stored study of the same name whose task, dataset, objectives or space differ from this file")


@command("create", "create the study in the store and enqueue its baselines, without running trials", _create_args)
def cmd_create(args: argparse.Namespace) -> int:
    from hpo.data.validate import check_study_data
    from hpo.run.study import create_or_load, prepare
    from hpo.spec.urls import redact

    study, _ = _load(args)
    opts = _options(args)
    check_study_data(study, opts.cache_dir)
    url = study.storage_url(opts.storage)
    if study.stages:  # a plan: its first stage's study (the later ones are created as the plan reaches them)
        from hpo.plan.runner import create_first_stage

        ostudy, info = create_first_stage(study, opts)
        out(f"plan {opts.study_name or study.name!r}: created stage study {ostudy.study_name!r} in {redact(url)}: "
            f"{len(ostudy.trials)} trials; enqueued baselines: {', '.join(info['enqueued_baselines']) or 'none'}")
        return 0
    ostudy = create_or_load(study, url, opts.study_name or study.name, resume_changed=opts.resume_changed)
    info = prepare(study, ostudy)
    out(f"study {ostudy.study_name!r} in {redact(url)}: {len(ostudy.trials)} trials; enqueued baselines: "
        f"{', '.join(info['enqueued_baselines']) or 'none'}")
    return 0
