"""Running a study: the trial body (:mod:`~hpo.run.objective`), the budget (:mod:`~hpo.run.budget`), the
worker loop and local processes (:mod:`~hpo.run.runner`), one-config training (:mod:`~hpo.run.single`) and
the Ray backend (:mod:`~hpo.run.backends.ray`)."""
