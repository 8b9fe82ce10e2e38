"""An Optuna RDBStorage that survives outages of its database and refuses broken stores at once; the only
code in ``hpo`` that touches Optuna's storage internals (version-guarded: :mod:`~hpo.store.rdb.guard`).

**Outages.** When the server restarts (or an SQLite lock outlasts the busy timeout) an operation fails
with a lost connection; it is retried with exponential backoff for up to ``reconnect_timeout`` seconds on a
fresh session (:func:`hpo.store.retry.retry`; ``pool_pre_ping`` replaces dead pooled connections), with one
log line per attempt. The constructor (which connects, creates the tables and stamps the schema version)
is retried the same way, so a worker started while the server is down waits for it. Every backend method
Optuna's cache layer (``_CachedStorage``), its heartbeat thread, ``fail_stale_trials`` and
``RetryHeartbeatStaleTrialCallback`` call is retried (``RETRIED``; tests/test_store_faults.py enumerates
those calls from Optuna's source and fails on one that is not covered).

**Retried writes are safe.** Parameters, user/system attrs, intermediate values and heartbeats are upserts
or inserts whose duplicate is ignored; creating a trial and changing its state are recognised on a retry
(:mod:`~hpo.store.rdb.checked`), so a commit whose answer was lost is not done twice.

**The last places of the budget.** Workers near the end of a study's budget count it and ask for a trial
under a lock per study (:mod:`~hpo.store.rdb.lock`: a PostgreSQL advisory lock, an ``flock`` beside an
SQLite file), so two workers that count at the same moment do not both take the last place.

**Stale trials after an outage.** While the store is down no worker can write heartbeats, so right after it
comes back every running trial looks stale: a stale check finds nothing until a grace period has passed
since this process last saw the store come back, and (PostgreSQL) since the server started. Trials that
never sent a heartbeat are failed by :func:`~hpo.store.rdb.access.fail_heartbeatless`.

**Broken stores fail at once.** A read-only, full, corrupt or not-a-database SQLite file, a refused login or
a missing database are not outages: :class:`hpo.errors.StoreError` is raised at once with one line
(``store: what must hold, but got ...``; exit 2). So is an outage that outlasts ``reconnect_timeout``.

**Concurrent first runs.** Two processes creating the schema of a fresh store at once race: the constructor
retries such a race a few times; the loser then finds the schema the winner made.

Modules: :mod:`~hpo.store.rdb.storage` (the class, its retries, stale trials), :mod:`~hpo.store.rdb.checked`,
:mod:`~hpo.store.rdb.fast` (batched writes and Core reads), :mod:`~hpo.store.rdb.lock` (the study lock),
:mod:`~hpo.store.rdb.access` (public functions the rest of ``hpo`` calls instead of private Optuna API). Imported only when a storage is opened.
"""

from hpo.store.rdb.guard import check_optuna_version

check_optuna_version()

from hpo.store.rdb.access import (  # noqa: E402  (after the version check)
    ask, backend_of, batched_params, fail_heartbeatless, fail_stale, fail_waiting, has_heartbeat, heartbeat_thread,
    intermediate_writer, light_reads, record_artifact, record_heartbeat, storage_of, stored_trial, study_id_of,
    study_lock, tell, trial_id_of, trials_light, write_user_attrs,
)
from hpo.store.rdb.storage import (  # noqa: E402
    BATCHED, CHECKED, DELEGATING, RETRIED, ResilientRDBStorage, retried,
)
from hpo.store.retry import RECONNECT_TIMEOUT  # noqa: E402

__all__ = [
    "BATCHED", "CHECKED", "DELEGATING", "RECONNECT_TIMEOUT", "RETRIED", "ResilientRDBStorage", "ask", "backend_of",
    "batched_params", "check_optuna_version", "fail_heartbeatless", "fail_stale", "fail_waiting", "has_heartbeat",
    "heartbeat_thread", "intermediate_writer", "light_reads", "record_artifact", "record_heartbeat", "retried",
    "storage_of", "stored_trial", "study_id_of", "study_lock", "tell", "trial_id_of", "trials_light",
    "write_user_attrs",
]
