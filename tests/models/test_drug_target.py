"""drug_target: metrics, the three data formats, DeepBindNet, training and the comparison report.

Everything runs on tiny data written by the tests (never ../shared/data) in a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from hpo import errors
from hpo.errors import DataError
from hpo.data.safe_pickle import UnsafePickleError
from hpo.tasks import get_task
from hpo.train import fit
from models.drug_target.compare import FIGURE_IDS, compare_runs, improvement
from models.drug_target.data import PAD, PROTEIN_CHARS, SMILES_CHARS, DTADataset, PairLoader, tokenize
from hpo.data.metrics import r2
from models.drug_target.metrics import concordance_index, count_inversions, regression_metrics, rm2_score


@pytest.fixture(scope="module")
def Task():
    return get_task("drug_target")


def small_synthetic(**kw):
    spec = {"format": "synthetic", "n_drugs": 12, "n_proteins": 10, "smiles_length": [6, 16], "protein_length": [10, 30]}
    return DTADataset.model_validate({**spec, **kw})


def tiny_config(Task, **overrides):
    return Task.split_config({**Task.presets["tiny"], **overrides})


# ---- metrics -------------------------------------------------------------------------------------
def brute_ci(y, p):
    num = den = 0.0
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            if y[i] == y[j]:
                continue
            lo, hi = (i, j) if y[i] < y[j] else (j, i)
            den += 1
            num += 1.0 if p[lo] < p[hi] else 0.5 if p[lo] == p[hi] else 0.0
    return num / den


def test_ci_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(2, 70))
        y = rng.integers(0, 6, n).astype(float)  # many ties in y
        p = rng.integers(0, 5, n).astype(float) * 0.5  # many ties in the predictions
        if len(set(y)) < 2:
            assert math.isnan(concordance_index(y, p))
            continue
        assert concordance_index(y, p) == pytest.approx(brute_ci(y, p), abs=1e-12)
    y = rng.normal(size=300)
    assert concordance_index(y, y) == 1.0 and concordance_index(y, -y) == 0.0
    assert concordance_index(y, np.zeros_like(y)) == 0.5


def test_count_inversions_matches_brute_force():
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 7, 64, 129):
        a = rng.integers(0, 40, n)
        assert count_inversions(a) == sum(int(a[i] > a[j]) for i in range(n) for j in range(i + 1, n))


def test_ci_is_subquadratic():
    rng = np.random.default_rng(2)
    y = rng.normal(size=200_000).round(2)  # ties as in real affinity data
    p = y + rng.normal(size=y.size)
    t0 = time.perf_counter()
    ci = concordance_index(y, p)
    elapsed = time.perf_counter() - t0
    assert 0.7 < ci < 0.8
    assert elapsed < 2.0, f"CI over 200k pairs took {elapsed:.2f}s (a quadratic loop would take minutes)"


def test_r2_and_rm2_against_hand_values():
    y = np.array([5.0, 6.0, 7.5, 8.0, 9.2])
    p = np.array([5.3, 5.8, 7.0, 8.4, 8.9])
    r2_by_hand = 1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2(p, y) == pytest.approx(r2_by_hand)
    # DeepDTA's get_rm2: r² = squared Pearson; r0² from the fit through the origin y ≈ k p
    r_sq = np.corrcoef(y, p)[0, 1] ** 2
    k = np.linalg.lstsq(p[:, None], y, rcond=None)[0][0]
    r0_sq = 1 - np.sum((y - k * p) ** 2) / np.sum((y - y.mean()) ** 2)
    assert rm2_score(y, p) == pytest.approx(r_sq * (1 - np.sqrt(abs(r_sq**2 - r0_sq**2))))
    m = regression_metrics(torch.tensor(y), torch.tensor(p))
    assert set(m) == {"mse", "rmse", "mae", "r2", "ci", "rm2"}
    assert m["mse"] == pytest.approx(np.mean((y - p) ** 2), rel=1e-6)
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - p)), rel=1e-6)
    perfect = regression_metrics(y, y)
    assert perfect["r2"] == perfect["ci"] == pytest.approx(1.0) and perfect["rm2"] == pytest.approx(1.0)


# ---- DeepDTA folder --------------------------------------------------------------------------------
KD = np.array([[10.0, 1000.0, np.nan, 0.5], [10000.0, 30.0, 2.0, 100.0], [1.0, 5000.0, 250.0, 10000.0]])


def write_deepdta(folder, y_as="text"):
    (folder / "folds").mkdir(parents=True)
    (folder / "ligands_can.txt").write_text(json.dumps({"11": "CCO", "22": "c1ccccc1N", "33": "CC(=O)Cl"}))
    (folder / "proteins.txt").write_text(json.dumps({"K1": "MKVLA", "K2": "MSTNPKPQRK", "K3": "GG", "K4": "MAAAWYHHC"}))
    if y_as == "text":
        np.savetxt(folder / "Y", KD)
    else:
        with open(folder / "Y", "wb") as f:
            pickle.dump(KD, f, protocol=2)
    # 11 measured pairs (one NaN): three training folds and a test fold
    (folder / "folds" / "train_fold_setting1.txt").write_text(json.dumps([[0, 1, 2], [3, 4, 5], [6, 7]]))
    (folder / "folds" / "test_fold_setting1.txt").write_text(json.dumps([8, 9, 10]))
    return folder


@pytest.mark.parametrize("y_as", ["text", "pickle"])
def test_deepdta_folder_official_folds_and_pkd(Task, tmp_path, y_as):
    folder = write_deepdta(tmp_path / "davis", y_as)
    spec = DTADataset.model_validate({"format": "deepdta", "path": "davis", "pkd": True}, context={"base_dir": tmp_path})
    assert spec.path == folder.resolve()
    task = Task(spec)
    assert task.check() == []
    splits = task.load(Task.DataConfig(max_smiles_len=8, max_protein_len=6))
    rows, cols = np.where(~np.isnan(KD))
    pkd = -np.log10(KD[rows, cols] / 1e9)
    for name, ix in (("train", [3, 4, 5, 6, 7]), ("val", [0, 1, 2]), ("test", [8, 9, 10])):  # val = training fold 0
        part = splits[name]
        assert part.drug_idx.tolist() == rows[ix].tolist() and part.protein_idx.tolist() == cols[ix].tolist()
        np.testing.assert_allclose(part.y, pkd[ix], rtol=1e-6)
    assert splits["test"].y[0] == pytest.approx(9 - math.log10(5000.0))  # pair 8: drug 2, protein 1, Kd 5000 nM
    info = splits.info
    assert info["target_mean"] == pytest.approx(pkd[[3, 4, 5, 6, 7]].mean())  # fitted on train only
    assert info["target_std"] == pytest.approx(pkd[[3, 4, 5, 6, 7]].std())
    # sequences are cut at max_protein_len, padded after
    table = splits["train"].tables
    assert table.protein_lengths.tolist() == [5, 6, 2, 6] and (table.protein_tokens[2, 2:] == PAD).all()
    extras = task.checkpoint_extras(splits)
    assert extras["target_scaler"]["mean"] == info["target_mean"] and extras["target_units"] == "pKd"


def test_deepdta_val_fold_choice_and_bad_fold(Task, tmp_path):
    folder = write_deepdta(tmp_path / "d")
    splits = Task(DTADataset.model_validate({"format": "deepdta", "path": str(folder), "val_fold": 2})).load(Task.DataConfig())
    assert len(splits["val"]) == 2 and len(splits["train"]) == 6
    with pytest.raises(DataError, match="val_fold"):
        Task(DTADataset.model_validate({"format": "deepdta", "path": str(folder), "val_fold": 3})).load(Task.DataConfig())


def test_malicious_pickle_is_refused(Task, tmp_path):
    folder = write_deepdta(tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(folder / "Y", "wb") as f:
        pickle.dump(Exploit(), f, protocol=2)
    task = Task(DTADataset.model_validate({"format": "deepdta", "path": str(folder), "affinity_format": "pickle"}))
    with pytest.raises(UnsafePickleError):
        task.load(Task.DataConfig())
    assert not marker.exists()


# ---- CSV -----------------------------------------------------------------------------------------------
def write_csv(path, n=100, seed=0):
    rng = np.random.default_rng(seed)
    drugs = ["".join(rng.choice(list("CNO=()c1"), size=int(rng.integers(4, 12)))) for _ in range(20)]
    prots = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=int(rng.integers(8, 30)))) for _ in range(15)]
    lines = ["smiles,sequence,affinity"]
    for i in range(n):
        lines.append(f"{drugs[i % 20]},{prots[(i * 7) % 15]},{rng.normal(11.0, 1.0):.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_split_sizes_and_train_only_scaler(Task, tmp_path):
    write_csv(tmp_path / "kiba.csv")
    spec = DTADataset.model_validate({"format": "csv", "path": "kiba.csv"}, context={"base_dir": str(tmp_path)})
    task = Task(spec, target="affinity")
    assert task.check() == []
    splits = task.load(Task.DataConfig())
    assert {k: splits.size(k) for k in ("train", "val", "test")} == {"train": 70, "val": 10, "test": 20}
    y_train, y_all = splits["train"].y, np.concatenate([splits[k].y for k in ("train", "val", "test")])
    assert splits.info["target_mean"] == pytest.approx(float(y_train.mean()), rel=1e-6)
    assert splits.info["target_mean"] != pytest.approx(float(y_all.mean()), rel=1e-9)


def test_csv_cold_drug_split_and_missing_column(Task, tmp_path):
    write_csv(tmp_path / "k.csv")
    spec = DTADataset.model_validate({"format": "csv", "path": str(tmp_path / "k.csv"), "split": "cold_drug"})
    splits = Task(spec).load(Task.DataConfig())
    train_drugs, test_drugs = set(splits["train"].drug_idx), set(splits["test"].drug_idx)
    assert train_drugs and test_drugs and not train_drugs & test_drugs
    problems = Task(spec, target="pKd").check()
    assert [p.path for p in problems] == ["task.target"]
    with pytest.raises(DataError, match="pKd"):
        Task(spec, target="pKd").load(Task.DataConfig())


def test_dataset_section_is_a_tagged_union(tmp_path):
    with pytest.raises(ValidationError, match="expected tags: 'csv', 'deepdta', 'synthetic'"):
        DTADataset.model_validate({"format": "parquet", "path": "x"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        DTADataset.model_validate({"format": "csv", "path": "x.csv", "test_size": 0.2})
    with pytest.raises(ValidationError, match="test_fraction \\+ val_fraction"):
        DTADataset.model_validate({"format": "synthetic", "test_fraction": 0.6, "val_fraction": 0.5})


def test_tokenize_char_and_regex():
    ids, lengths = tokenize(["CCl", "[nH]c"], ["<pad>", "<unk>", *SMILES_CHARS], 4)
    assert lengths.tolist() == [3, 4] and ids[0, 3] == PAD
    ids, lengths = tokenize(["CCl", "[nH]cX"], ["<pad>", "<unk>", "C", "Cl", "[nH]", "c"], 4, "regex")
    assert ids.tolist() == [[2, 3, 0, 0], [4, 5, 1, 0]] and lengths.tolist() == [2, 3]
    ids, _ = tokenize(["MKJ"], ["<pad>", "<unk>", *PROTEIN_CHARS], 3)
    assert ids[0, 2] == 1  # J is not in DeepDTA's protein alphabet


def test_cache_and_locked_test_split(Task, tmp_path):
    from hpo.data.cache import DataCache

    write_csv(tmp_path / "k.csv")
    spec = DTADataset.model_validate({"format": "csv", "path": str(tmp_path / "k.csv")})
    cache = DataCache(tmp_path / "cache")
    Task(spec, cache=cache).load(Task.DataConfig())
    Task(spec, cache=cache).load(Task.DataConfig())
    assert cache.stats.misses == 1 and cache.stats.memory_hits == 1
    other = DataCache(tmp_path / "cache")
    splits = Task(spec, cache=other).load(Task.DataConfig())
    assert other.stats.disk_hits == 1
    Task(spec, cache=other).load(Task.DataConfig(max_protein_len=10))  # a setting that changes the result
    assert other.stats.misses == 1
    with splits.locked_test(), pytest.raises(errors.TestSplitAccessError):
        Task(spec).loader(splits, "test", 8, shuffle=False)


# ---- model and training ----------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{"gated": True}, {"gated": False},
                                       {"drug_encoder": "transformer", "protein_encoder": "transformer", "protein_pool": 3}])
def test_deepbindnet_forward_backward(Task, overrides):
    task = Task(small_synthetic())
    _, model_cfg, data_cfg = tiny_config(Task, **overrides)
    splits = task.load(data_cfg)
    model = task.build_model(model_cfg, splits)
    assert (model.fusion[0].drug_from_protein.gate is not None) == model_cfg.gated
    batch = next(iter(task.loader(splits, "train", 5, shuffle=True)))
    out = task.step(model, batch, train=True)
    assert out.pred.shape == (5,) and out.target.shape == (5,) and out.n == 5
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # batch size 1 keeps its batch dimension, and padding makes no difference: a pair alone (cut to its
    # own length) gets the prediction it gets inside the padded batch
    model.eval()
    lengths = (batch["drug"] != PAD).sum(1), (batch["protein"] != PAD).sum(1)
    for i in range(5):
        d, p = int(batch["drug_index"][i]), int(batch["protein_index"][i])  # pair i's rows
        alone = {"drug": batch["drug"][d : d + 1, : lengths[0][d]], "protein": batch["protein"][p : p + 1, : lengths[1][p]],
                 "y": batch["y"][i : i + 1]}
        pred = task.step(model, alone, train=False).pred
        assert pred.shape == (1,)
        torch.testing.assert_close(pred[0], task.step(model, batch, train=False).pred[i], rtol=1e-4, atol=1e-4)


def test_fit_lowers_loss_and_is_reproducible(Task):
    task = Task(small_synthetic())
    train_cfg, model_cfg, data_cfg = tiny_config(Task, epochs=4, batch_size=16)
    splits = task.load(data_cfg)
    a = fit(task, splits, train_cfg, model_cfg, monitor="val_rmse")
    assert a.curves["train_loss"][-1] < a.curves["train_loss"][0]
    assert a.best["val_rmse"] < a.curves["val_rmse"][0]
    assert {"val_ci", "val_rm2", "val_r2", "val_mae", "train_rmse"} <= set(a.best)
    b = fit(task, splits, train_cfg, model_cfg, monitor="val_rmse")
    assert a.best == b.best and a.curves["val_rmse"] == b.curves["val_rmse"]


def test_check_reports_missing_files(Task, tmp_path):
    spec = DTADataset.model_validate({"format": "deepdta", "path": str(tmp_path / "nowhere")})
    assert [p.path for p in Task(spec).check()] == ["task.dataset.path"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "Y").write_text("1 2\n")
    spec = DTADataset.model_validate({"format": "deepdta", "path": str(tmp_path / "half")})
    assert {p.path for p in Task(spec).check()} == {"task.dataset.ligands_file", "task.dataset.proteins_file",
                                                     "task.dataset.train_folds_file", "task.dataset.test_fold_file"}


def test_config_validation(Task):
    with pytest.raises(ValueError, match="divisible by fusion_heads"):
        Task.ModelConfig(hidden_dim=100, fusion_heads=8)
    with pytest.raises(KeyError, match="fusion_layers"):
        Task.split_config({"fusion_layer": 2})


# ---- comparison report -----------------------------------------------------------------------------
def test_compare_runs_writes_html_with_the_figures(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(7.0, 1.0, 400)
    out = compare_runs((y, y + rng.normal(0, 0.6, 400), "standard"),
                       {"y_true": y, "y_pred": y + rng.normal(0, 0.4, 400), "name": "gated"}, tmp_path / "r" / "cmp.html")
    html = (tmp_path / "r" / "cmp.html").read_text()
    for div in FIGURE_IDS:
        assert f'id="{div}"' in html
    assert "Predicted vs true" in html and "Prediction error" in html and "Improvement of gated over standard" in html
    assert "plotly" in html.lower() and "<script" in html  # plotly.js inlined: opens offline
    assert out["improvement"]["rmse"] > 0 and out["metrics"]["gated"]["rmse"] < out["metrics"]["standard"]["rmse"]
    assert improvement({"rmse": 2.0, "ci": 0.8}, {"rmse": 1.0, "ci": 0.88})["ci"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="different names"):
        compare_runs((y, y, "a"), (y, y, "a"), tmp_path / "x.html")


def test_each_sequence_is_encoded_once_per_batch_and_grouping_keeps_every_pair(Task):
    task = Task(small_synthetic())
    _, model_cfg, data_cfg = tiny_config(Task)
    splits = task.load(data_cfg)
    pairs = splits["train"]
    for group in (0, 2):
        loader = PairLoader(pairs, 8, shuffle=True, seed=0, batch_proteins=group)
        seen = []
        for batch in loader:
            assert len(torch.unique(batch["protein_index"])) == batch["protein"].shape[0]  # rows are distinct
            assert batch["drug"].shape[0] <= len(batch["y"]) and batch["protein"].shape[0] <= len(batch["y"])
            if group:
                assert batch["protein"].shape[0] <= group + 1  # about `group` proteins per batch
            seen.append(batch["y"])
        assert torch.cat(seen).sort().values.equal(torch.from_numpy(pairs.y).sort().values)  # every pair, once
    # the encoded-once forward equals encoding every pair's sequences
    model = task.build_model(model_cfg, splits).eval()
    batch = next(iter(task.loader(splits, "val", 16, shuffle=False)))
    per_pair = model(batch["drug"][batch["drug_index"]], batch["protein"][batch["protein_index"]])
    once = model(batch["drug"], batch["protein"], batch["drug_index"], batch["protein_index"])
    torch.testing.assert_close(once, per_pair, rtol=1e-5, atol=1e-5)


def test_train_subsample_keeps_val_and_test(Task):
    task = Task(small_synthetic())
    _, _, full_cfg = tiny_config(Task)
    full = task.load(full_cfg)
    import dataclasses

    sub = task.load(dataclasses.replace(full_cfg, train_subsample=0.5))
    assert len(sub["train"]) == round(len(full["train"]) * 0.5)
    assert len(sub["val"]) == len(full["val"]) and len(sub["test"]) == len(full["test"])
    assert task.cache.stats.misses == 1  # one cached dataset for both
    again = task.load(dataclasses.replace(full_cfg, train_subsample=0.5))
    assert (again["train"].y == sub["train"].y).all()  # the same pairs every time
