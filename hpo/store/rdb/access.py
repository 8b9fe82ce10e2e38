"""Small public functions over Optuna's private storage API (and its tell without read-back), for the rest of ``hpo``.

The run loop, the trial handles, the study's enqueues and the readers call these instead of
``ostudy._storage``, ``trial._trial_id`` or ``getattr(storage, "_backend", storage)``: what the resilient
storage can do beyond Optuna's API (batched writes, light reads) is found here, once, and any other storage
falls back to Optuna's public path. Also the stale-trial check including trials that never beat.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import warnings
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.trial import TrialState

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)


def backend_of(storage: Any) -> Any:
    """The storage behind Optuna's cache layer (``_CachedStorage``), or ``storage`` itself."""
    return getattr(storage, "_backend", storage)


def storage_of(ostudy: "optuna.Study") -> Any:
    return ostudy._storage


def study_id_of(ostudy: "optuna.Study") -> int:
    return ostudy._study_id


def trial_id_of(trial: Any) -> int:
    """The storage id of a live ``optuna.Trial`` or a ``FrozenTrial``."""
    return trial._trial_id


def stored_trial(ostudy: "optuna.Study", trial: Any) -> "FrozenTrial":
    """The trial as the store has it now (a copy)."""
    return copy.deepcopy(ostudy._storage.get_trial(trial._trial_id))


def ask(ostudy: "optuna.Study", *, queued: bool = True) -> "optuna.Trial":
    """``ostudy.ask()``. With ``queued=False``, for a caller whose read of the study a moment before found no
    queued (WAITING) trial: a new trial without Optuna's lookup of the queued ones, which is a read of the
    study's unfinished trials (one read fewer per trial). Otherwise as ``Study.ask`` (5.0: reset the trial
    cache, pop a queued trial or create one, then ``Trial(study, id)``)."""
    if queued:
        return ostudy.ask()
    ostudy._thread_local.cached_all_trials = None
    return optuna.Trial(ostudy, ostudy._storage.create_new_trial(ostudy._study_id))


def tell(ostudy: "optuna.Study", trial: "optuna.Trial", values: Any, state: "TrialState | None") -> "TrialState":
    """``ostudy.tell`` without its read-back of the finished trial (``Study.optimize`` calls this too): one read
    fewer per trial where the caller reads the study next anyway. The state told; raises as ``tell`` raises."""
    from optuna.study._tell import _tell_with_warning

    return _tell_with_warning(study=ostudy, trial=trial, value_or_values=values, state=state)[0]


def has_heartbeat(ostudy: "optuna.Study") -> bool:
    get = getattr(ostudy._storage, "get_heartbeat_interval", None)
    return bool(get and get())


def record_heartbeat(ostudy: "optuna.Study", trial: Any) -> None:
    ostudy._storage.record_heartbeat(trial._trial_id)


def heartbeat_thread(ostudy: "optuna.Study", trial: Any):
    """A context manager beating for ``trial`` while it runs, every heartbeat interval. Its first beat: none
    where the storage wrote one with the trial's start (``beats_at_start``: in the creating or claiming
    transaction), else on entry, before the body writes anything (Optuna's thread beats from a thread of its
    own, which may wait on a busy store). A no-op context on a storage without heartbeats."""
    every = has_heartbeat(ostudy) and ostudy._storage.get_heartbeat_interval()
    if not every:
        return contextlib.nullcontext()
    beaten = bool(getattr(backend_of(ostudy._storage), "beats_at_start", False))
    return _Heartbeat(ostudy._storage, trial._trial_id, float(every), number=trial.number, first=not beaten)


class _Heartbeat:
    """Beats for a trial on entry (``first``), then every ``every`` seconds until exit. A failed beat is logged
    and the next one tries again (the worker's own next write says why the store is away)."""

    def __init__(self, storage: Any, trial_id: int, every: float, number: int | None = None, first: bool = True) -> None:
        import threading

        self.storage, self.trial_id, self.every, self.number, self.first = storage, trial_id, every, number, first
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception as e:
            logger.debug("heartbeat of trial #%s failed: %s", self.number, e)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self._beat()

    def __enter__(self) -> "_Heartbeat":
        if self.first:
            self._beat()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@contextlib.contextmanager
def batched_params(trial: "optuna.Trial"):
    """A context within which the trial's suggested parameters are written in one transaction. It yields a
    dict: user attrs put in it before the block ends are written in that transaction too. On a storage that
    cannot batch, the parameters are written as suggested and the attrs one by one at the end."""
    backend = backend_of(trial.storage)
    attrs: dict = {}
    if hasattr(backend, "batched_params"):
        with backend.batched_params(trial._trial_id, attrs):
            yield attrs
        return
    yield attrs
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def write_user_attrs(trial: "optuna.Trial", attrs: dict) -> bool:
    """Write several user attrs of a running trial in one transaction; False (nothing written) where the
    storage cannot."""
    backend = backend_of(trial.storage)
    if not hasattr(backend, "set_trial_user_attrs"):
        return False
    backend.set_trial_user_attrs(trial._trial_id, attrs)
    return True


def intermediate_writer(trial: "optuna.Trial") -> Callable[[dict[int, float], dict], None] | None:
    """A function writing several intermediate values of the trial, and user attrs (the second argument), in
    one transaction; None where the storage cannot."""
    backend = backend_of(trial.storage)
    if not hasattr(backend, "set_trial_intermediate_values"):
        return None
    trial_id = trial._trial_id
    return lambda values, user_attrs=None: backend.set_trial_intermediate_values(trial_id, values, user_attrs)


def light_reads(ostudy: "optuna.Study") -> bool:
    """Whether the study's storage reads trials without curves (``get_trials_light``)."""
    return hasattr(backend_of(ostudy._storage), "get_trials_light")


def trials_light(ostudy: "optuna.Study", states, without_user_attrs) -> list:
    return backend_of(ostudy._storage).get_trials_light(ostudy._study_id, states, without_user_attrs)


def fail_waiting(ostudy: "optuna.Study", trial: "FrozenTrial", attrs: dict) -> None:
    """Record a WAITING trial as FAIL with ``attrs`` (raises if a worker claimed it meanwhile)."""
    storage = ostudy._storage
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def record_artifact(storage: Any, trial_id: int, artifact_id: str, filename: str) -> None:
    """Record a written file as an artifact of the trial, as ``optuna.artifacts.upload_artifact`` does."""
    from dataclasses import asdict

    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta

    meta = ArtifactMeta(artifact_id=artifact_id, filename=filename, mimetype="application/octet-stream", encoding=None)
    storage.set_trial_system_attr(trial_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(asdict(meta)))


def study_lock(ostudy: "optuna.Study"):
    """A context manager holding the study's lock across processes (:mod:`~hpo.store.rdb.lock`); it yields
    whether the lock is held (False on a storage that cannot lock: the caller goes on without it)."""
    backend = backend_of(ostudy._storage)
    if not hasattr(backend, "study_lock"):
        return contextlib.nullcontext(False)
    return backend.study_lock(ostudy._study_id)


def fail_stale(ostudy: "optuna.Study") -> None:
    """Optuna's stale-trial check (fail and re-queue trials whose heartbeat stopped), then
    :func:`fail_heartbeatless`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(ostudy)
    fail_heartbeatless(ostudy)


def fail_heartbeatless(ostudy: "optuna.Study") -> None:
    """Fail (and re-queue, like a stale trial) RUNNING trials that never sent a heartbeat.

    A worker killed between ``ask`` and its first heartbeat leaves a RUNNING trial with no heartbeat
    row, which Optuna's stale check skips forever: the other workers would wait for it without end
    (the budget counts it as running). Such a trial started more than ``2 * grace_period + 10``
    seconds ago (by this host's clock, as Optuna records ``datetime_start``) is dead.
    """
    storage = ostudy._storage
    backend = backend_of(storage)
    if not hasattr(backend, "heartbeatless_trial_ids") or not backend.get_heartbeat_interval():
        return
    grace = backend.grace_period or 2 * backend.get_heartbeat_interval()
    callback = backend.get_heartbeat_stale_trial_callback()
    for trial_id in backend.heartbeatless_trial_ids(ostudy._study_id):
        started = backend.get_trial(trial_id).datetime_start
        if started is None:
            continue
        now = datetime.datetime.now(started.tzinfo) if started.tzinfo else datetime.datetime.now()
        if (now - started).total_seconds() < 2 * grace + 10:
            continue
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        logger.warning("trial #%d never sent a heartbeat since it started at %s (its worker died before its first one): "
                       "marked FAIL%s", frozen.number, frozen.datetime_start, " and re-queued" if callback else "")
        if callback is not None:
            callback(ostudy, frozen)
