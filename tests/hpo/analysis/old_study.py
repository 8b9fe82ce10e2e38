"""A toy study as the code before record versioning wrote it, built with plain Optuna (no fusion-hpo
writer involved): a study record without ``format`` and finished trials with the user attrs the old
objective stored (config, baseline, curves, ...)."""

from __future__ import annotations

from pathlib import Path

# the record as `hpo run` stored it before records carried a "format" key
OLD_RECORD = {
    "file": "studies/old.yaml",
    "space_file": None,
    "spec": {
        "name": "old",
        "task": {"family": "toy", "dataset": {"n_samples": 160}},
        "space": {
            "params": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}, "hidden": [8, 16]},
            "baselines": {"current": {"lr": 1.0e-2, "hidden": 16}},
        },
        "objectives": ["val_mae"],
        "training": {"epochs": 3},
    },
    "dataset": {"format": "synthetic", "n_samples": 160, "noise": 0.1, "seed": 0},
}
VALUES = [0.50, 0.30, 0.40, 0.20, 0.35]  # trial 0 is the baseline "current"; trial 3 is the best


def old_study(db: Path, name: str = "old", *, record: dict | None = OLD_RECORD, directions=("minimize",)):
    """(storage URL, optuna.Study) of a five-trial toy study in a new SQLite file ``db``."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name=name, storage=url, directions=list(directions))
    if record is not None:
        study.set_user_attr("fusion_hpo", record)  # the literal key the old code wrote
    dists = {"lr": FloatDistribution(1e-3, 3e-2, log=True), "hidden": CategoricalDistribution([8, 16])}
    for i, value in enumerate(VALUES):
        params = {"lr": 1e-2 if i == 0 else 2e-3 * (i + 1), "hidden": 16 if i % 2 == 0 else 8}
        curve = [value + 0.1 * (3 - e) for e in range(3)]
        attrs = {
            "config": {**params, "epochs": 3, "batch_size": 32, "seed": i},
            "curves": {"epoch": [1, 2, 3], "train_mae": [v * 0.8 for v in curve], "val_mae": curve,
                       "train_loss": [v * 0.8 for v in curve], "val_loss": curve},
            "metrics": {"val_mae": value},
            "best_epoch": 3,
            "epochs_run": 3,
            "threads": 1,
            "device": "cpu",
            "stop_reason": "completed",
        }
        if i == 0:
            attrs.update(baseline="current", overrides={})
        values = [value] if len(directions) == 1 else [value, 1.0 - value if i != 4 else 0.1]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=values, user_attrs=attrs))
    return url, study
