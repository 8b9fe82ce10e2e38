"""Curve diagnosis on synthetic curves that reproduce the seeds' situations."""

import math

from hpo.analysis.diagnosis import diagnose_study, summary_text
from hpo.train.diagnose import diagnose_curves


def _curves(train, val, **extra):
    n = len(val)
    return {"epoch": list(range(1, n + 1)), "train_mae": train, "val_mae": val,
            "train_loss": extra.get("train_loss", train), "val_loss": extra.get("val_loss", val)}


def kinds(diags):
    return {d["kind"]: d for d in diags}


def test_seed_000_eight_fold_overfitting():
    # train MAE falls to ~0.05 eV while val stalls at ~0.40 eV after epoch ~40
    n = 100
    train = [0.6 * math.exp(-e / 5) + 0.05 for e in range(n)]
    val = [0.40 + 0.6 * math.exp(-e / 8) + (0.002 * (e - 40) if e > 40 else 0) for e in range(n)]
    config = {"graph_dropout": 0.15, "fine_grained_dropout": 0.35, "weight_decay": 1e-3, "hidden_features": 256,
              "alignn_layers": 4, "patience": 150, "lr": 5e-4}
    d = kinds(diagnose_curves(_curves(train, val), metric="mae", direction="minimize", config=config))
    over = d["overfitting"]
    assert 7.5 < over["evidence"]["ratio"] < 8.5  # train 0.05 vs val 0.40: 8x
    assert over["evidence"]["epoch"] > 35
    assert "overfitting" in over["message"]
    assert {"graph_dropout", "fine_grained_dropout", "weight_decay", "hidden_features", "alignn_layers"} <= set(over["knobs"])
    assert "lr" not in over["knobs"]


def test_seed_001_plateau_at_100_with_800_epochs_run():
    val = [1.0 / (1 + 0.05 * e) for e in range(100)] + [1.0 / (1 + 0.05 * 99) + 1e-5 * math.sin(e) for e in range(700)]
    train = [v / 3.5 for v in val]  # val error 3-4x train error
    config = {"patience": 150, "min_delta": 0.0, "epochs": 800}
    d = kinds(diagnose_curves(_curves(train, val), metric="mae", direction="minimize", config=config, stop_reason="completed"))
    assert 95 <= d["plateau"]["evidence"]["plateau_epoch"] <= 101
    wasted = d["wasted_epochs"]
    assert 540 <= wasted["evidence"]["wasted_epochs"] <= 560
    assert "patience 150 never fired" in wasted["message"]
    assert set(wasted["knobs"]) == {"patience", "min_delta", "epochs"}
    assert d["overfitting"]["evidence"]["ratio"] == 3.5


def test_seed_003_stuck_similarity_uses_the_loss_ratio():
    # cosine similarity (maximised) stuck at 0.75 after epoch 20; val loss 1.8x train loss
    n = 60
    sim = [0.75 - 0.3 * math.exp(-e / 5) for e in range(n)]
    train_loss = [0.1 + 0.5 * math.exp(-e / 10) for e in range(n)]
    val_loss = [1.8 * x for x in train_loss]
    curves = {"epoch": list(range(1, n + 1)), "val_cosine": sim, "train_cosine": [s + 0.1 for s in sim],
              "train_loss": train_loss, "val_loss": val_loss}
    d = kinds(diagnose_curves(curves, metric="cosine", direction="maximize", config={"dropout": 0.15, "weight_decay": 1e-4, "d_model": 512}))
    assert d["overfitting"]["evidence"]["ratio"] == 1.8 and "loss" in d["overfitting"]["message"]
    assert d["plateau"]["evidence"]["plateau_epoch"] < 40


def test_healthy_run_and_room_to_regularize_less():
    val = [1.0 / e for e in range(1, 21)]
    d = kinds(diagnose_curves(_curves([v / 1.1 for v in val], val), metric="mae", direction="minimize", config={"dropout": 0.3}))
    assert "overfitting" not in d and "plateau" not in d
    assert d["room_to_regularize_less"]["knobs"] == ["dropout", "weight_decay"]


def test_divergence():
    curves = _curves([1.0, float("nan")], [1.0, None])
    d = kinds(diagnose_curves(curves, metric="mae", direction="minimize", stop_reason="diverged", config={"lr": 1.0}))
    assert "lr" in d["diverged"]["knobs"] and "grad_clip" in d["diverged"]["knobs"]


class _T:
    def __init__(self, number, train, val):
        self.number = number
        self.user_attrs = {"curves": _curves(train, val), "config": {"hidden": 8}, "metrics": {"train_mae": train[-1]}}


def test_study_underfitting_and_summary():
    good = _T(0, [0.5, 0.2, 0.1], [0.6, 0.3, 0.15])
    weak = _T(1, [0.9, 0.8, 0.7], [0.95, 0.85, 0.8])
    result = diagnose_study([good, weak], metric="mae", direction="minimize")
    assert "underfitting" in {d["kind"] for d in result["trials"][1]}
    assert "underfitting" not in {d["kind"] for d in result["trials"][0]}
    assert result["counts"]["underfitting"] == 1
    text = summary_text(result, best_number=0)
    assert "underfitting" in text and "Best trial #0" in text
