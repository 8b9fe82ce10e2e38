"""Staged plans: a study's ``stages:`` run in order, each stage a flat study ``PLAN/STAGE`` in the same store
(one per stage in optuna-dashboard), resumable mid-stage. :mod:`~hpo.plan.runner` walks the plan
(``hpo run``; ``hpo worker`` serves the stage in progress, ``hpo create`` creates the first), building a
``narrow`` stage's space from the previous stage's best trials (:mod:`~hpo.plan.narrow`, also ``hpo
narrow``), telling earlier stages' completed trials to a ``warm_start`` stage's sampler
(:mod:`~hpo.plan.warm`), and choosing the next stage from each stage's result with its ``next`` rules
(:mod:`~hpo.plan.decide`); every decision is recorded on its stage study (user attr ``stage``), which
:mod:`~hpo.plan.status` reads back for ``hpo status``. The layer sits between ``run`` (it drives the
backends) and ``analysis``.
"""
