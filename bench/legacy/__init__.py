"""Frozen earlier versions of models, kept as same-run baselines of the benchmarks and as references of
the equivalence tests (``tests/models/test_traffic_light.py``). Never edited: a change to a model goes
into the model, and its test shows the frozen copy still agrees."""
