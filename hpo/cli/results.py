"""``hpo export``, ``report``, ``narrow``, ``reevaluate``, ``analyze`` and ``compare``: the commands that read a
stored study's results and write configs, reports, narrowed spaces and analyses from them."""

from __future__ import annotations

import argparse
import sys
import time

from hpo.cli._registry import command
from hpo.cli._output import out


def _stored(args: argparse.Namespace):
    """(storage URL, the stored study named by args.study_name) for the commands that read a store."""
    from hpo.spec import DEFAULT_STORAGE
    from hpo.spec.urls import check_url
    from hpo.store.stored import load_stored_study

    url = args.storage or DEFAULT_STORAGE
    check_url(url)
    return url, load_stored_study(url, args.study_name)


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


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_name", metavar="STUDY", help="study name in the store")
    p.add_argument("--storage", default=None, help="storage URL (default sqlite:///runs/hpo.db)")
    p.add_argument("--out", help="HTML file (default runs/reports/STUDY.html)")
    p.add_argument("--no-dashboard", action="store_true", help="do not attach the curves and diagnosis to the study in optuna-dashboard")


@command("report", "write a self-contained HTML report of a study (and attach curves + diagnosis to the dashboard)", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from hpo.analysis.dashboard import publish_to_dashboard
    from hpo.analysis.report import build_report
    from hpo.spec.urls import redact

    url, ostudy = _stored(args)
    t0 = time.monotonic()
    path = build_report(ostudy, args.out or f"runs/reports/{args.study_name.replace('/', '__')}.html", redact(url))
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

    from hpo.plan.narrow import narrow_space, narrowed_yaml
    from hpo.spec import load_space
    from hpo.store.stored import StoredStudy

    url, ostudy = _stored(args)
    space, facts = narrow_space(ostudy, args.top, args.margin)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# search space narrowed by `hpo narrow {args.study_name} --top {args.top} --margin {args.margin:g}`\n"
    text, source = narrowed_yaml(ostudy, space, header)
    out_path.write_text(text)
    stored = StoredStudy(ostudy)
    load_space(out_path, stored.task_class, stored.spec.get("training"))  # the new space must be valid
    out(f"wrote {out_path}: narrowed around trials #{', #'.join(map(str, facts['top']))}"
        + (f" (an edited copy of {source}: its comments and layout kept)" if source else ""))
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

    from hpo.analysis.export import select_trials
    from hpo.analysis.trained import run_analysis
    from hpo.spec import DEFAULT_ARTIFACTS

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
    p.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="split to compare on (default val; the test split is read only when asked for)")
    p.add_argument("--out", help="HTML file (default runs/reports/STUDY-compare-A-B.html)")


@command("compare", "compare two trained trials of any task: metrics, learning curves, predictions, improvement per metric (HTML)",
         _compare_args)
def cmd_compare(args: argparse.Namespace) -> int:
    import math

    from hpo.analysis.compare import compare_trials
    from hpo.spec import DEFAULT_ARTIFACTS

    _, ostudy = _stored(args)
    safe = args.study_name.replace("/", "__")  # a stage study's name holds a "/"
    html = args.out or f"runs/reports/{safe}-compare-{args.trial_a}-{args.trial_b}.html"
    res = compare_trials(ostudy, args.trial_a, args.trial_b, artifacts_dir=args.artifacts or DEFAULT_ARTIFACTS,
                         split=args.split, out=html)
    out(f"{res.get('split', args.split)} split, recomputed from the checkpoints:")
    for name, m in res.get("metrics", {}).items():
        out(f"  {name:<24s} " + "  ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, (int, float))))
    for k, v in (res.get("improvement") or {}).items():
        out(f"  improvement {k}: " + (f"{v:+.2f} %" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"))
    out(f"wrote {html}")
    return 0
