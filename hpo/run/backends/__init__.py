"""Execution backends behind one contract (:class:`~hpo.run.backends._base.Backend`): ``local`` (worker
processes on this machine, :mod:`hpo.run.backends.local`) and ``ray`` (Ray Tune on a cluster,
:mod:`hpo.run.backends.ray`). Both drive the same study in the same store with the same sampler, search
space and trial body (:class:`hpo.run.trial.TrialObjective`). :func:`make_backend` builds one by the name a
study's ``backend:`` key or ``hpo run --backend`` gives; a backend module is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hpo.errors import UnknownNameError

if TYPE_CHECKING:
    from hpo.run.backends._base import Backend

#: backend name -> "module:class" (imported on use: Ray is not imported by a local run)
BACKENDS = {"local": "hpo.run.backends.local:LocalBackend", "ray": "hpo.run.backends.ray:RayBackend"}


def make_backend(name: str, **options) -> "Backend":
    """The backend called ``name``, built with the options its constructor takes (others are ignored:
    ``address`` only means something to Ray)."""
    import inspect

    if name not in BACKENDS:
        raise UnknownNameError("backend", name, BACKENDS)
    module, _, attr = BACKENDS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})
