"""Declarative search spaces and studies: YAML -> validated pydantic models -> compiled objects.

What lives where: :mod:`~hpo.spec.schema` the file formats (pydantic v2, ``extra="forbid"``, tagged
unions on ``type``; sampler/pruner models name their Optuna class); :mod:`~hpo.spec.yaml_io` bounded YAML
reading; :mod:`~hpo.spec.expr` the safe expression language (its bounds in :mod:`~hpo.spec.expr_bounds`); :mod:`~hpo.spec.pydantic_errors` pydantic
errors as ``key: rule, but got X``; :mod:`~hpo.spec.key_types` the types of a task's config keys;
:mod:`~hpo.spec.keys` the public list of every YAML key; :mod:`~hpo.spec.space` :class:`CompiledSpace`
(the define-by-run sampler) and the one ``extends:`` resolution; :mod:`~hpo.spec.compile` and
:mod:`~hpo.spec.baselines` a space (and its baselines) checked against the task and compiled;
:mod:`~hpo.spec.study` :class:`Study`, :func:`load_study` / :func:`study_from_dict` (the study rules)
and ``--set`` overrides (:func:`apply_sets`); :mod:`~hpo.spec.urls` storage URL rules. Loading raises
one :class:`hpo.errors.SpecError` listing every problem as ``file: key: rule, but got X``.
"""

from hpo.spec.compile import load_space
from hpo.spec.space import CompiledSpace
from hpo.spec.study import DEFAULT_ARTIFACTS, DEFAULT_STORAGE, Study, apply_sets, load_study, study_from_dict

__all__ = [
    "CompiledSpace",
    "DEFAULT_ARTIFACTS",
    "DEFAULT_STORAGE",
    "Study",
    "apply_sets",
    "load_space",
    "load_study",
    "study_from_dict",
]
