"""fusion-hpo: hyperparameter optimisation for multimodal fusion models.

Declarative search spaces (``search_spaces/*.yaml``) and studies (``studies/*.yaml``) run as pruned
Optuna studies of the models in ``models/``, stored in a relational study store, browsed in
optuna-dashboard and exported as re-runnable configs. The command line is ``hpo`` (:mod:`hpo.cli`).
"""

__version__ = "0.1.0"
