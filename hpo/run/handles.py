"""What a trial body writes to: a trial handle, whichever backend runs the trial.

:class:`TrialHandle` is the contract (user attrs, per-epoch reports, artifact upload, a final flush);
:class:`OptunaHandle` is the live ``optuna.Trial`` of the local worker loop; the Ray backend has its own
(``hpo.run.backends.ray.RayHandle``). :class:`DeferredValues` keeps intermediate values in memory and
writes them in one call, for handles whose pruning needs no per-epoch store write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpo.search.prune_oracle import PruneOracle

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna


class TrialHandle:
    """What a trial body needs from "its trial", whichever backend runs it.

    Locally it is the live ``optuna.Trial`` (:class:`OptunaHandle`); under Ray Tune the trial lives in
    the driver, and the worker writes to the store by trial id and reports to Tune
    (``hpo.run.backends.ray.RayHandle``).
    """

    number: int

    def set_user_attr(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def set_user_attrs(self, attrs: dict) -> None:
        """Several at once (one transaction where the storage allows)."""
        for k, v in attrs.items():
            self.set_user_attr(k, v)

    def report(self, value: float, epoch: int, metrics: dict) -> bool:
        """Report the monitored value of an epoch; return True if the trial should be pruned."""
        raise NotImplementedError

    def upload(self, artifacts: Any, path: str) -> str:
        """Store a file as an artifact of this trial; return its id."""
        raise NotImplementedError

    def set_final_user_attrs(self, attrs: dict) -> None:
        """The trial body's last attrs: written by :meth:`flush`, with the last intermediate values in one
        write where the handle can (default: at once)."""
        self.set_user_attrs(attrs)

    def flush(self) -> None:
        """Write anything the handle deferred (called when the trial body ends)."""


class DeferredValues:
    """A trial's intermediate values kept in memory and written in one call (``write``) when asked to
    :meth:`flush` — the handles flush when :attr:`due` (every ``every`` seconds) and when the trial ends.
    ``write(values)``, or ``write(values, user_attrs)`` for a flush given user attrs to write along."""

    def __init__(self, write: Callable[..., None], every: float) -> None:
        self._write, self.every = write, every
        self._pending: dict[int, float] = {}
        self._flushed_at = time.monotonic()

    def add(self, epoch: int, value: float) -> None:
        self._pending[epoch] = value

    @property
    def due(self) -> bool:
        return time.monotonic() - self._flushed_at >= self.every

    def flush(self, user_attrs: dict | None = None) -> None:
        self._flushed_at = time.monotonic()
        if self._pending or user_attrs:
            pending, self._pending = self._pending, {}
            self._write(pending, user_attrs) if user_attrs else self._write(pending)


class OptunaHandle(TrialHandle):
    """The live Optuna trial. Where pruning decisions come from memory (:class:`PruneOracle`, or no
    pruner), intermediate values are written in batches every ``flush_seconds`` and at the end of
    the trial (:meth:`flush`) instead of one transaction per epoch.

    A multi-objective trial (``primary``: its primary objective's direction) cannot ``trial.report``: its
    intermediate values (the primary's) are always written in batches, straight to the store, and its pruning
    is the oracle's, in that direction (the snapshot-safe pruners; the spec refuses the others for a
    multi-objective study)."""

    flush_seconds = 10.0

    def __init__(self, trial: "optuna.Trial", report: bool = True, prune: bool = False,
                 primary: str | None = None) -> None:
        from hpo.store.rdb import intermediate_writer, trial_id_of

        self.trial, self.number, self.trial_id = trial, trial.number, trial_id_of(trial)
        multi = primary is not None
        self._report, self._prune = report, prune
        self._values: dict[int, float] = {}
        self._oracle = PruneOracle.for_pruner(trial.study, direction=primary) if prune else None
        if multi and prune and self._oracle is None:
            logger.warning("trial #%d: pruner %s cannot prune a multi-objective study; the trial is not pruned",
                           self.number, type(trial.study.pruner).__name__)
            self._prune = False
        write = intermediate_writer(trial) or (_one_by_one(trial.storage, self.trial_id) if multi else None)
        self._deferred = (DeferredValues(write, self.flush_seconds)
                          if write is not None and (multi or self._oracle is not None or not self._prune) else None)
        self._final: dict = {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)

    def set_user_attrs(self, attrs: dict) -> None:
        from hpo.store.rdb import write_user_attrs

        if not write_user_attrs(self.trial, attrs):
            super().set_user_attrs(attrs)

    def report(self, value: float, epoch: int, metrics: dict) -> bool:
        if not self._report:
            return False
        self._values[epoch] = value
        if self._deferred is not None:
            self._deferred.add(epoch, value)
            if self._deferred.due:
                self._deferred.flush()
        else:
            self.trial.report(value, epoch)
        if not self._prune:
            return False
        if self._oracle is not None:
            return self._oracle.should_prune(self.trial, self._values, self.trial_id)
        return self.trial.should_prune()

    def set_final_user_attrs(self, attrs: dict) -> None:
        self._final.update(attrs)

    def flush(self) -> None:
        """Write the deferred intermediate values and the final user attrs, in one transaction where the storage
        allows (before the trial is told its state)."""
        final, self._final = self._final, {}
        if self._deferred is not None:
            self._deferred.flush(final)
        elif final:
            self.set_user_attrs(final)

    def upload(self, artifacts: Any, path: str) -> str:
        """Like ``optuna.artifacts.upload_artifact``, but the file is written first and recorded with the
        trial only when whole: a failed write leaves neither a partial file nor a dangling record."""
        from hpo.store.checkpoint import upload_whole

        return upload_whole(artifacts, path, self.trial.storage, self.trial_id)


def _one_by_one(storage: Any, trial_id: int) -> Callable[..., None]:
    """Write intermediate values one step at a time, then user attrs one key at a time, through the storage's
    public API (a storage without batched writes); unlike ``trial.report`` it also takes those of a
    multi-objective trial."""

    def write(values: dict[int, float], user_attrs: dict | None = None) -> None:
        for step, value in values.items():
            storage.set_trial_intermediate_value(trial_id, step, value)
        for key, value in (user_attrs or {}).items():
            storage.set_trial_user_attr(trial_id, key, value)

    return write
