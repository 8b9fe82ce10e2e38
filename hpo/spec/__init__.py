"""Declarative search spaces and studies: YAML -> validated pydantic models -> compiled objects.

- :mod:`hpo.spec.schema`: the file formats (pydantic v2, ``extra="forbid"``, tagged unions on ``type``).
- :mod:`hpo.spec.space`: :class:`CompiledSpace`, the define-by-run sampler of a space.
- :mod:`hpo.spec.load`: :func:`load_study` / :func:`load_space`, which validate everything and raise
  one :class:`hpo.errors.SpecError` listing every problem as ``file: key: rule, but got X``.
"""

from hpo.spec.load import Study, load_space, load_study, study_from_dict
from hpo.spec.space import CompiledSpace

__all__ = ["CompiledSpace", "Study", "load_space", "load_study", "study_from_dict"]
