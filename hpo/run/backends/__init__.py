"""Execution backends. ``local`` (worker processes on this machine) lives in :mod:`hpo.run.runner`;
``ray`` (Ray Tune on a cluster) in :mod:`hpo.run.backends.ray`. Both drive the same study in the
same store with the same sampler, search space and trial body (:class:`hpo.run.objective.TrialObjective`)."""
