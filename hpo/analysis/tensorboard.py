"""A study's learning curves as TensorBoard event files: one run per trial, scalars per epoch, and the hparams
plugin (params + final metrics) so TensorBoard's HParams tab compares the trials.

Layout of an export (``hpo tensorboard STUDY``, default ``runs/tensorboard/STUDY`` with ``/`` written ``__``)::

    runs/tensorboard/PLAN__STAGE/
      .hpo-tensorboard                 marks a folder this module wrote (a re-export replaces its event files)
      events.out.tfevents.*            the hparams experiment: every param and final metric of the study
      trial-0-current/events...        one run per trial that trained (``trial-N[-baseline]``)
      trial-1/events...

A trial's run holds every stored curve (user attr ``curves``) at its epoch: ``train_X`` as ``train/X``,
``val_X`` as ``val/X``, the train-vs-val ones as ``gap/<name>``, ``lr`` as ``optim/lr``, ``epoch_seconds`` as
``time/epoch_seconds`` (wall times are the trial's start plus its epochs' seconds, so TensorBoard's relative
axis is the training time); the final metrics (user attr ``metrics``, those of the best epoch) as
``hparams/<metric>`` at the best epoch; and the hparams session: the trial's params, ``trial.state``,
``trial.stop_reason`` and ``trial.baseline``, with the status success for COMPLETE, failure for FAIL, running,
and unknown for PRUNED (TensorBoard has no status for it). Trials that never trained (constraint, invalid
config) and warm-start copies of earlier stages' trials have no curves and no run.

Only the event writer of ``tensorboardX`` is needed (numpy and protobuf; no TensorFlow, no TensorBoard):
it is imported when an export runs; without it the export stops with the command that installs it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.store.record import BASELINE, BEST_EPOCH, CURVES, METRICS, STOP_REASON, WARM_START_OF

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fusion-hpo[tensorboard]'"
MARK = ".hpo-tensorboard"  # in the root of an export: the folder may be replaced by the next export
EVENTS_GLOB = "events.out.tfevents.*"
DEFAULT_ROOT = Path("runs/tensorboard")
HPARAMS_GROUP = "hparams"  # the scalar tags of the final metrics: hparams/<metric>

_UNSAFE = re.compile(r"[^A-Za-z0-9._~=+,@-]")


def safe_name(name: str) -> str:
    """``name`` as one folder name: ``/`` (a stage study ``PLAN/STAGE``) as ``__``, other characters that are
    not letters, digits or ``._~=+,@-`` as ``_``; never ``.``, ``..`` or empty."""
    text = _UNSAFE.sub("_", str(name).replace("/", "__").replace("\\", "__"))
    return text if text.strip(".") else text.replace(".", "_") or "_"


def default_out(study_name: str) -> Path:
    """Where ``hpo tensorboard STUDY`` writes without ``--out``: ``runs/tensorboard/<safe study name>``."""
    return DEFAULT_ROOT / safe_name(study_name)


def run_name(trial: "FrozenTrial") -> str:
    """``trial-N``, or ``trial-N-<baseline>`` for a named run (a baseline, an ablation run)."""
    baseline = trial.user_attrs.get(BASELINE)
    return f"trial-{trial.number}" + (f"-{safe_name(baseline)}" if baseline else "")


def _split_of(name: str) -> str | None:
    """``train`` or ``val`` for a metric of one split (``val_mae``, ``train_loss``); ``gap`` for one that compares
    the two (``train_val_gap``, ``val_train_ratio``); None otherwise."""
    for split, other in (("train", "val"), ("val", "train")):
        if name.startswith(split + "_"):
            return "gap" if name[len(split) + 1:].startswith(other + "_") else split
    return None


def curve_tag(name: str) -> str:
    """The scalar tag of a stored curve: ``train_mae`` -> ``train/mae``, ``val_mae_h3`` -> ``val/mae_h3``, the
    train-vs-val ones under ``gap/`` (``gap/train_val_gap``), ``lr`` -> ``optim/lr``, ``epoch_seconds`` ->
    ``time/epoch_seconds``; any other name as it is."""
    split = _split_of(name)
    if split == "gap":
        return f"gap/{name}"
    if split:
        return f"{split}/{name[len(split) + 1:]}"
    return {"lr": "optim/lr", "epoch_seconds": "time/epoch_seconds"}.get(name, name)


@dataclass
class Export:
    """What an export wrote: the folder, its runs (trial number -> run folder name), the scalar points per
    run, and the trials left out, counted by why."""

    out: Path
    runs: dict[int, str] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    @property
    def n_points(self) -> int:
        return sum(self.points.values())


def _tensorboardx():
    try:
        import tensorboardX  # noqa: F401
        from tensorboardX.writer import FileWriter
    except ImportError as e:
        raise UsageError(f"hpo tensorboard needs the tensorboardX event writer ({e}): {INSTALL_HINT}") from None
    return FileWriter


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _has_curves(trial: "FrozenTrial") -> bool:
    curves = trial.user_attrs.get(CURVES)
    return isinstance(curves, dict) and bool(curves.get("epoch"))


def check_out(out: Path) -> None:
    """``out`` must be absent, an empty folder or an earlier export (with :data:`MARK`): an export replaces
    only its own event files, never a folder of anything else."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: must be a folder (absent, empty or an earlier `hpo tensorboard` export), "
                         f"but got the file {str(out)!r}")
    if out.is_dir() and not (out / MARK).exists():
        held = sorted(p.name for p in out.iterdir())
        if held:
            raise UsageError(f"--out: must be absent, empty or an earlier `hpo tensorboard` export (with {MARK}), "
                             f"but got {str(out)!r} holding {len(held)} entries ({', '.join(held[:3])}"
                             f"{', …' if len(held) > 3 else ''})")


def _clear(out: Path) -> int:
    """Remove the event files of an earlier export in ``out`` (its root and ``trial-*`` folders); empty
    ``trial-*`` folders go too. Returns how many files went."""
    removed = 0
    for path in [*out.glob(EVENTS_GLOB), *out.glob(f"trial-*/{EVENTS_GLOB}")]:
        path.unlink()
        removed += 1
    for folder in out.glob("trial-*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


# -- the hparams plugin ----------------------------------------------------------------------------------
def _hparam_value(v: Any) -> bool | float | str:
    """A param value as an hparam: bools and finite numbers as they are, anything else as its text."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return str(v)


def _status(trial: "FrozenTrial") -> str:
    """The session status: TensorBoard's are unknown, success, failure and running; a PRUNED trial is unknown
    (its ``trial.state`` hparam says PRUNED), so the status filter of the HParams tab can hide it."""
    return {"COMPLETE": "STATUS_SUCCESS", "FAIL": "STATUS_FAILURE", "RUNNING": "STATUS_RUNNING"}.get(
        trial.state.name, "STATUS_UNKNOWN")


def trial_hparams(trial: "FrozenTrial") -> dict[str, bool | float | str]:
    """The hparams of a trial's run: its params, then its state, stop reason and baseline name."""
    hp = {k: _hparam_value(v) for k, v in trial.params.items()}
    hp["trial.state"] = trial.state.name
    hp["trial.stop_reason"] = str(trial.user_attrs.get(STOP_REASON) or "")
    hp["trial.baseline"] = str(trial.user_attrs.get(BASELINE) or "")
    return hp


def _plugin_summary(tag: str, **data):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    content = HParamsPluginData(version=0, **data).SerializeToString()
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def _experiment(ostudy: "optuna.Study", trials: list["FrozenTrial"], metric_names: list[str]):
    """The experiment summary (every hparam with its type and domain, from the params' distribution where
    every trial has the same one; every final metric) and each hparam's kind (``string`` or ``typed``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from tensorboardX.proto.api_pb2 import DataType, DatasetType, Experiment, HParamInfo, Interval, MetricInfo, MetricName

    values: dict[str, list] = {}
    dists: dict[str, set] = {}
    for t in trials:
        for k, v in trial_hparams(t).items():
            values.setdefault(k, []).append(v)
        for k, d in t.distributions.items():
            dists.setdefault(k, set()).add(repr(d))
    dist_of = {k: d for t in trials for k, d in t.distributions.items()}
    infos, kinds = [], {}
    for name, vals in values.items():
        kinds[name] = "typed"
        info = HParamInfo(name=name, display_name=name)
        d = dist_of.get(name) if len(dists.get(name, ())) == 1 else None  # the one distribution every trial used
        choices = [_hparam_value(c) for c in d.choices] if isinstance(d, CategoricalDistribution) else None
        if all(isinstance(v, bool) for v in vals) and all(isinstance(c, bool) for c in choices or [True]):
            info.type = DataType.Value("DATA_TYPE_BOOL")
            info.domain_discrete.extend([False, True])
        elif all(isinstance(v, float) for v in vals) and all(isinstance(c, float) for c in choices or [0.0]):
            info.type = DataType.Value("DATA_TYPE_FLOAT64")
            if isinstance(d, (FloatDistribution, IntDistribution)):
                info.domain_interval.CopyFrom(Interval(min_value=float(d.low), max_value=float(d.high)))
            elif choices:
                info.domain_discrete.extend(sorted(set(choices)))
        else:  # text, or a categorical of mixed kinds: every value as its text
            kinds[name] = "string"
            info.type = DataType.Value("DATA_TYPE_STRING")
            info.domain_discrete.extend(sorted({str(v) for v in [*vals, *(choices or [])]}))
        infos.append(info)
    metrics = [MetricInfo(name=MetricName(group="", tag=f"{HPARAMS_GROUP}/{m}"), display_name=m,
                          dataset_type=DatasetType.Value({"val": "DATASET_VALIDATION", "train": "DATASET_TRAINING"}
                                                         .get(_split_of(m) or "", "DATASET_UNKNOWN")))
               for m in metric_names]
    created = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    exp = Experiment(name=ostudy.study_name, description=f"fusion-hpo study {ostudy.study_name}",
                     hparam_infos=infos, metric_infos=metrics,
                     time_created_secs=_timestamp(created) or 0.0)
    return _plugin_summary("_hparams_/experiment", experiment=exp), kinds


def _session(trial: "FrozenTrial", run: str, kinds: dict[str, str]):
    """The session start and end summaries of a trial's run (hparams as the experiment typed them)."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import SessionEndInfo, SessionStartInfo

    start = SessionStartInfo(group_name=run, start_time_secs=_timestamp(trial.datetime_start) or 0.0)
    for k, v in trial_hparams(trial).items():
        if kinds[k] == "string":
            start.hparams[k].string_value = str(v)
        elif isinstance(v, bool):
            start.hparams[k].bool_value = v
        else:
            start.hparams[k].number_value = v
    end = SessionEndInfo(status=Status.Value(_status(trial)), end_time_secs=_timestamp(trial.datetime_complete) or 0.0)
    return (_plugin_summary("_hparams_/session_start_info", session_start_info=start),
            _plugin_summary("_hparams_/session_end_info", session_end_info=end))


def _timestamp(dt) -> float | None:
    """Seconds since the epoch of a trial's datetime (Optuna's are naive: local time)."""
    return None if dt is None else dt.timestamp()


# -- the export ------------------------------------------------------------------------------------------
def export_tensorboard(ostudy: "optuna.Study", out: str | Path) -> Export:
    """Write ``ostudy``'s curves to ``out`` as TensorBoard event files (see the module's doc). Refuses (nothing
    written) an ``out`` that holds anything but an earlier export, and a study without a trained trial."""
    from tensorboardX.summary import scalar

    from hpo.store.stored import StoredStudy

    file_writer = _tensorboardx()
    out = Path(out)
    check_out(out)
    stored = StoredStudy(ostudy)
    result = Export(out)
    chosen: list[FrozenTrial] = []
    for t in stored.trials():
        if WARM_START_OF in t.user_attrs:
            result.skipped["warm-start copies"] += 1
        elif not _has_curves(t):
            result.skipped[str(t.user_attrs.get(STOP_REASON) or t.state.name.lower())] += 1
        else:
            chosen.append(t)
    if not chosen:
        raise UsageError(f"study {ostudy.study_name!r}: must have a trial with learning curves to export, but got none "
                         f"({sum(result.skipped.values())} trials without curves)")
    metric_names = sorted({m for t in chosen for m, v in (t.user_attrs.get(METRICS) or {}).items() if _finite(v) is not None})

    out.mkdir(parents=True, exist_ok=True)
    removed = _clear(out) if (out / MARK).exists() else 0
    if removed:
        logger.info("%s: replaced %d event files of an earlier export", out, removed)
    (out / MARK).write_text(f"TensorBoard export of fusion-hpo study {ostudy.study_name!r}; "
                            "`hpo tensorboard` replaces the event files in this folder\n")

    exp, kinds = _experiment(ostudy, chosen, metric_names)
    root = file_writer(str(out))
    try:
        root.add_summary(exp, walltime=_timestamp(min((t.datetime_start for t in chosen if t.datetime_start), default=None)))
    finally:
        root.close()

    for t in chosen:
        run = run_name(t)
        curves = t.user_attrs[CURVES]
        epochs = curves["epoch"]
        start = _timestamp(t.datetime_start)
        seconds = curves.get("epoch_seconds") or []
        walltimes, clock = [], start
        for i in range(len(epochs)):
            if clock is not None:
                clock += _finite(seconds[i] if i < len(seconds) else None) or 0.0
            walltimes.append(clock)
        writer = file_writer(str(out / run))
        n = 0
        try:
            ssi, sei = _session(t, run, kinds)
            writer.add_summary(ssi, walltime=start)
            for name, series in curves.items():
                if name == "epoch" or not isinstance(series, list):
                    continue
                tag = curve_tag(name)
                for i, (epoch, v) in enumerate(zip(epochs, series)):
                    v = _finite(v)
                    if v is None or _finite(epoch) is None:
                        continue  # not evaluated at that epoch, or not finite
                    writer.add_summary(scalar(tag, v), global_step=int(epoch), walltime=walltimes[i])
                    n += 1
            best_epoch = t.user_attrs.get(BEST_EPOCH)
            step = int(best_epoch) if _finite(best_epoch) is not None else int(epochs[-1])
            for m, v in (t.user_attrs.get(METRICS) or {}).items():
                if _finite(v) is not None:
                    writer.add_summary(scalar(f"{HPARAMS_GROUP}/{m}", _finite(v)), global_step=step, walltime=walltimes[-1])
                    n += 1
            writer.add_summary(sei, walltime=_timestamp(t.datetime_complete) or walltimes[-1])
        finally:
            writer.close()
        result.runs[t.number] = run
        result.points[run] = n
    logger.info("%s: %d runs, %d scalar points (%s left out)", out, len(result.runs), result.n_points,
                ", ".join(f"{n} {why}" for why, n in result.skipped.items()) or "none")
    return result
