"""Export and report at scale: a 10,000-trial study (trials written directly into a SQLite store, no
training: each with params, a config, 30-epoch train/val curves, metrics and diagnosis as a real trial
has) is exported (top 10) and reported (the full HTML report) in one process; printed against
Optuna's own ``study.trials_dataframe()`` on the same store, as a ratio. Target: export + report <= 10 s.

    python bench/report_scale.py              # 10,000 trials
    python bench/report_scale.py --quick      # 500 trials
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import tempfile
import time
from pathlib import Path

from common import machine, save, table


def write_study(url: str, n: int, seed: int = 0):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution, distribution_to_json

    from hpo.train.diagnose import diagnose_curves
    from hpo.store.record import RECORD_ATTR
    from hpo.store.storage import open_storage

    rng = random.Random(seed)
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="scale", storage=storage, direction="minimize")
    study.set_user_attr(RECORD_ATTR, {
        "format": 1, "file": None, "space_file": None, "dataset": {"format": "synthetic"},
        "spec": {"name": "scale", "task": {"family": "toy", "dataset": {}}, "objectives": ["val_mae"],
                 "space": {"params": {}}, "training": {}},
    })
    dists = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "hidden": CategoricalDistribution((8, 16, 32, 64)),
             "depth": IntDistribution(1, 4), "dropout": FloatDistribution(0.0, 0.5),
             "fusion": CategoricalDistribution(("concat", "gated", "sum"))}
    json_dist = {k: distribution_to_json(d) for k, d in dists.items()}
    rows = {"trials": [], "params": [], "values": [], "attrs": [], "inter": []}
    now = datetime.datetime.now()
    for i in range(n):
        params = {"lr": 10 ** rng.uniform(-4, -2), "hidden": rng.choice((8, 16, 32, 64)), "depth": rng.randint(1, 4),
                  "dropout": rng.uniform(0, 0.5), "fusion": rng.choice(("concat", "gated", "sum"))}
        quality = abs(math.log10(params["lr"]) + 3) + params["dropout"] + rng.gauss(0, 0.1)
        epochs = 30 if rng.random() < 0.6 else rng.randint(3, 12)
        val = [0.3 + quality * 0.2 + 1.0 / (e + 1) for e in range(epochs)]
        train = [v * rng.uniform(0.4, 0.9) for v in val]
        curves = {"epoch": list(range(1, epochs + 1)), "train_loss": train, "val_loss": val, "train_mae": train,
                  "val_mae": val, "lr": [params["lr"]] * epochs, "epoch_seconds": [0.5] * epochs}
        pruned = epochs < 30
        best = min(val)
        config = {**params, "epochs": 30, "seed": 0}
        attrs = {"config": config, "curves": curves, "metrics": {"val_mae": best, "train_mae": min(train)},
                 "best_epoch": val.index(best) + 1, "epochs_run": epochs, "stop_reason": "pruned" if pruned else "completed",
                 "stop_detail": "", "seconds": 15.0, "diagnosis": diagnose_curves(curves, metric="mae", direction="minimize", config=config)}
        if i < 3:
            attrs["baseline"] = f"plan{i}"
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        rows["trials"].append({"number": i, "study_id": study._study_id, "state": state, "datetime_start": now, "datetime_complete": now})
        rows["params"].append([(k, dists[k].to_internal_repr(v), json_dist[k]) for k, v in params.items()])
        rows["values"].append(None if pruned else best)
        rows["attrs"].append([(k, json.dumps(v)) for k, v in attrs.items()])
        rows["inter"].append([(e + 1, v) for e, v in enumerate(val)])
    # written as bulk inserts into Optuna's own tables (a trial at a time through Optuna takes minutes)
    from optuna.storages._rdb import models
    from sqlalchemy import insert, select

    with storage.engine.begin() as conn:
        conn.execute(insert(models.TrialModel.__table__), rows["trials"])
        tid = dict(conn.execute(select(models.TrialModel.trial_id, models.TrialModel.number)
                                .where(models.TrialModel.study_id == study._study_id)).all())
        ids = {number: trial_id for trial_id, number in tid.items()}
        conn.execute(insert(models.TrialParamModel.__table__), [
            {"trial_id": ids[i], "param_name": k, "param_value": v, "distribution_json": d}
            for i, ps in enumerate(rows["params"]) for k, v, d in ps])
        conn.execute(insert(models.TrialValueModel.__table__), [
            {"trial_id": ids[i], "objective": 0, "value": v, "value_type": models.TrialValueModel.TrialValueType.FINITE}
            for i, v in enumerate(rows["values"]) if v is not None])
        conn.execute(insert(models.TrialUserAttributeModel.__table__), [
            {"trial_id": ids[i], "key": k, "value_json": v} for i, kv in enumerate(rows["attrs"]) for k, v in kv])
        conn.execute(insert(models.TrialIntermediateValueModel.__table__), [
            {"trial_id": ids[i], "step": s, "intermediate_value": v,
             "intermediate_value_type": models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE}
            for i, iv in enumerate(rows["inter"]) for s, v in iv])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n = 500 if args.quick else args.trials
    import optuna

    from hpo.analysis.export import exported, select_trials
    from hpo.store.stored import load_stored_study
    from hpo.analysis.report import build_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="hpo-scale-"))
    url = f"sqlite:///{tmp / 'scale.db'}"
    t0 = time.perf_counter()
    write_study(url, n)
    setup = time.perf_counter() - t0
    print(f"wrote {n} trials in {setup:.0f}s (setup, not timed)")

    t0 = time.perf_counter()
    df = optuna.load_study(study_name="scale", storage=url).trials_dataframe()
    t_df = time.perf_counter() - t0

    t0 = time.perf_counter()
    ostudy = load_stored_study(url, "scale")
    docs = [exported(ostudy, t, url, rank=i + 1) for i, t in enumerate(select_trials(ostudy, 10))]
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    path = build_report(load_stored_study(url, "scale"), tmp / "report.html")
    t_report = time.perf_counter() - t0
    total = t_export + t_report
    result = {"machine": machine(), "trials": n, "trials_dataframe_s": round(t_df, 3), "export_top10_s": round(t_export, 3),
              "report_s": round(t_report, 3), "export_plus_report_s": round(total, 3), "ratio_to_trials_dataframe": round(total / t_df, 3),
              "report_mb": round(path.stat().st_size / 1e6, 2), "rows": len(df), "exported": len(docs)}
    print(table([["optuna trials_dataframe()", round(t_df, 2), "1.00"],
                 ["hpo export --top 10", round(t_export, 2), f"{t_export / t_df:.2f}"],
                 ["hpo report (HTML)", round(t_report, 2), f"{t_report / t_df:.2f}"],
                 ["export + report", round(total, 2), f"{total / t_df:.2f}"]], ["step", "seconds", "ratio to trials_dataframe"]))
    print(f"{n} trials: export + report {total:.1f}s (target <= 10 s), report {result['report_mb']} MB")
    save("report_scale" + ("-quick" if args.quick else ""), result)
    return result


if __name__ == "__main__":
    main()
