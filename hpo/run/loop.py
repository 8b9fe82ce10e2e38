"""The worker loop, written out: ``trial = ask(); outcome = body(trial); tell(trial, outcome)`` until the
budget or the deadline.

Budget: ``n_trials`` counts trials that trained (COMPLETE, PRUNED by the pruner or by divergence, and
FAIL for crashes), over the whole life of the study, so running ``hpo run`` again after an
interruption finishes the same budget instead of starting a new one. Trials rejected before training
(constraints, invalid configs) do not count, nor do trials that failed because their worker died or
was interrupted: those are re-queued with their parameters and run again (:mod:`hpo.run.budget`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Sequence

from hpo.errors import HpoError
from hpo.run.budget import BudgetCounter
from hpo.run.options import RunOptions
from hpo.run.targets import STOPPED_AT_TARGET, record_met, target_reached
from hpo.store import record as R
from hpo.store.record import NOT_TRAINED, StopReason

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hpo.run.trial import TrialObjective
    from hpo.spec import Study

logger = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 1.0
CLAIMED_PLACES = 32  # the last places of a budget are taken under the study's lock (:func:`_claim`)
TrialCallback = Callable[["optuna.Study", "FrozenTrial"], None]


class StudyAborted(HpoError):
    """The study stopped because too many trials failed in a row."""


def run_worker(study: "Study", storage_url: str, study_name: str, *, n_trials: int | None, timeout: float | None,
               worker: int | None = None, opts: RunOptions | None = None, on_trial: TrialCallback | None = None,
               stats: dict | None = None) -> str:
    """Run trials of the study in this process until the budget or the deadline; return why it
    stopped. ``stats``, if given, receives the data cache's statistics under ``"cache"``.

    ``worker`` numbers this process's sampler seed (``seed + worker``: ``hpo run`` with one worker
    passes 0, reproducible); None (every ``hpo worker`` and spawned worker) derives a seed of its own
    from the study's seed and this process's identity, so that no two workers propose the same
    trials. Either way it is recorded with each trial (user attr ``sampler_seed``).

    Each trial is :func:`run_trial` (ask → body → tell, heartbeat included), so a trial that another
    worker failed meanwhile (its heartbeat went stale during a store outage) is dropped with one line
    and the worker serves the next one.
    """
    import optuna

    from hpo.data.cache import DataCache
    from hpo.run.study import create_or_load
    from hpo.run.trial import TrialObjective
    from hpo.search import sampler_seed
    from hpo.store.rdb import fail_stale, has_heartbeat
    from hpo.store.storage import artifact_store
    from hpo.train.interrupt import check as check_interrupt

    opts = opts or RunOptions()
    seed = sampler_seed(study, worker)
    ostudy = create_or_load(study, storage_url, study_name, worker=worker, seed=seed, resume_changed=opts.resume_changed)
    task = study.make_task(DataCache(opts.cache_dir))
    if stats is not None:
        stats["cache"] = task.cache.stats
    store = artifact_store(study.artifacts_dir(opts.artifacts)) if opts.checkpoints else None
    objective = TrialObjective(study, task, artifacts=store, device=opts.device, n_trials=n_trials)
    objective.worker_attrs = {R.SAMPLER_SEED: seed, **({R.WORKER_INDEX: worker} if worker is not None else {})}
    logger.debug("worker %s: sampler seed %d", worker if worker is not None else "(derived)", seed)
    deadline = time.monotonic() + timeout if timeout else None
    max_failures = study.spec.budget.max_consecutive_failures
    failures = 0
    heartbeat = has_heartbeat(ostudy)
    stale_check = StaleCheck(ostudy) if heartbeat else None
    levels, stop_at = study.targets, study.stop_at_target
    count_budget = BudgetCounter()  # before every trial, in time proportional to what changed, not to the study
    ran: int | None = None  # the trial this worker finished last turn: taken from the next read, which has it stored
    while True:
        trials = ostudy.get_trials(deepcopy=False)
        if ran is not None:
            failures = _after_trial(ostudy, _numbered(trials, ran), on_trial, levels, failures, max_failures)
            ran = None
        check_interrupt()
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        if _target_reached(ostudy, levels, stop_at, trials):
            return STOPPED_AT_TARGET
        budget = count_budget(trials)
        if n_trials is not None and budget.used >= n_trials:
            _drop_late_retries(ostudy, trials)
            return "budget"
        if n_trials is not None and budget.used + budget.running >= n_trials and not budget.waiting:
            if not heartbeat:
                return "budget"  # without heartbeats a dead worker's trial cannot be detected: leave it
            # the rest of the budget is running in other workers: wait until it finishes, or until a
            # dead worker's trial goes stale and is re-queued (then run it here)
            fail_stale(ostudy)
            time.sleep(WAIT_POLL_SECONDS)
            continue
        sampler = ostudy.sampler
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(ostudy) and not budget.waiting:
            return "grid exhausted"
        if n_trials is not None:
            # a race past the budget needs more simultaneous starters than free places: with room for
            # more than twice every worker seen lately (running or between trials), and more than
            # CLAIMED_PLACES (workers starting together have not been seen yet), skip the check
            free = n_trials - budget.used - budget.running
            objective.check_surplus = free <= max(2 * (_recent_workers(trials) + 1), CLAIMED_PLACES)
        # near the end of the budget, count it again and ask under the study's lock: two workers that counted
        # at the same moment (a server restart lets them go together) do not both take the last place
        claim = ((lambda: _claim(ostudy, n_trials, count_budget, objective))
                 if n_trials is not None and objective.check_surplus else None)
        ran = run_trial(ostudy, objective, heartbeat=heartbeat, stale_check=stale_check, claim=claim,  # None: dropped
                        queued=bool(budget.waiting))


@contextlib.contextmanager
def _claim(ostudy: "optuna.Study", n_trials: int, count_budget: BudgetCounter,
           objective: "TrialObjective | None" = None) -> Iterator[tuple[bool, bool]]:
    """Hold the study's lock (:func:`hpo.store.rdb.study_lock`) and yield whether the budget, read again
    under it, still has a place (or a queued trial) for this worker's ``ask``, made within the block, and
    whether that read found a queued trial (``(room, queued)``: see :func:`run_trial`). A new
    trial asked under the held lock is within the budget: ``objective``'s surplus check is then skipped (one
    read of the study fewer); it stays for a queued trial and where the lock could not be had."""
    from hpo.store import rdb

    with rdb.study_lock(ostudy) as held:
        budget = count_budget(ostudy.get_trials(deepcopy=False))
        placed = budget.used + budget.running < n_trials
        if objective is not None:
            objective.check_surplus = not (held and placed)
        yield placed or bool(budget.waiting), bool(budget.waiting)


def _after_trial(ostudy: "optuna.Study", done: "FrozenTrial", on_trial: TrialCallback | None, levels, failures: int,
                 max_failures: int) -> int:
    """What the worker does with a trial it finished (``done``, as stored): the callback, the targets it met,
    the count of failures in a row (returned; too many abort the study)."""
    if on_trial is not None:
        on_trial(ostudy, done)
    if levels:  # a trial that meets stop_at_target ends the study at the next turn (named runs first)
        record_met(ostudy, levels, done)
    if done.state.name != "FAIL" or done.user_attrs.get(R.STOP_REASON) in NOT_TRAINED:
        return 0
    failures += 1
    if failures >= max_failures:
        raise StudyAborted(
            f"{failures} trials failed in a row (last: {done.user_attrs.get(R.STOP_DETAIL, '?')}); "
            "stopping the study — fix the cause and run it again to resume"
        )
    return failures


def _numbered(trials: Sequence["FrozenTrial"], number: int) -> "FrozenTrial":
    """The trial numbered ``number`` in a study's trials (sorted by number, 0..n-1: at its index)."""
    if number < len(trials) and trials[number].number == number:
        return trials[number]
    return next(t for t in trials if t.number == number)


def _target_reached(ostudy: "optuna.Study", levels, stop_at: str | None, trials: Sequence["FrozenTrial"]) -> bool:
    """Whether a trial in the store (any worker's) already meets ``stop_at_target``: the study is over,
    this worker starts no trial (the level is recorded in ``targets_met`` if its finder did not). The named
    runs (baselines, ablation runs) still queued run first: they are the yardstick the result is read against,
    so the target ends the search, not the plan's own runs."""
    first = target_reached(levels, stop_at, trials)
    if first is None:
        return False
    record_met(ostudy, levels, first)
    logger.info("study %s: target %s was met by trial #%d (stop_at_target): no new trial starts",
                ostudy.study_name, stop_at, first.number)
    return True


def _drop_late_retries(ostudy: "optuna.Study", trials: Sequence["FrozenTrial"]) -> None:
    """The budget is used up: a re-queued copy of a dead worker's trial that is still WAITING retries a trial
    that started past the budget (it was running, uncounted, when the others filled it) and will not run.
    Record it as FAIL ``surplus`` (not trained, not counted) rather than leave it waiting in a finished study;
    every worker that stops does the same, so they agree whichever stops last."""
    from optuna.trial import TrialState

    from hpo.store.rdb import fail_waiting

    for t in trials:
        if t.state == TrialState.WAITING and R.FAILED_TRIAL in t.system_attrs:
            detail = (f"surplus: the retry of trial #{t.system_attrs[R.FAILED_TRIAL]} (its worker died) was queued after "
                      "the budget was used up; it did not train and does not count")
            try:
                fail_waiting(ostudy, t, {R.STOP_REASON: StopReason.SURPLUS.value, R.STOP_DETAIL: detail})
            except Exception as e:  # a worker claimed it meanwhile: it runs (and its own surplus check decides)
                logger.debug("late retry #%d not dropped: %s", t.number, e)


class StaleCheck:
    """The stale-trial check (:func:`hpo.store.rdb.fail_stale`) of one worker, run at most once per heartbeat
    interval. ``optimize()`` runs it before every trial; a trial goes stale only ``grace_period`` (>= one
    interval) after its last beat, so checking more often finds nothing more, and with short trials it was
    a quarter of the store's queries per trial. A dead worker's trial is found at most one interval later."""

    def __init__(self, ostudy: "optuna.Study", clock: Callable[[], float] = time.monotonic) -> None:
        from hpo.store import rdb

        self.ostudy, self.clock = ostudy, clock
        self.every = float(rdb.storage_of(ostudy).get_heartbeat_interval() or 0)
        self.last: float | None = None

    def __call__(self) -> bool:
        """Run the check unless one ran less than an interval ago; whether it ran (it may have re-queued
        a trial)."""
        from hpo.store import rdb

        now = self.clock()
        if self.last is not None and now - self.last < self.every:
            return False
        self.last = now
        rdb.fail_stale(self.ostudy)
        return True


def run_trial(ostudy: "optuna.Study", objective: Callable[["optuna.Trial"], Any], *, heartbeat: bool = True,
              stale_check: Callable[[], bool | None] | None = None,
              claim: Callable[[], ContextManager[tuple[bool, bool]]] | None = None, queued: bool = True) -> int | None:
    """One trial as ``optuna.Study.optimize`` runs it (``_run_trial``): fail stale trials (``stale_check``,
    default: every time), ask, run the body under a heartbeat thread, tell the state and values. Return the
    finished trial's number (the trial is not read back: the worker loop's next read has it), or None when the
    trial was finished by someone else while the body ran (another worker's stale-heartbeat check failed it,
    e.g. during a store outage: the result is dropped and its retry runs elsewhere). ``claim``: a context
    the ask is made in, yielding whether to ask at all and whether its read of the study, made after the stale
    check, found a queued trial (:func:`_claim`); None, no trial, when it says no. ``queued=False``: the
    caller's read of the study, just before, found no queued (WAITING) trial, so the ask skips Optuna's lookup
    of them (one read of the study fewer per trial; :func:`hpo.store.rdb.ask`), unless the stale check ran this
    turn (it may have re-queued a dead worker's trial). A trial queued by another process in between is found
    at the next turn, as it is when it comes just after Optuna's own lookup.
    A KeyboardInterrupt (Ctrl-C, SIGTERM) records the trial as interrupted, FAIL, and propagates."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    from hpo.errors import StoreError, TrialFailed
    from hpo.store import rdb

    if heartbeat:
        if stale_check is None:
            rdb.fail_stale(ostudy)
            queued = True
        elif stale_check():
            queued = True  # the check ran this turn: it may have re-queued a dead worker's trial
    with warnings.catch_warnings():  # the heartbeat thread is run here, as optimize() runs it
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        with (claim() if claim is not None else contextlib.nullcontext((True, queued))) as (room, queued):
            if not room:
                return None  # another worker took the last place meanwhile: the loop reads the study again
            trial = rdb.ask(ostudy, queued=queued)
    state: TrialState | None = None
    values: Any = None
    interrupted: BaseException | None = None
    with rdb.heartbeat_thread(ostudy, trial):  # its first beat came with the trial, or comes now; then every interval
        try:
            values = objective(trial)  # state None: Optuna's tell makes it COMPLETE, or FAIL for a NaN
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed as e:  # recorded by the body (stop_reason, stop_detail)
            state = TrialState.FAIL
            logger.info("trial #%d failed: %s", trial.number, str(e)[:300])
        except StoreError:  # the store refuses (full, read-only, gone past the reconnect timeout): stop the worker,
            raise  # one line, exit 2; the trial goes stale and is run again when the store is usable
        except Exception as e:
            state = TrialState.FAIL
            logger.warning("trial #%d failed: %s: %s", trial.number, type(e).__name__, str(e)[:300])
            logger.debug("trial #%d failed", trial.number, exc_info=True)
        except KeyboardInterrupt as e:
            state, interrupted = TrialState.FAIL, e
            _mark_interrupted(trial)
    try:
        rdb.tell(ostudy, trial, values, state)  # without a read-back: the loop's next read has the trial
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as e:
        stored = rdb.stored_trial(ostudy, trial)
        if stored.state == TrialState.RUNNING:
            raise
        logger.warning("trial #%d was marked %s by another worker while this one ran it (its heartbeat went stale); "
                       "this worker drops its result (%s) and serves the next trial",
                       trial.number, stored.state.name, (state.name if state is not None else "COMPLETE"))
        logger.debug("tell refused: %s", e)
        if interrupted is not None:
            raise interrupted
        return None
    if interrupted is not None:
        raise interrupted
    return trial.number


def _mark_interrupted(trial: "optuna.Trial") -> None:
    """An interrupt outside training (sampling, the surplus check) is recorded like one inside it."""
    try:
        if R.STOP_REASON not in trial.user_attrs:
            trial.set_user_attr(R.STOP_REASON, StopReason.INTERRUPTED.value)
            trial.set_user_attr(R.STOP_DETAIL, "interrupted before training; it is run again when the study resumes")
    except Exception as e:  # the store went away too: the trial goes stale and is retried
        logger.debug("could not record the interruption of trial #%d: %s", trial.number, e)


def _recent_workers(trials: Sequence["FrozenTrial"], last: int = 64) -> int:
    """How many distinct workers ran the study's recent trials (an estimate of how many serve it)."""
    return len({t.user_attrs.get(R.WORKER) for t in trials[-last:] if t.user_attrs.get(R.WORKER)})
