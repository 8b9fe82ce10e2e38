"""Time to quality (issue #17, item 1): for the same wall-clock budget, a plain script against a fusion-hpo study.

    python bench/time_to_quality.py --quick                          # ~5 min: every step at a toy budget (1-minute arms), seed 0
    python bench/time_to_quality.py --dataset davis --minutes 3 --seeds 0
    python bench/time_to_quality.py                                  # 30 minutes per arm, seeds 0 1 2: ~6 h in all
    python bench/time_to_quality.py --minutes 60                     # the 60-minute target

On each dataset and seed, two arms get the same budget (``--minutes``, default 30), on the same 2 threads, one
after the other:

- **reference**: a plain PyTorch script written without the service (``bench/reference/``): DeepDTA on Davis,
  a GRU encoder-decoder on Los-loop. It picks its epoch on validation; its clock starts when it is launched.
- **service**: the family's own model (``drug_target`` on Davis, ``traffic`` on Los-loop) tuned by a staged
  plan run through the CLI (``python -m hpo run bench/studies/ttq_<dataset>.yaml``, a subprocess): a cheap
  low-fidelity stage (``explore``), the space narrowed around its best with those re-trained at a higher
  fidelity (``promote``), then ``hpo train`` at full fidelity, with the time left, of the configuration that was
  best at equal training time (not at equal epochs), its epochs sized from two full-fidelity
  epochs of it timed first (their checkpoints count as points too). Each stage's deadline (``budget.timeout``) is set
  from the budget (``--split``: the fractions of explore and promote); the clock starts before the first
  subprocess, so data preparation, every trial and the final retrain count. Whatever is still running at
  the budget is stopped (SIGTERM: the trial in flight is recorded as interrupted and counts for nothing).

Both arms select on validation only. After an arm has finished, the test split scores, **for the record
only**, each model that was the validation-selected one at some time: the reference's epoch (the script
scores it), the service's trial (from its stored best checkpoint) or final-retrain epoch (from its epoch
checkpoint); this scoring is not counted in the budget and never selects anything. Printed: the anytime
curve (validation-selected test metric against elapsed time, mean ± std over seeds on a time grid, and each
seed's points), and the metric of each arm at the budget with the ratio service / reference (mean ± std
over seeds; < 1 means the service ends better). Metrics: Davis test MSE (DeepDTA published 0.261); Los-loop
test RMSE at the 15-minute horizon (T-GCN published 5.13). Results: runs/bench/time_to_quality.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, data, machine, outdir, save, table

HERE = Path(__file__).resolve().parent
THREADS = 2


@dataclass(frozen=True)
class Dataset:
    name: str
    study: Path  # the service arm's staged study
    reference: Path  # the plain script
    val: str  # the selection metric (the study's objective; the reference's selection metric)
    test: str  # the compared test metric
    published: tuple[str, float]
    data_args: tuple[str, ...]  # the reference's --data argument (relative to the shared data folder)
    data_sets: tuple[tuple[str, tuple[str, ...]], ...]  # the study's data keys, pointed at the shared folder in use
    quick_reference: tuple[str, ...]  # the reference's extra arguments in --quick
    quick_sets: tuple[str, ...]  # the service's --set overrides in --quick


DATASETS = {
    "davis": Dataset(
        "davis", HERE / "studies" / "ttq_davis.yaml", HERE / "reference" / "deepdta.py", "val_mse", "test_mse",
        ("DeepDTA (Öztürk et al. 2018)", 0.261), ("davis",), (("task.dataset.path", ("davis",)),), ("--proteins", "24"),
        ("space.fixed.max_protein_len=200", "stages.0.training.train_subsample=0.01", "stages.0.training.epochs=1",
         "stages.1.training.train_subsample=0.02", "stages.1.training.epochs=1", "stages.1.narrow.top=1")),
    "losloop": Dataset(
        "losloop", HERE / "studies" / "ttq_losloop.yaml", HERE / "reference" / "gru_losloop.py", "val_mae", "test_rmse_h3",
        ("T-GCN (Zhao et al. 2019), 15 min", 5.13), ("metr_la", "los_speed.csv"),
        (("task.dataset.path", ("metr_la", "los_speed.csv")), ("task.dataset.adj", ("metr_la", "los_adj.csv"))), ("--train-stride", "24"),
        ("stages.0.training.train_stride=96", "stages.0.training.epochs=1", "stages.1.training.train_stride=48",
         "stages.1.training.epochs=1", "stages.1.narrow.top=1")),
}


# ------------------------------------------------------------------------------------------------ the arms
def run_reference(ds: Dataset, seed: int, budget: float, work: Path, quick: bool) -> list[dict]:
    """Launch the plain script with the budget; its per-epoch points ``{elapsed_s, val, test, label}``."""
    out = work / "reference.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(ds.reference), "--minutes", f"{budget / 60:.6f}", "--seed", str(seed), "--threads", str(THREADS),
           "--data", str(data(*ds.data_args)), "--json", str(out), "--t0", repr(time.time()),
           *(ds.quick_reference if quick else ())]
    _run_until(cmd, deadline=None, log=work / "reference.log", grace=budget + 600)
    if not out.exists():
        raise SystemExit(f"{ds.reference.name} wrote no result (see {work / 'reference.log'})")
    rows = json.loads(out.read_text())["epochs"]
    return [{"elapsed_s": r["elapsed_s"], "val": r[ds.val], "test": r[ds.test], "label": f"epoch {r['epoch']}"} for r in rows]


def run_service(ds: Dataset, seed: int, budget: float, work: Path, quick: bool, split: tuple[float, float]) -> tuple[list[dict], dict]:
    """The staged plan, then the full-fidelity retrain of its best, all within ``budget`` seconds from now.
    Returns the points (every completed trial and final-retrain epoch, in time order, test not yet scored)
    and what happened (trials, stages, the final retrain's epochs)."""
    t0 = time.time()
    deadline = t0 + budget
    if work.exists():  # a benchmark never resumes an older study
        shutil.rmtree(work)
    work.mkdir(parents=True)
    db, artifacts = work / "store.db", work / "artifacts"
    sets = [f"storage=sqlite:///{db}", f"artifacts={artifacts}", f"seed={seed}", f"sampler.seed={seed}",
            f"stages.0.budget.timeout={split[0] * budget:.1f}", f"stages.1.budget.timeout={split[1] * budget:.1f}",
            *(f"{key}={data(*parts)}" for key, parts in ds.data_sets),  # $HPO_BENCH_DATA, as the references
            *(ds.quick_sets if quick else ())]
    cmd = [sys.executable, "-m", "hpo", "run", str(ds.study), *_sets(sets), "--threads", str(THREADS), "--device", "cpu"]
    # the plan's slice ends at (explore + promote) x budget: the trial in flight then is stopped, so that the
    # final retrain always has the rest (a stage's own deadline only stops new trials from starting)
    plan_rc = _run_until(cmd, deadline=t0 + sum(split) * budget, log=work / "plan.log")
    info = {"plan_rc": plan_rc, "plan_s": time.time() - t0}

    trials = _stage_trials(ds, db)
    points = [{"elapsed_s": t.datetime_complete.timestamp() - t0, "val": t.value, "label": f"{stage} #{t.number}",
               "stage": stage, "trial": t.number} for stage, t in trials]
    info["trials"] = {s: sum(1 for st, _ in trials if st == s) for s in dict.fromkeys(st for st, _ in trials)}
    if not points:
        info["final"] = "no trial completed: no retrain"
        return points, info

    (stage, best), info["choice"] = _retrain_choice(trials)
    epoch_s, startup = _final_epoch_seconds(trials, best, full=not quick), 30.0 if not quick else 10.0
    if not quick:  # measured, not extrapolated: two full-fidelity epochs of the chosen config (they count too)
        launched = time.time()
        final_retrain(ds, best, 2, sets, work / "calibrate", deadline=deadline, quick=quick)
        e1, e2 = (work / "calibrate" / f"epoch_{i}.pt" for i in (1, 2))
        if e1.exists() and e2.exists():
            epoch_s = e2.stat().st_mtime - e1.stat().st_mtime
            startup = max(0.0, e1.stat().st_mtime - launched - epoch_s)
        for path in (e for e in (e1, e2) if e.exists()):
            points.append({"elapsed_s": path.stat().st_mtime - t0, "val": None, "label": f"calibrate {path.stem}",
                           "checkpoint": str(path)})
    left = deadline - time.time()
    # 5 % headroom: in the first run the retrain's epochs ran 5 % slower than the calibration's (7.4 s, 7.0 s),
    # and a retrain stopped before its last epochs never reaches the low learning rates of its schedule
    epochs = int(0.95 * (left - startup) / epoch_s) if epoch_s else 0
    if quick:
        epochs = min(epochs, 1)
    info["final"] = {"from": f"{stage} #{best.number}", "seconds_left": left, "epoch_s": epoch_s, "startup_s": startup,
                     "epochs": epochs}
    if epochs < 1:
        info["final"]["skipped"] = "not enough time left for one full-fidelity epoch"
        return sorted(points, key=lambda p: p["elapsed_s"]), info

    info["final"]["rc"] = final_retrain(ds, best, epochs, sets, work / "final", deadline=deadline, quick=quick)
    for path in sorted((work / "final").glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1])):
        points.append({"elapsed_s": path.stat().st_mtime - t0, "val": None, "label": f"final {path.stem}", "checkpoint": str(path)})
    info["total_s"] = time.time() - t0
    return sorted(points, key=lambda p: p["elapsed_s"]), info


def final_retrain(ds: Dataset, best, epochs: int, sets: list[str], out: Path, *, deadline: float, quick: bool) -> int | str:
    """``hpo train`` of ``best``'s parameters for ``epochs`` epochs at full fidelity (in ``--quick``, at the
    quick fidelity), keeping every epoch's checkpoint in ``out`` (epoch_N.pt), stopped at ``deadline``."""
    params = [f"{k}={json.dumps(v)}" for k, v in best.params.items()]
    fixed = [f"epochs={epochs}", *([] if quick else _full_fidelity(ds))]
    cmd = [sys.executable, "-m", "hpo", "train", str(ds.study), "--stage", "explore", *_sets(sets),
           *[a for p in [*params, *fixed] for a in ("-p", p)], "--threads", str(THREADS), "--device", "cpu",
           "--out", str(out), "--save-every", "1"]
    return _run_until(cmd, deadline=deadline, log=out.parent / "final.log")


def _sets(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _full_fidelity(ds: Dataset) -> list[str]:
    """The config values that make the final retrain use every training sample."""
    return ["train_subsample=1.0"] if ds.name == "davis" else ["train_stride=1"]


def _final_epoch_seconds(trials: list, best, *, full: bool) -> float | None:
    """The expected seconds of one epoch of ``best``'s configuration in the final retrain. At full fidelity
    (``full``): a line through the epoch times of that configuration at the fidelities it ran at (the promoted
    trial is the explore trial's configuration again), epoch = validation + fraction x training, taken at
    fraction 1; with one fidelity only, its epoch time divided by its fraction (an overestimate: validation
    does not shrink with the training data). Otherwise: its own epoch time."""
    def frac(t) -> float:
        cfg = t.user_attrs.get("config") or {}
        return float(cfg["train_subsample"]) if "train_subsample" in cfg else 1.0 / max(1, int(cfg.get("train_stride", 1)))

    def secs(t) -> float | None:
        s = [x for x in (t.user_attrs.get("curves") or {}).get("epoch_seconds", []) if x]
        return statistics.median(s) if s else None

    if secs(best) is None:
        return None
    if not full:
        return secs(best)
    seen = {frac(t): secs(t) for _, t in trials if t.params == best.params and secs(t) is not None}
    if len(seen) >= 2:
        (f1, s1), (f2, s2) = min(seen.items()), max(seen.items())
        per_fraction = max(0.0, (s2 - s1) / (f2 - f1))
        return max(s2, s1 + per_fraction * (1.0 - f1))
    return secs(best) / frac(best)


def _retrain_choice(trials: list) -> tuple[tuple[str, object], dict]:
    """The (stage, trial) whose configuration the final retrain trains, and why. The final retrain has a
    fixed number of seconds, not of epochs, so the candidates are compared at equal training time: at T, the
    shortest training time of any completed trial, each trial's best validation value among the epochs it had
    finished by T (sum of its epoch seconds); a trial with no epoch by T has shown nothing at that time and
    is left out. The lowest value wins (ties: the fastest epoch). Ranking by the final value instead compares
    at equal epochs and picks a configuration whose epoch costs several times more (a fusion layer: 8x per
    step on Davis, bench/dta_step.py), which the retrain then affords few epochs of. Without epoch times,
    the trial with the best final value."""
    def timeline(t) -> list[tuple[float, float]]:
        secs = (t.user_attrs.get("curves") or {}).get("epoch_seconds") or []
        vals = [v for _, v in sorted(t.intermediate_values.items())]
        if not secs or len(secs) != len(vals) or not all(secs):
            return []
        return list(zip(itertools.accumulate(secs), vals))

    lines = {id(t): timeline(t) for _, t in trials}
    timed = [(s, t) for s, t in trials if lines[id(t)]]
    if not timed:
        stage, best = min(trials, key=lambda p: p[1].value)
        return (stage, best), {"rule": "best final value (no epoch times)"}
    horizon = min(lines[id(t)][-1][0] for _, t in timed)

    def at_horizon(t) -> float | None:
        seen = [v for s, v in lines[id(t)] if s <= horizon * (1 + 1e-9)]
        return min(seen) if seen else None

    scored = [(v, lines[id(t)][0][0], s, t) for s, t in timed if (v := at_horizon(t)) is not None]
    value, _, stage, best = min(scored, key=lambda x: (x[0], x[1]))
    by_final = min(trials, key=lambda p: p[1].value)
    return (stage, best), {"rule": "best at equal training time", "horizon_s": round(horizon, 1), "value_at_horizon": value,
                           "candidates": len(scored), "best_final_value": f"{by_final[0]} #{by_final[1].number}"}


def _stage_trials(ds: Dataset, db: Path) -> list:
    """(stage, trial) of every COMPLETE trial the plan trained (warm-started copies left out), by completion."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not db.exists():
        return []
    url = f"sqlite:///{db}"
    out = []
    for name in optuna.get_all_study_names(storage=url):
        if "/" not in name:
            continue
        st = optuna.load_study(study_name=name, storage=url)
        for t in st.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
            if not t.user_attrs.get("warm_start_of") and t.value is not None and math.isfinite(t.value):
                out.append((name.split("/", 1)[1], t))
    return sorted(out, key=lambda p: p[1].datetime_complete)


def _run_until(cmd: list[str], *, deadline: float | None, log: Path, grace: float | None = None) -> int | str:
    """Run ``cmd`` (cwd: the repository) until it exits or ``deadline`` (epoch seconds) passes; then SIGTERM it
    (the CLI records the trial in flight as interrupted) and, 60 s later, kill it. Returns its exit code,
    or ``"stopped at the budget"``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        wait = grace if deadline is None else max(0.0, deadline - time.time())
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return "stopped at the budget"


# ------------------------------------------------------------------------------------------------ scoring
def score_service(ds: Dataset, points: list[dict], work: Path) -> None:
    """Fill ``val`` of the final-retrain epochs and ``test`` of every point that was the validation-selected
    model when it ended (from the stored checkpoints; for the record only)."""
    import optuna

    from hpo.analysis.trained import load_trial_model
    from hpo.store.checkpoint import load_checkpoint
    from hpo.train.loop import evaluate

    url = f"sqlite:///{work / 'store.db'}"
    cache = str(ROOT / "runs" / "cache")  # the CLI's default, where the arm's subprocesses cached the data
    studies, task, best = {}, None, math.inf
    for p in points:
        if "checkpoint" in p:
            ckpt = load_checkpoint(p["checkpoint"])
            p["val"] = ckpt["metrics"].get(ds.val)
        if p["val"] is None or not p["val"] < best:
            continue
        best = p["val"]
        if "checkpoint" in p:
            _, model_cfg, data_cfg = task.split_config(ckpt["config"])
            splits = task.load(data_cfg)
            model = task.build_model(model_cfg, splits)
            model.load_state_dict(ckpt["model_state"])
            model.eval()
        else:
            name = f"{_plan_name(ds)}/{p['stage']}"
            if name not in studies:
                studies[name] = optuna.load_study(study_name=name, storage=url)
            task, splits, model = load_trial_model(studies[name], p["trial"], str(work / "artifacts"), cache, task=task)
        p["test"] = evaluate(task, model, splits, "test", batch_size=256, device="cpu")[ds.test]


def _plan_name(ds: Dataset) -> str:
    import yaml

    return yaml.safe_load(ds.study.read_text())["name"]


def selected(points: list[dict], budget: float) -> list[tuple[float, float, float, str]]:
    """The anytime curve: (elapsed, val, test, label) each time the validation-selected model changes, within the budget."""
    out, best = [], math.inf
    for p in sorted(points, key=lambda p: p["elapsed_s"]):
        if p["elapsed_s"] <= budget and p["val"] is not None and p["val"] < best:
            best = p["val"]
            out.append((p["elapsed_s"], p["val"], p["test"], p["label"]))
    return out


def at(curve: list, t: float) -> float | None:
    """The selected model's test metric at time ``t`` (None before the first point)."""
    now = None
    for e, _, test, _ in curve:
        if e <= t:
            now = test
    return now


def _ms(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{statistics.mean(v):.4g} ± {statistics.stdev(v):.2g}" if len(v) > 1 else f"{v[0]:.4g}"


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--dataset", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget of each arm (default 30; --quick 1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; --quick 0)")
    ap.add_argument("--arms", nargs="+", choices=["reference", "service"], default=["reference", "service"])
    ap.add_argument("--split", type=float, nargs=2, default=(0.35, 0.2), metavar=("EXPLORE", "PROMOTE"),
                    help="fractions of the budget given to the explore and promote stages' deadlines (default 0.35 0.2; "
                         "the final retrain has what is left)")
    ap.add_argument("--quick", action="store_true", help="toy budgets and data sizes, one seed: checks every step runs (~5 min)")
    args = ap.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 30.0)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    if minutes <= 0:
        raise SystemExit(f"--minutes: must be > 0, but got {minutes}")
    if not (0 < args.split[0] and 0 < args.split[1] and sum(args.split) < 1):
        raise SystemExit(f"--split: must be two fractions > 0 (explore, promote) that add up to less than 1, but got {list(args.split)}")
    budget = minutes * 60.0
    base = outdir(args.quick) / "time_to_quality"
    import os

    print(f"time to quality: {minutes:g} min per arm, seeds {seeds}, {THREADS} threads; {machine()['machine']}; load average "
          f"{os.getloadavg()[0]:.1f} (other processes on the machine slow both arms alike, not equally over time)")
    result = {"minutes": minutes, "seeds": seeds, "split": list(args.split), "quick": args.quick, "machine": machine(), "datasets": {}}
    for name in args.dataset:
        ds = DATASETS[name]
        per = {"reference": {}, "service": {}}
        for seed in seeds:
            work = base / name / f"seed{seed}"
            if "reference" in args.arms:
                t = time.time()
                pts = run_reference(ds, seed, budget, work / "reference", args.quick)
                per["reference"][seed] = {"points": pts, "curve": selected(pts, budget), "wall_s": time.time() - t}
                print(f"  {name} seed {seed} reference: {len(pts)} epochs in {time.time() - t:.0f} s", flush=True)
            if "service" in args.arms:
                t = time.time()
                pts, info = run_service(ds, seed, budget, work / "service", args.quick, tuple(args.split))
                wall = time.time() - t
                score_service(ds, pts, work / "service")
                per["service"][seed] = {"points": pts, "curve": selected(pts, budget), "wall_s": wall, "info": info}
                print(f"  {name} seed {seed} service: {info.get('trials')} trials, chosen {info.get('choice')}, final {info.get('final')}, in {wall:.0f} s "
                      f"(+ {time.time() - t - wall:.0f} s scoring the test split for the record)", flush=True)
        result["datasets"][name] = _report(ds, per, budget, seeds)
    path = save("time_to_quality" + ("_quick" if args.quick else ""), result)
    print(f"\nwritten {path.relative_to(ROOT)}")
    return 0


def _report(ds: Dataset, per: dict, budget: float, seeds: list[int]) -> dict:
    print(f"\n== {ds.name}: validation-selected {ds.test} against elapsed time (budget {budget:.0f} s per arm)")
    for arm, runs in per.items():
        for seed, r in runs.items():
            pts = "  ".join(f"{e:.0f}s {test:.4g}" if test is not None else f"{e:.0f}s -" for e, _, test, _ in r["curve"])
            print(f"  {arm:9s} seed {seed}: {pts or '(nothing within the budget)'}")
    grid = [budget * f for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    rows = [[arm, *[_ms([at(r["curve"], g) for r in runs.values()]) for g in grid]] for arm, runs in per.items() if runs]
    print(table(rows, ["arm (mean ± std over seeds)", *[f"{g:.0f} s" for g in grid]]))
    final = {arm: {s: at(r["curve"], budget) for s, r in runs.items()} for arm, runs in per.items()}
    ratios = [final["service"][s] / final["reference"][s] for s in seeds
              if final["reference"].get(s) and final["service"].get(s) is not None]
    print(f"at the budget: reference {_ms(list(final['reference'].values()))}, service {_ms(list(final['service'].values()))}; "
          f"ratio service / reference {_ms(ratios)} over {len(ratios)} seed(s) (<= 1: the service is as good or better); "
          f"{ds.published[0]}: {ds.published[1]}")
    return {"metric": ds.test, "selection": ds.val, "budget_s": budget, "at_budget": final, "ratios": ratios,
            "ratio_mean": statistics.mean(ratios) if ratios else None,
            "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else None, "published": ds.published,
            "runs": {arm: {str(s): r for s, r in runs.items()} for arm, runs in per.items()}}


if __name__ == "__main__":
    sys.exit(main())
