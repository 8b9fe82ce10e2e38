"""Reading finished studies, each through :class:`hpo.store.stored.StoredStudy` (the record, task and
trials): :mod:`~hpo.analysis.export` writes the best (top-K, Pareto-optimal) configs as re-runnable YAML/JSON
or commands; :mod:`~hpo.analysis.report` the self-contained HTML report, drawn by
:mod:`~hpo.analysis.figures` (plotly) from :mod:`~hpo.analysis.view` (the trials read once, plans vs tuned);
:mod:`~hpo.analysis.dashboard` attaches the curves and the diagnosis note to optuna-dashboard;
:mod:`~hpo.analysis.ablation` the ablation table and plot; :mod:`~hpo.analysis.compare` two trained trials side
by side (every family); :mod:`~hpo.analysis.reevaluate` retrains the top configs and the plans with several
seeds on the test split; :mod:`~hpo.analysis.trained` loads a trial's checkpoint back into its model and runs a
task's own analyses on it. (Narrowing a space around the top trials is :mod:`hpo.plan.narrow`.)"""
