"""The storage's fast paths: batched writes and Core reads (the measured speed-ups).

Optuna writes each ``suggest_*``, user attr and intermediate value in its own transaction, and builds an ORM
object per stored row when it reads trials. Here parameters suggested inside :meth:`FastPaths.batched_params`
reach the store in one transaction, several user attrs or intermediate values are one upsert statement,
and trials are read with one Core SELECT per table and grouped in Python (bench/report_scale.py: a
10,000-trial study with curves loads in a fraction of the time). Same checks and same FrozenTrials as
Optuna's own paths. Mixed into :class:`hpo.store.rdb.ResilientRDBStorage`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from hpo.store.rdb.checked import TOKEN_PREFIX
from hpo.store.record import CURVES

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


class FastPaths:
    """Batched writes and Core reads of trials (see the module docstring)."""

    @contextlib.contextmanager
    def batched_params(self, trial_id: int, user_attrs: dict | None = None):
        """Within this block, the parameters suggested for ``trial_id`` are written together when it
        ends, in one transaction (Optuna writes each ``suggest_*`` in its own: ~1-2 ms apiece on
        SQLite, ~20 ms for a 12-parameter fusion space). Same checks as Optuna's per-parameter path.
        ``user_attrs``: a dict the block may fill; its attrs are written in the same transaction."""
        self._param_batches[trial_id] = []
        try:
            yield
        finally:
            batch = self._param_batches.pop(trial_id)
            if batch or user_attrs:
                self.set_trial_params(trial_id, batch, user_attrs)

    def _set_trial_param(self, trial_id, param_name, param_value_internal, distribution, previous_distribution) -> None:
        batch = self._param_batches.get(trial_id)
        if batch is None:
            return super()._set_trial_param(trial_id, param_name, param_value_internal, distribution, previous_distribution)
        batch.append((param_name, param_value_internal, distribution, previous_distribution))

    def set_trial_params(self, trial_id: int, params: list[tuple], user_attrs: dict | None = None) -> None:
        """Write ``(name, internal value, distribution, previous distribution or None)`` rows of a
        running trial, and ``user_attrs``, in one transaction."""
        from optuna import distributions as D
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import insert, select

        P, T = models.TrialParamModel.__table__, models.TrialModel.__table__
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            stored = {}  # one earlier distribution per name, as Optuna's check takes (``.first()``): a LIMIT 1
            for name, _, _, previous in params:  # lookup per name stops at the first row; an aggregate over the
                if previous is None:  # study read every stored parameter, for every trial (bench/scale.py)
                    row = session.execute(
                        select(P.c.distribution_json).join(T, T.c.trial_id == P.c.trial_id)
                        .where(T.c.study_id == trial.study_id, P.c.param_name == name).limit(1)).first()
                    if row is not None:
                        stored[name] = row[0]
            for name, _, dist, previous in params:
                if previous is None and name in stored:
                    previous = D.json_to_distribution(stored[name])
                if previous is not None:
                    D.check_distribution_compatibility(previous, dist)
            if params:
                session.execute(insert(P), [{"trial_id": trial_id, "param_name": name, "param_value": value,
                                             "distribution_json": D.distribution_to_json(dist)} for name, value, dist, _ in params])
            if user_attrs:
                self._upsert_without_commit(session, trial_id, _user_attr_rows(trial_id, user_attrs))

    def set_trial_user_attrs(self, trial_id: int, attrs: dict) -> None:
        """Set several user attrs of a running trial with one upsert statement in one transaction
        (instead of a lookup, an upsert and a commit per key)."""
        self._upsert(trial_id, _user_attr_rows(trial_id, attrs))

    def set_trial_intermediate_values(self, trial_id: int, values: dict, user_attrs: dict | None = None) -> None:
        """Set several intermediate values (step -> value) of a running trial in one statement, and
        ``user_attrs`` (one more) in the same transaction."""
        from optuna.storages._rdb import models

        rows = []
        for step, value in values.items():
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": int(step), "intermediate_value": stored, "intermediate_value_type": kind})
        self._upsert(trial_id, (models.TrialIntermediateValueModel, rows, ("trial_id", "step"),
                                ("intermediate_value", "intermediate_value_type")),
                     _user_attr_rows(trial_id, user_attrs or {}))

    def _get_trials(self, study_id: int, states, included_trial_ids: set[int], trial_id_greater_than: int) -> list:
        """Optuna's trial query (same selection, same FrozenTrials) without the ORM: one Core SELECT per
        table and rows grouped in Python. Loading a 10,000-trial study with curves takes a fraction of
        the time of building an ORM object per stored row (bench/report_scale.py)."""
        return self._query_trials(study_id, states, included_trial_ids, trial_id_greater_than)

    def get_trials_light(self, study_id: int, states=None, without_user_attrs: tuple[str, ...] | None = (CURVES,)) -> list:
        """All trials of a study without their intermediate values and without the named (large) user
        attrs (``None``: without any): what overviews of big studies need (reports, exports). Not cached
        by Optuna; fetch a full trial with ``get_trial`` where its curves are needed."""
        return self._query_trials(study_id, states, set(), -1, light=True,
                                  without_user_attrs=None if without_user_attrs is None else tuple(without_user_attrs))

    def _query_trials(self, study_id: int, states, included_trial_ids: set[int], trial_id_greater_than: int,
                      light: bool = False, without_user_attrs: tuple[str, ...] | None = ()) -> list:
        from optuna.storages._rdb import models
        from sqlalchemy import or_

        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        T = models.TrialModel.__table__
        where = [T.c.study_id == study_id]
        if states is not None:
            where.append(T.c.state.in_(list(states)))
        wanted = None  # a long IN list would exceed the database's parameter limit: filter those in Python
        if included and trial_id_greater_than > -1:
            if len(included) <= 500:
                where.append(or_(T.c.trial_id.in_(sorted(included)), T.c.trial_id > trial_id_greater_than))
            else:
                where.append(T.c.trial_id >= min(included))
                wanted = included
        elif trial_id_greater_than > -1:
            where.append(T.c.trial_id > trial_id_greater_than)
        return self._load_trials(where, light, without_user_attrs, study_id=study_id, wanted=wanted,
                                 newer_than=trial_id_greater_than)

    def get_trial(self, trial_id: int) -> "FrozenTrial":
        """One trial, read like :meth:`_get_trials` (Optuna's ORM path costs ~10 ms a call on SQLite; the
        worker reads its running trial a few times per trial)."""
        from optuna.storages._rdb import models

        trials = self._load_trials([models.TrialModel.__table__.c.trial_id == trial_id])
        if not trials:
            raise KeyError(f"No trial with trial id {trial_id} exists.")  # what Optuna's get_trial raises
        return trials[0]

    def _load_trials(self, where: list, light: bool = False, without_user_attrs: tuple[str, ...] | None = (), *,
                     study_id: int | None = None, wanted: set[int] | None = None, newer_than: int = -1) -> list:
        """The FrozenTrials of the trial rows matching ``where``; ``light``: without intermediate values;
        ``without_user_attrs``: user attrs left out (``None``: all of them)."""
        import json

        from optuna.distributions import json_to_distribution
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import FrozenTrial
        from sqlalchemy import select

        T = models.TrialModel.__table__
        ids = select(T.c.trial_id).where(*where).scalar_subquery()

        with _create_scoped_session(self.scoped_session) as session:
            if study_id is not None:
                models.StudyModel.find_or_raise_by_id(study_id, session)
            rows = session.execute(select(T.c.trial_id, T.c.number, T.c.state, T.c.datetime_start, T.c.datetime_complete)
                                   .where(*where).order_by(T.c.trial_id)).all()
            if wanted is not None:
                rows = [r for r in rows if r.trial_id in wanted or r.trial_id > newer_than]
            if not rows:
                return []

            # the child rows of these trials: by their ids where they are few (a worker's incremental read, one
            # trial), so each table is read through its trial_id index; by the trials subquery for a whole study
            # (the subquery, filtered on study_id, costs the study's size per table, whatever the trials read)
            of = [r.trial_id for r in rows] if len(rows) <= 500 else ids

            def children(model, *cols, order=None, where=()):
                t = model.__table__
                if order is None:
                    return session.execute(select(t.c.trial_id, *(t.c[c] for c in cols)).where(t.c.trial_id.in_(of), *where)).all()
                # sorted here, not by the database: ORDER BY the primary key made it walk that index, the whole table
                q = select(t.c[order], t.c.trial_id, *(t.c[c] for c in cols)).where(t.c.trial_id.in_(of), *where)
                return [r[1:] for r in sorted(session.execute(q).all(), key=lambda r: r[0])]

            by_id = {r.trial_id: {"params": {}, "dists": {}, "values": {}, "user": {}, "system": {}, "inter": {}} for r in rows}
            dist_cache: dict[str, object] = {}
            for tid, name, value, dist_json in children(models.TrialParamModel, "param_name", "param_value", "distribution_json",
                                                         order="param_id"):
                if tid in by_id:
                    dist = dist_cache.get(dist_json)
                    if dist is None:
                        dist = dist_cache[dist_json] = json_to_distribution(dist_json)
                    by_id[tid]["params"][name] = dist.to_external_repr(value)
                    by_id[tid]["dists"][name] = dist
            for tid, objective, value, kind in children(models.TrialValueModel, "objective", "value", "value_type"):
                if tid in by_id:
                    by_id[tid]["values"][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
            skip = (models.TrialUserAttributeModel.__table__.c.key.not_in(without_user_attrs),) if without_user_attrs else ()
            for tid, key, value_json in () if without_user_attrs is None else children(
                    models.TrialUserAttributeModel, "key", "value_json", where=skip):
                if tid in by_id:
                    by_id[tid]["user"][key] = json.loads(value_json)
            for tid, key, value_json in children(models.TrialSystemAttributeModel, "key", "value_json"):
                if tid in by_id and not key.startswith(TOKEN_PREFIX):  # this class's bookkeeping
                    by_id[tid]["system"][key] = json.loads(value_json)
            to_inter = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
            for tid, step, value, kind in () if light else children(
                    models.TrialIntermediateValueModel, "step", "intermediate_value", "intermediate_value_type"):
                if tid in by_id:
                    by_id[tid]["inter"][step] = to_inter(value, kind)

        trials = []
        for r in rows:
            c = by_id[r.trial_id]
            values = [c["values"][k] for k in sorted(c["values"])] if c["values"] else None
            trials.append(FrozenTrial(
                number=r.number, state=r.state, value=None, values=values, datetime_start=r.datetime_start,
                datetime_complete=r.datetime_complete, params=c["params"], distributions=c["dists"], user_attrs=c["user"],
                system_attrs=c["system"], intermediate_values=c["inter"], trial_id=r.trial_id))
        return trials

    def _upsert(self, trial_id: int, *writes: tuple) -> None:
        """Upsert ``(model, rows, key columns, updated columns)`` writes of a running trial in one transaction."""
        from optuna.storages._rdb.storage import _create_scoped_session

        if not any(w[1] for w in writes):
            return
        with _create_scoped_session(self.scoped_session, True) as session:
            self._upsert_without_commit(session, trial_id, *writes, checked=False)

    def _upsert_without_commit(self, session, trial_id: int, *writes: tuple, checked: bool = True) -> None:
        """The upserts of :meth:`_upsert` in ``session``; ``checked``: the caller has already checked that the
        trial is updatable in this session."""
        import json

        from optuna.storages._rdb import models

        if not any(w[1] for w in writes):
            return
        if not checked:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
        dialect = self.engine.name
        for model, rows, keys, updates in writes:
            if not rows:
                continue
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert
                stmt = insert(model).values(rows)
                stmt = stmt.on_conflict_do_update(index_elements=[getattr(model, k) for k in keys],
                                                  set_={u: getattr(stmt.excluded, u) for u in updates})
                session.execute(stmt)
                continue
            for row in rows:  # other databases: Optuna's own per-row path, still one transaction
                if model is models.TrialUserAttributeModel:
                    self._set_trial_attr_without_commit(session, model, trial_id, row["key"], json.loads(row["value_json"]))
                else:
                    value = model.stored_repr_to_intermediate_value(row["intermediate_value"], row["intermediate_value_type"])
                    self._set_trial_intermediate_value_without_commit(session, trial_id, row["step"], value)


def _user_attr_rows(trial_id: int, attrs: dict) -> tuple:
    """The upsert write of ``attrs`` for :meth:`FastPaths._upsert`."""
    import json

    from optuna.storages._rdb import models

    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    return models.TrialUserAttributeModel, rows, ("trial_id", "key"), ("value_json",)
