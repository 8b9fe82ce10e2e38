"""``hpo tensorboard``: the stage studies (``PLAN/STAGE``) of a real toy plan run in this
process on a SQLite file, exported, and the event files read back — with TensorBoard's own EventAccumulator
where TensorBoard is installed, else record by record with tensorboardX's protobufs — against the curves,
params and metrics the store holds; one test serves the export with a real ``tensorboard`` process and
asks its HParams plugin for the session groups."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hpo.cli import main
from hpo.store.record import BASELINE, BEST_EPOCH, CURVES, METRICS, RECORD_ATTR, SPEC, STOP_REASON, WARM_START_OF
from tests.conftest import free_port, require

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HINT = "pip install 'fusion-hpo[tensorboard]'"


# -- reading event files back ----------------------------------------------------------------------------
def _records(path: Path):
    """The records of a TFRecord file (length, its crc, data, its crc)."""
    data, i = path.read_bytes(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield data[i + 12:i + 12 + n]
        i += 12 + n + 4


def read_run(folder: Path) -> tuple[dict[str, list[tuple[int, float, float]]], dict[str, bytes]]:
    """({tag: [(step, value, wall_time)]}, {hparams tag: plugin content}) of the one event file in ``folder``."""
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert len(files) == 1, f"{folder}: one event file per run, got {files}"
    if HAS_TENSORBOARD:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        scalars = {tag: [(s.step, s.value, s.wall_time) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
        try:
            return scalars, dict(acc.PluginTagToContent("hparams"))
        except KeyError:  # no hparams summary in the run
            return scalars, {}
    from tensorboardX.proto.event_pb2 import Event

    scalars, plugin = {}, {}
    for raw in _records(files[0]):
        ev = Event.FromString(raw)
        for v in ev.summary.value:
            if v.metadata.plugin_data.plugin_name == "hparams":
                plugin[v.tag] = v.metadata.plugin_data.content
            elif v.HasField("simple_value"):
                scalars.setdefault(v.tag, []).append((ev.step, v.simple_value, ev.wall_time))
    return scalars, plugin


def hparams_data(content: bytes):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    return HParamsPluginData.FromString(content)


def f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def tag_of(curve: str) -> str:
    from hpo.analysis.tensorboard import curve_tag

    return curve_tag(curve)


def trials_of(db: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


# -- the studies -----------------------------------------------------------------------------------------
PLAN = """
name: toyplan
task: {{family: toy, dataset: {{n_samples: 96}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    hidden: [8, 16]
    use_second_modality: {{type: bool}}
    fusion: {{type: categorical, choices: [concat, gated, sum], when: use_second_modality}}
  baselines:
    current: {{lr: 1.0e-2, hidden: 16, use_second_modality: true, fusion: concat}}
objectives: [val_mae]
sampler: {{type: tpe, seed: 3, n_startup_trials: 2}}
pruner: {{type: median, n_startup_trials: 1, n_warmup_steps: 1}}
training: {{epochs: 3, batch_size: 32}}
storage: sqlite:///{db}
artifacts: {artifacts}
stages:
  - name: quick
    budget: {{n_trials: 3}}
  - name: stage2
    budget: {{n_trials: 1}}
    warm_start: true
"""


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A two-stage toy plan run for real into a SQLite file: stage ``quick`` (conditional params, a baseline,
    a median pruner), then ``stage2`` warm-started from it (trials told, not trained)."""
    tmp = tmp_path_factory.mktemp("tb")
    plan = tmp / "toyplan.yaml"
    plan.write_text(PLAN.format(db=tmp / "hpo.db", artifacts=tmp / "artifacts"))
    assert main(["run", str(plan), "-q"]) == 0
    return tmp


@pytest.mark.slow
def test_runs_scalars_and_hparams_match_the_store(studies, capsys):
    db, out = studies / "hpo.db", studies / "tb-toy"
    assert main(["tensorboard", "toyplan/quick", "--storage", f"sqlite:///{db}", "--out", str(out)]) == 0
    trials = [t for t in trials_of(db, "toyplan/quick") if t.user_attrs.get(CURVES)]
    assert trials and any(t.user_attrs.get(BASELINE) == "current" for t in trials)
    printed = capsys.readouterr().out
    assert f"wrote {len(trials)} runs" in printed and f"tensorboard --logdir {out}" in printed

    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    expected = sorted(f"trial-{t.number}" + (f"-{t.user_attrs[BASELINE]}" if t.user_attrs.get(BASELINE) else "") for t in trials)
    assert runs == expected and "trial-0-current" in runs

    # the experiment (root run): every param of the study and every final metric
    _, root = read_run(out)
    exp = hparams_data(root["_hparams_/experiment"]).experiment
    names = {h.name for h in exp.hparam_infos}
    assert {"lr", "hidden", "use_second_modality", "fusion", "trial.state", "trial.stop_reason", "trial.baseline"} <= names
    assert {m.name.tag for m in exp.metric_infos} >= {"hparams/val_mae", "hparams/train_mae", "hparams/val_rmse"}
    lr = next(h for h in exp.hparam_infos if h.name == "lr")
    assert (lr.domain_interval.min_value, lr.domain_interval.max_value) == (1e-3, 3e-2)
    fusion = next(h for h in exp.hparam_infos if h.name == "fusion")
    assert [v.string_value for v in fusion.domain_discrete.values] == ["concat", "gated", "sum"]  # the choices, not only the seen ones

    for t in trials:
        run = out / (f"trial-{t.number}" + (f"-{t.user_attrs[BASELINE]}" if t.user_attrs.get(BASELINE) else ""))
        scalars, plugin = read_run(run)
        curves = t.user_attrs[CURVES]
        for name, series in curves.items():
            if name == "epoch":
                continue
            want = [(e, f32(v)) for e, v in zip(curves["epoch"], series) if v is not None]
            assert [(s, v) for s, v, _ in scalars[tag_of(name)]] == want, (t.number, name)
        # wall times: the trial's start plus its epochs' seconds
        walls = [w for _, _, w in scalars["val/mae"]]
        start = t.datetime_start.timestamp()
        assert walls == pytest.approx([start + sum(curves["epoch_seconds"][:i + 1]) for i in range(len(walls))], abs=1e-3)
        # the final metrics at the best epoch, and the session's hparams and status
        for m, v in t.user_attrs[METRICS].items():
            assert scalars[f"hparams/{m}"] == [(t.user_attrs[BEST_EPOCH], f32(v), pytest.approx(walls[-1], abs=1e-3))]
        ssi = hparams_data(plugin["_hparams_/session_start_info"]).session_start_info
        got = {k: (v.string_value if v.HasField("string_value") else v.bool_value if v.HasField("bool_value") else v.number_value)
               for k, v in ssi.hparams.items()}
        assert got == {**t.params, "trial.state": t.state.name, "trial.stop_reason": t.user_attrs[STOP_REASON],
                       "trial.baseline": t.user_attrs.get(BASELINE, "")}
        status = hparams_data(plugin["_hparams_/session_end_info"]).session_end_info.status
        from tensorboardX.proto.api_pb2 import Status

        assert Status.Name(status) == {"COMPLETE": "STATUS_SUCCESS", "PRUNED": "STATUS_UNKNOWN"}[t.state.name]


@pytest.mark.slow
def test_a_stage_study_is_one_folder_and_its_warm_start_copies_have_no_run(studies, monkeypatch, capsys):
    monkeypatch.chdir(studies)
    db = studies / "hpo.db"
    assert main(["tensorboard", "toyplan/stage2", "--storage", f"sqlite:///{db}"]) == 0
    root = studies / "runs" / "tensorboard"
    assert [p.name for p in root.iterdir()] == ["toyplan__stage2"]  # no toyplan/ folder holding stage2/
    out = root / "toyplan__stage2"
    trials = trials_of(db, "toyplan/stage2")
    told = [t for t in trials if WARM_START_OF in t.user_attrs]
    trained = [t for t in trials if WARM_START_OF not in t.user_attrs and t.user_attrs.get(CURVES)]
    assert told and trained
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(f"trial-{t.number}" for t in trained)
    assert f"left out (no curves): {len(told)} warm-start copies" in capsys.readouterr().out
    exp = hparams_data(read_run(out)[1]["_hparams_/experiment"]).experiment
    assert exp.name == "toyplan/stage2"


@pytest.mark.slow
def test_a_second_export_replaces_the_first(studies):
    db, out = studies / "hpo.db", studies / "tb-again"
    url = f"sqlite:///{db}"
    assert main(["tensorboard", "toyplan/quick", "--storage", url, "--out", str(out)]) == 0
    first = {p.relative_to(out) for p in out.rglob("events.out.tfevents.*")}
    time.sleep(1.1)  # event file names carry the second they were made in
    assert main(["tensorboard", "toyplan/quick", "--storage", url, "--out", str(out)]) == 0
    second = {p.relative_to(out) for p in out.rglob("events.out.tfevents.*")}
    assert len(second) == len(first) and second != first  # new files, the old ones gone
    scalars, _ = read_run(out / "trial-0-current")  # one file per run: every point once
    t = trials_of(db, "toyplan/quick")[0]
    assert len(scalars["val/mae"]) == len(t.user_attrs[CURVES]["epoch"])


def test_an_out_folder_of_other_files_is_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["tensorboard", "toyplan/quick", "--storage", url, "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out: must be absent, empty or an earlier `hpo tensorboard` export" in err[0] and "notes.txt" in err[0]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["tensorboard", "toyplan/quick", "--storage", url, "--out", str(a_file)]) == 2
    assert "--out: must be a folder" in capsys.readouterr().err and a_file.read_text() == "x"
    assert not (tmp_path / "hpo.db").exists()  # refused before the store was opened


def test_a_study_without_curves_is_refused_and_nothing_is_written(tmp_path, capsys):
    import optuna
    from optuna.distributions import FloatDistribution

    url = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(study_name="x", storage=url)
    study.set_user_attr(RECORD_ATTR, {"format": 2, SPEC: {"task": {"family": "toy"}, "objectives": ["val_mae"]}})
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"lr": 1e-3},
                                              distributions={"lr": FloatDistribution(1e-4, 1e-2)},
                                              user_attrs={STOP_REASON: "constraint"}))
    out = tmp_path / "tb"
    assert main(["tensorboard", "x", "--storage", url, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "study 'x': must have a trial with learning curves to export, but got none (1 trials without curves)" in err
    assert not out.exists()


def test_without_tensorboardx_one_line_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboardX.writer", None)
    out = tmp_path / "tb"
    assert main(["tensorboard", "toyplan/quick", "--storage", f"sqlite:///{tmp_path / 'hpo.db'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and HINT in err[0]
    assert not out.exists() and not (tmp_path / "hpo.db").exists()


def test_folder_names_never_nest_or_escape():
    from hpo.analysis.tensorboard import curve_tag, default_out, safe_name

    assert default_out("plan/stage~2") == Path("runs/tensorboard/plan__stage~2")
    assert safe_name("../x") == "..__x" and "/" not in safe_name("a/b\\c d") and safe_name("..") not in ("..", ".")
    assert safe_name("ablation.lr=0.0001.seed0") == "ablation.lr=0.0001.seed0"
    assert [curve_tag(c) for c in ("val_mae", "train_loss", "val_mae_h3", "train_val_gap", "val_train_ratio", "lr",
                                   "epoch_seconds")] == ["val/mae", "train/loss", "val/mae_h3", "gap/train_val_gap",
                                                         "gap/val_train_ratio", "optim/lr", "time/epoch_seconds"]


@pytest.mark.slow
def test_tensorboard_itself_compares_the_trials_in_its_hparams_tab(studies):
    """A real ``tensorboard`` server on the export: its HParams plugin lists one session group per trial,
    with the trial's params and its final val_mae."""
    require("tensorboard", found=HAS_TENSORBOARD)
    db, out = studies / "hpo.db", studies / "tb-served"
    assert main(["tensorboard", "toyplan/quick", "--storage", f"sqlite:///{db}", "--out", str(out)]) == 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        request = json.dumps({"experimentName": "", "startIndex": 0, "sliceSize": 100,
                              "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_FAILURE", "STATUS_RUNNING"]})
        url = f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups?request={urllib.parse.quote(request)}"
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.loads(resp.read())
                if body.get("sessionGroups"):
                    break
            except OSError:
                pass
            assert proc.poll() is None, "tensorboard exited"
            time.sleep(0.5)
        assert body, "tensorboard did not answer"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    trials = {f"trial-{t.number}" + (f"-{t.user_attrs[BASELINE]}" if t.user_attrs.get(BASELINE) else ""): t
              for t in trials_of(db, "toyplan/quick") if t.user_attrs.get(CURVES)}
    groups = {g["name"]: g for g in body["sessionGroups"]}
    assert set(groups) == set(trials)
    for name, t in trials.items():
        g = groups[name]
        assert g["hparams"]["lr"] == pytest.approx(t.params["lr"])
        val_mae = next(m["value"] for m in g["metricValues"] if m["name"]["tag"] == "hparams/val_mae")
        assert math.isclose(val_mae, f32(t.user_attrs[METRICS]["val_mae"]), rel_tol=1e-6)
