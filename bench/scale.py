"""Cost as the study grows (issue 17, item 6): many workers, one PostgreSQL server, tens of thousands of trials.

1. **Growth.** ``--workers`` (16) worker processes, as ``hpo run --workers 16`` starts them (one torch thread each),
   run one-epoch toy trials (64 samples, random sampler, no pruner, no checkpoints) against one local PostgreSQL
   server up to ``--trials`` (20,000). Every second a sampler in this process reads the server: the study
   database's connections (``pg_stat_activity``), its transactions and rows (``pg_stat_database``) and the
   server processes' CPU time. Then, from the store:

   - no lost or duplicated trial: numbers 0..n-1 each once, exactly ``--trials`` counted (COMPLETE), every
     other trial a recorded surplus (never trained), none RUNNING or WAITING;
   - orchestration per trial, per worker: the time from the worker's previous trial's end to this one's end,
     less the trial's own training (``seconds``); median over the first and the last 1,000 trials (by number),
     and their ratio (target <= 1.5);
   - the database's work per trial (transactions, rows read) over the first and the last 1,000 trials;
   - ``hpo report`` (the CLI, a fresh process) on the finished study (target <= 10 s);
   - the peak connections (target: bounded, i.e. at most the pool's bound per worker, whatever the trials).

   From the measured load it prints what 1,000 workers would ask of the server.
2. **Against stock Optuna, per store** (SQLite, PostgreSQL): ``--stock-trials`` trivial trials in one process,
   (a) by the service's worker loop and (b) by ``optuna.create_study(storage=URL).optimize`` with the same
   parameters, the same training function and a per-epoch ``trial.report`` + ``should_prune``, as a user of
   Optuna would write it; alternating ``--reps`` times. Orchestration = wall time - time inside the training
   (each epoch's reporting callback counted as orchestration in both). Target: service / stock <= 1.0.

    python bench/scale.py                     # 16 workers, 20,000 trials, then the stock comparison (~25 min on 2 cores)
    python bench/scale.py --trials 5000       # a shorter growth run
    python bench/scale.py --quick             # 4 workers, 300 trials, 30 stock trials: checks the script runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, save, table  # noqa: E402

STUDY = """
name: {name}
task: {{family: toy, dataset: {{n_samples: 64}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
    hidden: [16, 32]
    depth: {{type: int, low: 1, high: 2}}
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: {n}, max_consecutive_failures: 1000}}
training: {{epochs: 1, batch_size: 32}}
storage: {storage}
artifacts: {artifacts}
"""


def write_study(tmp: Path, name: str, n: int, storage: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(STUDY.format(name=name, n=n, storage=storage, artifacts=tmp / "art"))
    return p


# ---------------------------------------------------------------------------------------------- the server's load
class ServerSampler(threading.Thread):
    """Reads the PostgreSQL server every ``every`` seconds: connections to ``database`` (not counting its own),
    the database's transaction and row counters, the trials created (one study in the database), and the
    server processes' CPU seconds."""

    def __init__(self, pg, database: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(host="127.0.0.1", port=pg.port, user="hpo", dbname=database,
                                    password=pg.env()["PGPASSWORD"], autocommit=True)
        self.database, self.every = database, every
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append(self.read())
            except Exception as e:  # the study's tables may not exist yet
                self.samples.append({"t": time.monotonic(), "error": str(e)[:200]})
            self.stop.wait(self.every)
        self.conn.close()

    def read(self) -> dict:
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                        (self.database,))
            (connections,) = cur.fetchone()
            cur.execute("SELECT xact_commit + xact_rollback, tup_returned, tup_fetched, tup_inserted + tup_updated + "
                        "tup_deleted FROM pg_stat_database WHERE datname = %s", (self.database,))
            xacts, returned, fetched, written = cur.fetchone()
            finished = None
            cur.execute("SELECT to_regclass('trials') IS NOT NULL")
            if cur.fetchone()[0]:  # trials created so far, off the primary key's index (no scan of the table)
                cur.execute("SELECT coalesce(max(trial_id), 0) FROM trials")
                (finished,) = cur.fetchone()
        return {"t": time.monotonic(), "connections": connections, "xacts": xacts, "rows_returned": returned,
                "rows_fetched": fetched, "rows_written": written, "finished": finished, "server_cpu_s": server_cpu()}


def server_cpu() -> float:
    """CPU seconds (user + system) of every ``postgres`` process on this machine, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def window_load(samples: list[dict], lo: int, hi: int) -> dict | None:
    """The database's work per trial while the trials created went from ``lo`` to ``hi``
    (the first and the last samples bracketing it)."""
    ok = [s for s in samples if s.get("finished") is not None]
    a = [s for s in ok if s["finished"] <= lo]
    b = [s for s in ok if s["finished"] >= hi]
    if not a or not b:
        return None
    a, b = a[-1], b[0]
    n = b["finished"] - a["finished"]
    if n <= 0:
        return None
    dt = b["t"] - a["t"]
    return {"trials": n, "seconds": round(dt, 2), "trials_per_s": round(n / dt, 2),
            "xacts_per_trial": round((b["xacts"] - a["xacts"]) / n, 1),
            "rows_returned_per_trial": round((b["rows_returned"] - a["rows_returned"]) / n, 1),
            "rows_fetched_per_trial": round((b["rows_fetched"] - a["rows_fetched"]) / n, 1),
            "rows_written_per_trial": round((b["rows_written"] - a["rows_written"]) / n, 1),
            "server_cpu_ms_per_trial": round((b["server_cpu_s"] - a["server_cpu_s"]) / n * 1000, 2)}


# ---------------------------------------------------------------------------------------------------- 1. growth
def orchestration_per_trial(trials) -> dict[int, float]:
    """{trial number: seconds of orchestration}: per worker, the time from its previous trial's end to this
    trial's end, less this trial's training. A worker's first trial (process start) has none."""
    by_worker: dict[str, list] = {}
    for t in trials:
        w = t.user_attrs.get("worker")
        if w and t.datetime_complete is not None:
            by_worker.setdefault(w, []).append(t)
    out = {}
    for ts in by_worker.values():
        ts.sort(key=lambda t: t.datetime_complete)
        for prev, t in zip(ts, ts[1:]):
            if t.state.name != "COMPLETE":
                continue
            cycle = (t.datetime_complete - prev.datetime_complete).total_seconds()
            out[t.number] = cycle - float(t.user_attrs.get("seconds", 0.0))
    return out


def growth(pg, tmp: Path, workers: int, n: int, window: int) -> dict:
    import optuna

    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import apply_sets, load_study
    from hpo.spec.yaml_io import load_yaml
    from hpo.store.storage import open_storage

    url = pg.create_database("scale")
    path = write_study(tmp, "scale", n, url)
    study = load_study(path)
    sampler = ServerSampler(pg, "scale")
    sampler.start()
    t0 = time.perf_counter()
    run_study(study, RunOptions(workers=workers, threads=1, checkpoints=False, cache_dir=str(tmp / "cache")),
              raw=apply_sets(load_yaml(path), [], str(path)), poll_seconds=5.0)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()

    trials = optuna.load_study(study_name="scale", storage=open_storage(url, heartbeat=False)).get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    numbers = [t.number for t in trials]
    not_counted = [t for t in trials if t.state.name == "FAIL" and t.user_attrs.get("stop_reason") == "surplus"]
    integrity = {
        "trials_in_store": len(trials), "states": states,
        "numbers_each_once": sorted(numbers) == list(range(len(trials))),
        "counted_complete": states.get("COMPLETE", 0), "asked": n,
        "surplus_not_trained": len(not_counted),
        "other_failures": states.get("FAIL", 0) - len(not_counted),
        "running_or_waiting": states.get("RUNNING", 0) + states.get("WAITING", 0),
        "workers_seen": len({t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}),
    }
    integrity["ok"] = (integrity["numbers_each_once"] and integrity["counted_complete"] == n
                       and integrity["other_failures"] == 0 and integrity["running_or_waiting"] == 0)

    orch = orchestration_per_trial(trials)
    complete = sorted(t.number for t in trials if t.state.name == "COMPLETE")
    first, last = complete[:window], complete[-window:]
    med_first = statistics.median(orch[i] for i in first if i in orch)
    med_last = statistics.median(orch[i] for i in last if i in orch)
    train_med = statistics.median(float(t.user_attrs.get("seconds", 0.0)) for t in trials if t.state.name == "COMPLETE")

    ok = [s for s in sampler.samples if "connections" in s]
    peak_conn = max(s["connections"] for s in ok)
    finished_total = len(trials)
    load_first = window_load(ok, 0, min(window, finished_total))
    load_last = window_load(ok, max(finished_total - window, 0), finished_total)
    load_all = window_load(ok, 0, finished_total)

    # hpo report, as a user runs it, in a fresh process
    env = {**os.environ, **pg.env()}
    t1 = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).parent / "hpo"), "report", "scale", "--storage", url, "--out",
                        str(tmp / "scale.html"), "--no-dashboard"], capture_output=True, text=True, env=env, timeout=600)
    report_s = time.perf_counter() - t1
    if r.returncode:
        raise SystemExit(f"hpo report failed: {r.stderr[-2000:]}")

    out = {"workers": workers, "trials": n, "wall_s": round(wall, 1), "trials_per_s": round(n / wall, 2),
           "integrity": integrity, "training_s_median": round(train_med, 4),
           "orchestration_ms": {"first": round(med_first * 1000, 1), "last": round(med_last * 1000, 1),
                                "window": window, "ratio_last_first": round(med_last / med_first, 3)},
           "connections_peak": peak_conn, "connections_per_worker_peak": round(peak_conn / workers, 2),
           "db_load": {"first": load_first, "last": load_last, "whole": load_all},
           "hpo_report_s": round(report_s, 2), "hpo_report_said": r.stdout.strip().splitlines()[-1:]}
    return out


def thousand_workers(g: dict) -> list[str]:
    """What 1,000 workers would ask of the server, from the measured load per trial."""
    load = g["db_load"]["whole"]
    lines = []
    per_worker = g["connections_per_worker_peak"]
    for trial_s in (g["training_s_median"] + g["orchestration_ms"]["last"] / 1000, 60.0, 600.0):
        rate = 1000 / trial_s
        lines.append(
            f"1,000 workers, {trial_s:,.2f} s per trial: {rate:,.0f} trials/s -> {rate * load['xacts_per_trial']:,.0f} "
            f"transactions/s, {rate * load['rows_returned_per_trial']:,.0f} rows read/s, "
            f"{rate * load['server_cpu_ms_per_trial'] / 1000:,.1f} server cores; "
            f"{1000 * per_worker:,.0f} connections (PostgreSQL's default max_connections is 100)")
    return lines


# ---------------------------------------------------------------------------------------- 2. against stock Optuna
class Timed:
    """Wraps ``hpo.train.fit`` to add up the seconds spent training (each on_epoch callback excluded)."""

    def __init__(self) -> None:
        import hpo.train

        self.module, self.fit, self.seconds = hpo.train, hpo.train.fit, 0.0

    def __enter__(self):
        def fit(*a, on_epoch=None, **kw):
            spent = [0.0]

            def cb(epoch, metrics):
                t = time.perf_counter()
                try:
                    return on_epoch(epoch, metrics)
                finally:
                    spent[0] += time.perf_counter() - t

            t0 = time.perf_counter()
            try:
                return self.fit(*a, on_epoch=cb if on_epoch else None, **kw)
            finally:
                self.seconds += time.perf_counter() - t0 - spent[0]

        self.module.fit = fit
        return self

    def __exit__(self, *exc) -> None:
        self.module.fit = self.fit


def service_arm(study_path: Path, url: str, name: str, m: int, cache: str) -> tuple[float, float]:
    from hpo.run.loop import run_worker
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    study = load_study(study_path)
    with Timed() as timed:
        t0 = time.perf_counter()
        run_worker(study, url, name, n_trials=m, timeout=None, worker=0, opts=RunOptions(checkpoints=False, cache_dir=cache))
        wall = time.perf_counter() - t0
    return wall, timed.seconds


def stock_arm(study_path: Path, url: str, name: str, m: int, cache: str) -> tuple[float, float]:
    """What an Optuna user writes: suggest, train, report each epoch, ask the pruner; optimize() runs it."""
    import optuna

    from hpo.data.cache import DataCache
    from hpo.spec import load_study

    study = load_study(study_path)
    task = study.make_task(DataCache(cache))

    def objective(trial):
        params = {"lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
                  "hidden": trial.suggest_categorical("hidden", [16, 32]),
                  "depth": trial.suggest_int("depth", 1, 2)}
        config = study.space.sample(optuna.trial.FixedTrial(params), {})
        config.setdefault("seed", 0)
        train_cfg, model_cfg, data_cfg = task.split_config(config)
        splits = task.load(data_cfg)

        def on_epoch(epoch, metrics):
            trial.report(metrics["val_mae"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        import hpo.train

        result = hpo.train.fit(task, splits, train_cfg, model_cfg, monitor="val_mae", direction="minimize", on_epoch=on_epoch)
        return result.best["val_mae"]

    with Timed() as timed:
        t0 = time.perf_counter()
        ostudy = optuna.create_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=0),
                                     pruner=optuna.pruners.NopPruner())
        ostudy.optimize(objective, n_trials=m)
        wall = time.perf_counter() - t0
    return wall, timed.seconds


def versus_stock(pg, tmp: Path, m: int, reps: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stores = {"sqlite": lambda tag: f"sqlite:///{tmp}/{tag}.db"}
    if pg is not None:
        stores["postgresql"] = lambda tag: pg.create_database(tag)
    cache = str(tmp / "cache")
    # one warm-up of each arm (imports, the data cache, the first model): not timed
    warm = stores["sqlite"]("warm")
    service_arm(write_study(tmp, "warm", 3, warm), warm, "warm-s", 3, cache)
    stock_arm(write_study(tmp, "warm", 3, warm), warm, "warm-o", 3, cache)
    out: dict = {}
    for store, make_url in stores.items():
        runs = {"service": [], "stock": []}
        for rep in range(reps):
            for arm, fn in (("service", service_arm), ("stock", stock_arm)):
                tag = f"{store[:2]}{arm[:2]}{rep}"
                url = make_url(tag)
                wall, train = fn(write_study(tmp, tag, m, url), url, tag, m, cache)
                runs[arm].append({"wall_s": round(wall, 3), "train_s": round(train, 3),
                                  "orchestration_ms": round((wall - train) / m * 1000, 2)})
                print(f"{store:<10s} rep {rep + 1}/{reps} {arm:<7s}: {m} trials in {wall:.2f}s, training {train:.2f}s "
                      f"-> {runs[arm][-1]['orchestration_ms']:.1f} ms/trial orchestration", flush=True)
        med = {arm: statistics.median(r["orchestration_ms"] for r in rs) for arm, rs in runs.items()}
        out[store] = {"runs": runs, "median_ms": med, "ratio": round(med["service"] / med["stock"], 3)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--window", type=int, default=1000, help="trials in the first and last windows")
    ap.add_argument("--stock-trials", type=int, default=100, help="trials per arm of the stock-Optuna comparison")
    ap.add_argument("--reps", type=int, default=3, help="alternations of the stock-Optuna comparison")
    ap.add_argument("--no-growth", action="store_true", help="only the stock-Optuna comparison")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.workers, args.trials, args.window, args.stock_trials, args.reps = 4, 300, 100, 30, 1
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tests.pg import PostgresServer

    tmp = Path(tempfile.mkdtemp(prefix="hpo-scale-"))
    pg = PostgresServer()
    os.environ.update(pg.env())
    result: dict = {"machine": machine()}
    try:
        if not args.no_growth:
            g = growth(pg, tmp, args.workers, args.trials, args.window)
            result["growth"] = g
            i, o = g["integrity"], g["orchestration_ms"]
            print(f"\n{g['workers']} workers, {g['trials']:,} trials on PostgreSQL in {g['wall_s']:.0f}s "
                  f"({g['trials_per_s']:.1f} trials/s; median training {g['training_s_median'] * 1000:.0f} ms per trial)")
            print(f"integrity: {i['trials_in_store']:,} trials in the store, numbers each once: {i['numbers_each_once']}, "
                  f"COMPLETE {i['counted_complete']:,} of {i['asked']:,} asked, surplus (not trained) {i['surplus_not_trained']}, "
                  f"other failures {i['other_failures']}, RUNNING/WAITING {i['running_or_waiting']} -> "
                  f"{'no trial lost or duplicated' if i['ok'] else 'FAILED'}")
            print(f"orchestration per trial (median): first {o['window']:,} {o['first']:.1f} ms, last {o['window']:,} "
                  f"{o['last']:.1f} ms -> {o['ratio_last_first']:.2f}x (target <= 1.5x)")
            rows = [[k, *(v[c] if v else "-" for c in ("trials_per_s", "xacts_per_trial", "rows_returned_per_trial",
                                                       "rows_written_per_trial", "server_cpu_ms_per_trial"))]
                    for k, v in g["db_load"].items()]
            print(table(rows, ["window", "trials/s", "transactions/trial", "rows read/trial", "rows written/trial",
                               "server CPU ms/trial"]))
            print(f"connections: peak {g['connections_peak']} for {g['workers']} workers "
                  f"({g['connections_per_worker_peak']:.2f} per worker)")
            print(f"hpo report at {i['trials_in_store']:,} trials: {g['hpo_report_s']:.1f}s (target <= 10 s); it said: "
                  f"{' '.join(g['hpo_report_said'])}")
            result["thousand_workers"] = thousand_workers(g)
            print("\n".join(result["thousand_workers"]))
            if not i["ok"]:
                raise SystemExit("integrity check failed: " + repr(i))
        print()
        v = versus_stock(pg, tmp, args.stock_trials, args.reps)
        result["versus_stock"] = v
        print(table([[s, round(x["median_ms"]["service"], 1), round(x["median_ms"]["stock"], 1), x["ratio"]] for s, x in v.items()],
                    ["store", "service ms/trial", "stock Optuna ms/trial", "ratio (target <= 1.0)"]))
    finally:
        pg.close()
    save("scale" + ("-quick" if args.quick else ""), result)
    return result


if __name__ == "__main__":
    main()
