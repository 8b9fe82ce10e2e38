"""Running a study: the options and facts of a run resolved once (:mod:`~hpo.run.options`), the study in the
store (:mod:`~hpo.run.study`), the budget (:mod:`~hpo.run.budget`), worker placement
(:mod:`~hpo.run.placement`), the trial body (:mod:`~hpo.run.trial`) and its handles (:mod:`~hpo.run.handles`),
the ask -> body -> tell loop (:mod:`~hpo.run.loop`), the backends (:mod:`~hpo.run.backends`) and one-config
training (:mod:`~hpo.run.single`)."""
