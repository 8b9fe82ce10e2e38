"""The writes a blind retry could do twice, made safe: creating a trial and changing its state.

``_create_new_trial`` writes a random token as a system attr in the same transaction as the trial;
before a retry, the trial carrying that token is looked up, and if the first attempt committed, that trial
is returned instead of creating another. ``set_trial_state_values`` to a finished state counts a retry that
finds the trial already in that state as done; a claim (WAITING -> RUNNING) writes a claim token, so a retry
that finds the trial RUNNING under its own token counts as claimed. Tokens are system attrs named ``_hpo_*``,
deleted in the transaction that finishes the trial (a trial created finished loses its token at once): one
transaction fewer per trial than a delete of its own (``bench/scale.py``). Trials read through the storage
never show them. With heartbeats on, a trial entering RUNNING (created or claimed) gets its first heartbeat in
that same transaction (:attr:`CheckedWrites.beats_at_start`): no trial is ever RUNNING without a beat, and the
heartbeat thread's first write comes one interval later. Mixed into :class:`hpo.store.rdb.ResilientRDBStorage`.
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import TYPE_CHECKING

import sqlalchemy.exc as sa_exc

from hpo.store.retry import NOT_DONE

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

logger = logging.getLogger("hpo.store.storage")

TOKEN_PREFIX = "_hpo_"  # system attrs that are this package's bookkeeping, hidden from readers
CREATE_TOKEN = TOKEN_PREFIX + "create"
CLAIM_TOKEN = TOKEN_PREFIX + "claim"


def without_tokens(trial: "FrozenTrial") -> "FrozenTrial":
    if any(k.startswith(TOKEN_PREFIX) for k in trial.system_attrs):
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(TOKEN_PREFIX)}
    return trial


class CheckedWrites:
    """Trial creation and state changes that a retry recognises (see the module docstring)."""

    @property
    def beats_at_start(self) -> bool:
        """Whether a trial entering RUNNING here gets its first heartbeat in that transaction."""
        return bool(self.heartbeat_interval)

    def _beat_without_commit(self, session, trial_id: int, new: bool = False) -> None:
        """Optuna's ``record_heartbeat``, in ``session`` (``new``: the trial is created in it, no beat to look up)."""
        import sqlalchemy
        from optuna.storages._rdb import models

        beat = None if new else models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
        if beat is None:
            session.add(models.TrialHeartbeatModel(trial_id=trial_id))
        else:
            beat.heartbeat = session.execute(sqlalchemy.func.now()).scalar()

    def create_new_trial(self, study_id: int, template_trial: "FrozenTrial | None" = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution) -> None:
        self._set_trial_param(trial_id, param_name, param_value_internal, distribution, None)

    def _create_new_trial(self, study_id: int, template_trial: "FrozenTrial | None" = None) -> "FrozenTrial":
        """Create a trial (from ``template_trial`` when given) exactly once, even when the connection
        drops between the commit and its answer."""
        import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import FrozenTrial, TrialState

        token = uuid.uuid4().hex
        if template_trial is None:  # what Optuna stores for a fresh trial, as a template
            template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                                   datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                                   distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=-1)
        else:
            template = copy.deepcopy(template_trial)
        template.system_attrs = {**template.system_attrs, CREATE_TOKEN: token}

        def attempt() -> FrozenTrial:
            with _create_scoped_session(self.scoped_session) as session:
                # the lock makes trial numbers unique under concurrent workers (as in Optuna)
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                trial = self._get_prepared_new_trial(study_id, template, session)
                if template.state == TrialState.RUNNING and self.beats_at_start:
                    self._beat_without_commit(session, trial.trial_id, new=True)
                frozen = copy.deepcopy(template)
                frozen.number, frozen.datetime_start, frozen._trial_id = trial.number, trial.datetime_start, trial.trial_id
            return without_tokens(frozen)

        def recover(_):
            trial_id = self._trial_with_attr(study_id, CREATE_TOKEN, token)
            if trial_id is None:
                return NOT_DONE
            logger.warning("the trial created before the connection dropped was committed (trial id %d): not creating another", trial_id)
            return self.get_trial(trial_id)

        trial = self._retry("_create_new_trial", attempt, recover)
        if trial.state.is_finished():  # no state change will come to take the token with it
            self._drop_token(trial._trial_id, CREATE_TOKEN)
        return trial

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        """Optuna's state change in one transaction; a claim (WAITING -> RUNNING) also writes a claim
        token, so that a retry whose first attempt committed knows the trial is its own."""
        from datetime import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        token = uuid.uuid4().hex

        def attempt() -> bool:
            try:
                with _create_scoped_session(self.scoped_session) as session:
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                    self.check_trial_is_updatable(trial_id, trial.state)
                    if values is not None:
                        for objective, v in enumerate(values):
                            self._set_trial_value_without_commit(session, trial, objective, v)
                    if state == TrialState.RUNNING and trial.state != TrialState.WAITING:
                        return False
                    trial.state = state
                    if state == TrialState.RUNNING:
                        trial.datetime_start = datetime.now()
                        self._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, trial_id, CLAIM_TOKEN, token)
                        if self.beats_at_start:
                            self._beat_without_commit(session, trial_id)
                    if state.is_finished():
                        trial.datetime_complete = datetime.now()
                        self._drop_tokens_without_commit(session, trial_id)
            except sa_exc.IntegrityError:
                return False
            return True

        def recover(_):
            row = self._trial_state_and_attr(trial_id, CLAIM_TOKEN)
            if row is None:
                return NOT_DONE
            stored_state, claim = row
            if state == TrialState.RUNNING:
                return True if stored_state == TrialState.RUNNING and claim == token else NOT_DONE
            if stored_state == state:
                return True  # the first attempt committed before the connection dropped
            return NOT_DONE

        return self._retry("set_trial_state_values", attempt, recover)

    @staticmethod
    def _drop_tokens_without_commit(session, trial_id: int) -> None:
        """The trial finishes in this transaction: its tokens have done their work."""
        from optuna.storages._rdb import models
        from sqlalchemy import delete

        A = models.TrialSystemAttributeModel.__table__
        session.execute(delete(A).where(A.c.trial_id == trial_id, A.c.key.in_((CREATE_TOKEN, CLAIM_TOKEN))))

    def _drop_token(self, trial_id: int, key: str) -> None:
        """The answer came back: the token has done its work (deleting it twice deletes it once)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import delete

        A = models.TrialSystemAttributeModel.__table__

        def attempt() -> None:
            with _create_scoped_session(self.scoped_session) as session:
                session.execute(delete(A).where(A.c.trial_id == trial_id, A.c.key == key))

        self._retry(f"deleting {key}", attempt)

    def _trial_with_attr(self, study_id: int, key: str, value: str) -> int | None:
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import select

        A, T = models.TrialSystemAttributeModel.__table__, models.TrialModel.__table__
        with _create_scoped_session(self.scoped_session) as session:
            return session.execute(select(A.c.trial_id).join(T, T.c.trial_id == A.c.trial_id).where(
                T.c.study_id == study_id, A.c.key == key, A.c.value_json == json.dumps(value))).scalar()

    def _trial_state_and_attr(self, trial_id: int, key: str):
        import json

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import select

        A, T = models.TrialSystemAttributeModel.__table__, models.TrialModel.__table__
        with _create_scoped_session(self.scoped_session) as session:
            state = session.execute(select(T.c.state).where(T.c.trial_id == trial_id)).scalar()
            if state is None:
                return None
            value = session.execute(select(A.c.value_json).where(A.c.trial_id == trial_id, A.c.key == key)).scalar()
        return state, (json.loads(value) if value is not None else None)
