"""Reading finished studies: export of best configs, the HTML report, narrowing a space, re-evaluation on
the test split, and loading a trial's trained model (:mod:`~hpo.analysis.trained`)."""
