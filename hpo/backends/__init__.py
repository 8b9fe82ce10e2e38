"""Execution backends. ``local`` (worker processes on this machine) lives in :mod:`hpo.runner`;
``ray`` (Ray Tune on a cluster) in :mod:`hpo.backends.ray_backend`. Both drive the same study in the
same store with the same sampler, search space and trial body (:class:`hpo.objective.TrialObjective`)."""
