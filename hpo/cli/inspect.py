"""``hpo validate``, ``hpo status``, ``hpo dashboard`` and ``hpo keys``: look at a study file, a store or a task
without training anything."""

from __future__ import annotations

import argparse
import json
import sys

from hpo.cli._registry import command, study_args
from hpo.cli._output import out, print_targets


def _validate_args(p: argparse.ArgumentParser) -> None:
    study_args(p)
    p.add_argument("--no-data", action="store_true", help="do not check that the dataset files resolve")


@command("validate", "check a study and its search space without running anything", _validate_args)
def cmd_validate(args: argparse.Namespace) -> int:
    from hpo.spec import load_study
    from hpo.spec.urls import redact

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
    _describe_plan(study)
    out(f"  storage    {redact(study.storage_url())}")
    return 0


def _describe_plan(study) -> None:
    """The plan keys of a valid study: gates, targets, ablation runs and stages (what each stage changes)."""
    for g in study.gates:
        out(f"  gate       {g.describe()}")
    for t in study.targets:
        out(f"  target     {t.name}: {t.describe()}" + ("  (stops the study)" if study.stop_at_target == t.name else ""))
    if study.ablation is not None:
        runs = [n for n in study.run_baselines if study.space.baselines[n].ablation is not None]
        out(f"  ablation   around {study.ablation.baseline}: {len(runs)} runs ({', '.join(study.ablation.knobs)})")
    if study.run_baselines and not study.protect_baselines:
        out("  baselines  not protected: the pruner and the gates may stop them (protect_baselines: false)")
    for st in study.stages:
        sub = st.study
        epochs = sub.space.defaults.get("epochs") or sub.space.fixed.get("epochs")
        parts = [f"{sub.spec.budget.n_trials or '-'} trials", f"{epochs} epochs" if epochs else "",
                 f"sampler {sub.spec.sampler.type}", f"pruner {sub.spec.pruner.type}",
                 f"{len(sub.gates)} gates" if sub.gates else "", f"narrow top {st.narrow.top}" if st.narrow else "",
                 "warm start" if st.warm_start else "", f"stop at {st.stop_at_target}" if st.stop_at_target else "",
                 f"runs {len(sub.run_baselines)} named" if sub.run_baselines else ""]
        out(f"  stage {st.index + 1}    {st.name}: " + ", ".join(p for p in parts if p))
        for r in st.next:
            out(f"             next {r.describe()}")


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", nargs="?", help="one study (default: all)")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="an aligned table (default) or JSON (every study: counts, best, targets; plan stages)")


@command("status", "studies in a store: trial counts by state and best values", _status_args)
def cmd_status(args: argparse.Namespace) -> int:
    import math

    import optuna

    from hpo.run.budget import budget_of
    from hpo.run.study import best_trials
    from hpo.run.targets import targets_met
    from hpo.spec import DEFAULT_STORAGE
    from hpo.spec.urls import redact
    from hpo.store.storage import open_storage

    as_json = getattr(args, "format", "table") == "json"
    url = args.storage or DEFAULT_STORAGE
    storage = open_storage(url, heartbeat=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if args.study_name:
        # a staged plan is its stage studies, PLAN/STAGE: `hpo status PLAN` shows them and where the plan stands
        summaries = [s for s in summaries if s.study_name == args.study_name
                     or (s.study_name.startswith(args.study_name + "/") and _plan_of(s) == args.study_name)]
        if not summaries:
            from hpo.store.stored import load_stored_study

            load_stored_study(url, args.study_name)  # raises with the known names
    if not as_json:
        out(f"{redact(url)}: {len(summaries)} stud{'y' if len(summaries) == 1 else 'ies'}")
        out(f"{'study':<28s} {'complete':>8s} {'pruned':>7s} {'failed':>7s} {'running':>8s} {'queued':>7s}  best")
    studies = []
    for s in summaries:
        st = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = st.get_trials(deepcopy=False)
        b = budget_of(trials)
        fail = sum(t.state.name == "FAIL" for t in trials)
        pruned = sum(t.state.name == "PRUNED" for t in trials)
        top = best_trials(st)  # the trials it trained itself (not warm-start copies of an earlier stage's)
        directions = [d.name.lower() for d in s.directions]
        targets = targets_met(st, trials)
        if as_json:
            studies.append({
                "name": s.study_name, "directions": directions, "plan": _plan_of(s),
                "trials": len(trials), "complete": b.complete, "pruned": pruned, "failed": fail,
                "running": b.running, "queued": b.waiting,
                "best": ({"trial": top[0].number, "value": top[0].value, "direction": directions[0]}
                         if len(directions) == 1 and top else None),
                "pareto": ([{"trial": t.number, "values": list(t.values)} for t in top]
                           if len(directions) > 1 else None),
                "targets": targets,
            })
            continue
        if len(s.directions) == 1 and top:
            best = f"#{top[0].number} {top[0].value:.5g} ({s.direction.name.lower()})"
        elif len(s.directions) > 1:
            best = f"{len(top)} Pareto-optimal"
        else:
            best = "-"
        out(f"{s.study_name:<28s} {b.complete:>8d} {pruned:>7d} {fail:>7d} {b.running:>8d} {b.waiting:>7d}  {best}")
        print_targets(targets, indent="  ")
    from hpo.plan.status import plan_status, plan_status_lines

    plans = list(dict.fromkeys(p for p in map(_plan_of, summaries) if p))
    if not as_json:
        for plan in plans:
            for line in plan_status_lines(url, plan):
                out(line)
        return 0

    def plain(value):  # JSON proper: NaN/inf -> null, tuples -> lists, anything else -> its string
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if value is None or isinstance(value, (str, int, bool)) else str(value)

    doc = {"storage": redact(url), "studies": studies,
           "plans": [{"name": plan, "stages": plan_status(url, plan)} for plan in plans]}
    out(json.dumps(plain(doc), indent=2, allow_nan=False))
    return 0


def _plan_of(summary) -> str | None:
    """The plan a stage study belongs to (study user attr ``stage``), else None."""
    from hpo.store.record import STAGE

    attr = summary.user_attrs.get(STAGE)
    return attr.get("plan") if isinstance(attr, dict) else None


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--artifacts", default=None, help="checkpoint folder to browse (default runs/artifacts)")


@command("dashboard", "serve optuna-dashboard on the store", _dashboard_args)
def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from hpo.spec import DEFAULT_ARTIFACTS, DEFAULT_STORAGE
    from hpo.spec.urls import redact
    from hpo.store.storage import artifact_store, open_storage

    url = args.storage or DEFAULT_STORAGE
    storage = open_storage(url, heartbeat=False)
    out(f"optuna-dashboard on {redact(url)}: http://{args.host}:{args.port}/  (Ctrl-C to stop)")
    run_server(storage, host=args.host, port=args.port, artifact_store=artifact_store(args.artifacts or DEFAULT_ARTIFACTS))
    return 0


def _keys_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK", help="a registered task, e.g. toy")
    p.add_argument("--format", choices=["table", "json"], default="table", help="an aligned table (default) or JSON")


@command("keys", "every YAML key a study of TASK accepts: section, key, type, default and help", _keys_args)
def cmd_keys(args: argparse.Namespace) -> int:
    from hpo.errors import UnknownNameError
    from hpo.spec.keys import task_keys
    from hpo.tasks import available_task_names, get_task

    try:
        task_cls = get_task(args.task)
    except UnknownNameError:
        raise UnknownNameError("task", args.task, available_task_names()) from None
    keys = task_keys(task_cls)
    if args.format == "json":
        sys.stdout.write(json.dumps([k.as_dict() for k in keys], indent=2, default=str) + "\n")
        return 0
    rows = [("SECTION", "KEY", "TYPE", "DEFAULT", "HELP")]
    rows += [(k.section, k.key, _cut(k.type, _TYPE_WIDTH), "(required)" if k.required else _yaml(k.default), k.help)
             for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        out(("  ".join(f"{cell:<{w}s}" for cell, w in zip(r, widths)) + "  " + r[-1]).rstrip())
    return 0


_TYPE_WIDTH = 32  # a longer type (a Literal of many choices) is cut in the table; the JSON has it whole


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _yaml(value) -> str:
    """A default as it would be written in YAML (one line)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str) if value else ("{}" if isinstance(value, dict) else "[]")
    return str(value)
