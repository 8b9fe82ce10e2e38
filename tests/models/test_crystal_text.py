"""Tests of the crystal graph + text family: graphs vs hand values, every fusion switch, the data
formats (from files the tests write), the disk cache, and training with the shared trainer."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")
pytest.importorskip("spglib")

from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from hpo.data.cache import DataCache  # noqa: E402
from hpo.errors import DataError  # noqa: E402
from hpo.tasks import get_task  # noqa: E402
from hpo.train import fit  # noqa: E402
from models.crystal_text import CrystalTextConfig, CrystalTextTask, parse_fusion_layers  # noqa: E402
from models.crystal_text.graphs import build_crystal_graph, periodic_pairs  # noqa: E402
from models.crystal_text.model import STAGES  # noqa: E402
from models.crystal_text.text import describe, tokenize  # noqa: E402

TINY = CrystalTextTask.presets["tiny"]


def _graph(atoms, **kw):
    return build_crystal_graph(atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc, **kw)


def _cos_counts(g) -> dict[float, int]:
    values, counts = np.unique(np.round(g.lg_cos, 4), return_counts=True)
    return {float(v): int(c) for v, c in zip(values, counts)}


def _task(spec: dict, target="y", cache=None) -> CrystalTextTask:
    return CrystalTextTask(CrystalTextTask.DatasetSpec.model_validate(spec), target, cache or DataCache(None))


@pytest.fixture(scope="module")
def tiny_splits():
    task = _task({"format": "synthetic", "n_samples": 24, "seed": 1})
    _, _, data_cfg = CrystalTextTask.split_config(TINY)
    return task, task.load(data_cfg)


def _batch(task, splits, n=6):
    return next(iter(task.loader(splits, "train", n, shuffle=False)))


# ------------------------------------------------------------------------------------------- graphs
def test_simple_cubic_neighbours_and_ties():
    sc = bulk("Po", "sc", a=3.0)
    g = _graph(sc, cutoff=8.0, max_neighbors=6)
    assert g.edge_index.shape == (2, 6)
    np.testing.assert_allclose(g.distances, 3.0, atol=1e-6)
    assert sorted(map(tuple, g.edge_shift.tolist())) == sorted(
        [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    )
    # 12 nearest: the 12th neighbour (3*sqrt2) is tied with 11 others -> all 18 kept (ALIGNN's rule)
    g12 = _graph(sc, cutoff=8.0, max_neighbors=12)
    d = np.sort(g12.distances)
    assert len(d) == 18
    np.testing.assert_allclose(d[:6], 3.0, atol=1e-6)
    np.testing.assert_allclose(d[6:], 3.0 * math.sqrt(2), atol=1e-6)


def test_fcc_neighbours_primitive_and_conventional():
    prim = _graph(bulk("Cu", "fcc", a=4.0), cutoff=8.0, max_neighbors=12)
    assert prim.edge_index.shape == (2, 12)
    np.testing.assert_allclose(prim.distances, 4.0 / math.sqrt(2), atol=1e-6)
    conv = _graph(bulk("Cu", "fcc", a=4.0, cubic=True), cutoff=8.0, max_neighbors=12)
    assert conv.edge_index.shape == (2, 48)
    np.testing.assert_allclose(conv.distances, 4.0 / math.sqrt(2), atol=1e-6)
    assert np.bincount(conv.edge_index[0]).tolist() == [12] * 4
    assert np.bincount(conv.edge_index[1]).tolist() == [12] * 4


def test_edges_are_symmetric_and_vectors_match_positions():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    atoms.positions += 0.05  # off lattice points: wrapping must not change vectors
    g = _graph(atoms, cutoff=6.0, max_neighbors=8)
    src, dst = g.edge_index
    expected = atoms.positions[dst] - atoms.positions[src] + g.edge_shift @ np.asarray(atoms.cell)
    np.testing.assert_allclose(g.edge_vec, expected, atol=1e-5)
    forward = set(zip(src.tolist(), dst.tolist(), map(tuple, g.edge_shift.tolist())))
    backward = set(zip(dst.tolist(), src.tolist(), map(tuple, (-g.edge_shift).tolist())))
    assert forward == backward


def test_sparse_structure_grows_cutoff():
    g = _graph(bulk("Po", "sc", a=10.0), cutoff=8.0, max_neighbors=6)
    assert g.edge_index.shape == (2, 6)
    assert g.cutoff > 8.0
    np.testing.assert_allclose(g.distances, 10.0, atol=1e-6)


def test_every_atom_gets_neighbours_in_a_sparse_random_cell():
    rng = np.random.default_rng(3)
    cell = np.diag([20.0, 3.0, 25.0])
    atoms = Atoms("CO2", positions=rng.random((3, 3)) @ cell, cell=cell, pbc=True)
    g = _graph(atoms, cutoff=4.0, max_neighbors=12)
    assert np.bincount(g.edge_index[0], minlength=3).min() >= 12


def test_periodic_pairs_match_ase_neighbor_list():
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 6))
        cell = np.diag(rng.uniform(2.5, 6.0, 3)) + rng.normal(0, 0.7, (3, 3))
        pos = rng.uniform(-0.5, 1.5, (n, 3)) @ cell
        pbc = rng.random(3) < 0.7 if trial % 2 else np.ones(3, bool)
        r = float(rng.uniform(3.0, 7.0))
        a = neighbor_list("ijS", Atoms(numbers=[6] * n, positions=pos, cell=cell, pbc=pbc), r)
        b = periodic_pairs(pos, cell, pbc, r)
        key = lambda i, j, S: sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))  # noqa: E731
        assert key(*a) == key(b[0], b[1], b[4])


def test_line_graph_angles_simple_cubic_and_fcc():
    sc = _graph(bulk("Po", "sc", a=3.0), cutoff=8.0, max_neighbors=6)
    # 6 bonds in x 6 bonds out, minus the 6 reverse pairs: 24 right angles and 6 straight ones
    assert _cos_counts(sc) == {-1.0: 6, 0.0: 24}
    fcc = _graph(bulk("Cu", "fcc", a=4.0), cutoff=8.0, max_neighbors=12)
    # per incoming bond, the 11 others: 4 at 60 deg, 2 at 90, 4 at 120, 1 at 180
    assert _cos_counts(fcc) == {-1.0: 12, -0.5: 48, 0.0: 24, 0.5: 48}
    e1, e2 = fcc.lg_index
    assert (fcc.edge_index[1][e1] == fcc.edge_index[0][e2]).all()


# --------------------------------------------------------------------------------------------- text
def test_generated_description():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    g = _graph(atoms)
    text = describe(atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc, g.edge_index, g.distances)
    tokens = tokenize(text)
    for word in ("nacl", "cubic", "fm-3m", "225", "6-coordinate", "cl", "na", "2.8"):
        assert word in tokens, (word, text)


def test_vocabulary_comes_from_training_descriptions_only(tiny_splits):
    task, splits = tiny_splits
    train_desc = [d for d in _descriptions(task, splits, "train")]
    train_tokens = {t for d in train_desc for t in tokenize(d)}
    vocab = splits.info["vocab"]
    assert set(vocab[4:]) <= train_tokens
    assert vocab[:4] == ["<pad>", "<unk>", "<cls>", "<mask>"]


def _descriptions(task, splits, part):
    structures = next(v for k, v in task.cache._memory.items() if k.startswith("crystal_text/structures"))
    return [structures["descriptions"][int(d.sample)] for d in splits[part]]


# ---------------------------------------------------------------------------------------- the model
FUSION_CASES = list(itertools.product(
    [None, "plain", "gated"],  # global cross-modal attention
    [False, True],  # fine-grained attention
    [None, "2", "1,2", "2,3", "1,2,3"],  # middle fusion
))


@pytest.mark.parametrize("cross,fine,middle", FUSION_CASES)
def test_every_fusion_combination_trains(tiny_splits, cross, fine, middle):
    task, splits = tiny_splits
    _, cfg, _ = CrystalTextTask.split_config({
        **TINY,
        "alignn_layers": 2,
        "gcn_layers": 1,
        "use_cross_modal_attention": cross is not None,
        "cross_modal_gated": cross == "gated",
        "use_fine_grained_attention": fine,
        "use_middle_fusion": middle is not None,
        "middle_fusion_layers": middle or "2",
    })
    torch.manual_seed(0)
    model = task.build_model(cfg, splits)
    model.train()
    out = task.step(model, _batch(task, splits), train=True)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert len(model.middle_fusion) == (len(middle.split(",")) if middle else 0)


@pytest.mark.parametrize("layers", ["0", "4", "2,5", "a", "", "1;2"])
def test_bad_middle_fusion_layers_raise_a_clear_error(layers):
    with pytest.raises(ValueError, match="middle_fusion_layers"):
        CrystalTextConfig(alignn_layers=2, gcn_layers=1, middle_fusion_layers=layers)
    with pytest.raises(ValueError, match="middle_fusion_layers"):
        parse_fusion_layers(layers, 3)
    CrystalTextConfig(alignn_layers=2, gcn_layers=1, use_middle_fusion=False, middle_fusion_layers=layers)  # unused: fine


def test_parse_fusion_layers():
    assert parse_fusion_layers("2", 8) == (2,)
    assert parse_fusion_layers(" 3, 1,2 ", 3) == (1, 2, 3)


def test_heads_must_divide_widths():
    with pytest.raises(ValueError, match="cross_modal_hidden_dim must be divisible by cross_modal_num_heads"):
        CrystalTextConfig(cross_modal_hidden_dim=30, cross_modal_num_heads=4)
    CrystalTextConfig(cross_modal_hidden_dim=30, cross_modal_num_heads=4, use_cross_modal_attention=False)


def _model(task, splits, **over):
    _, cfg, _ = CrystalTextTask.split_config({**TINY, **over})
    torch.manual_seed(0)
    return task.build_model(cfg, splits).eval()


def test_text_deleted_forward(tiny_splits):
    task, splits = tiny_splits
    model = _model(task, splits)
    batch = _batch(task, splits)
    with torch.no_grad():
        full = model(batch)
        deleted = model(batch, text_deleted=True)
        model.text_deleted = True  # the attribute does the same, for analyses that call task.step
        attr = task.step(model, batch, train=False).pred
        model.text_deleted = False
        scrambled = batch.clone()
        noise = torch.randint(4, len(splits.info["vocab"]), batch.token_ids.shape)
        scrambled.token_ids = torch.where(batch.token_ids == 2, batch.token_ids, noise)  # [CLS] kept, words replaced
        deleted_scrambled = model(scrambled, text_deleted=True)
    assert torch.isfinite(deleted).all()
    assert not torch.allclose(full, deleted)
    torch.testing.assert_close(model.destandardize(deleted), attr)
    torch.testing.assert_close(deleted, deleted_scrambled)  # the deleted text no longer matters


def test_return_stages_shapes(tiny_splits):
    task, splits = tiny_splits
    batch = _batch(task, splits, n=5)
    for over in ({}, {"use_cross_modal_attention": False, "use_fine_grained_attention": False}):
        model = _model(task, splits, **over)
        with torch.no_grad():
            out, stages = model(batch, return_stages=True)
        assert out.shape == (5, 1)
        assert tuple(stages) == STAGES
        h, d = TINY["hidden_features"], TINY["text_hidden_features"]
        widths = {"graph": h, "text": d, "text_fine": d, "text_final": d, "fused": h}
        for name, t in stages.items():
            assert t.shape == (5, widths[name]), name
    with torch.no_grad():
        _, plain = model(batch, return_stages=True)
    torch.testing.assert_close(plain["text_final"], plain["text"])  # both fusion blocks off


def test_augmentations_and_contrastive_loss_train(tiny_splits):
    task, splits = tiny_splits
    over = {"lattice_perturbation_std": 0.02, "text_deletion_prob": 0.2, "text_mask_prob": 0.2, "mixup_alpha": 0.2,
            "use_contrastive_loss": True, "contrastive_weight": 0.1, "contrastive_temperature": 0.1}
    model = _model(task, splits, **over).train()
    batch = _batch(task, splits)
    out = task.step(model, batch, train=True)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.graph_projection.weight.grad is not None
    # evaluation applies no augmentation: two eval steps agree
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.step(model, batch, train=False).pred, task.step(model, batch, train=False).pred)


def test_zero_strain_reproduces_cached_geometry(tiny_splits):
    task, splits = tiny_splits
    model = _model(task, splits)
    batch = _batch(task, splits)
    model.cfg = dataclasses.replace(model.cfg, lattice_perturbation_std=0.0)
    vec, cos = model._strain(batch.edge_vec, batch.edge_index, batch.lg_edge_index, batch.batch, batch.num_graphs)
    torch.testing.assert_close(cos, batch.lg_cos, atol=1e-5, rtol=0)


def test_batched_line_graph_links_bonds_that_meet(tiny_splits):
    task, splits = tiny_splits
    batch = _batch(task, splits, n=8)
    e1, e2 = batch.lg_edge_index
    assert int(batch.lg_edge_index.max()) < batch.edge_index.size(1)
    assert torch.equal(batch.edge_index[1][e1], batch.edge_index[0][e2])


def test_param_groups_cover_every_parameter_once(tiny_splits):
    task, splits = tiny_splits
    model = _model(task, splits, use_contrastive_loss=True)
    groups = task.group_parameters(model)
    assert tuple(groups) == CrystalTextTask.param_groups
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(groups[g] for g in groups)


def test_predictions_are_destandardised(tiny_splits):
    task, splits = tiny_splits
    model = _model(task, splits)
    batch = _batch(task, splits)
    mean, std = splits.info["target_mean"], splits.info["target_std"]
    assert abs(model.target_mean.item() - mean) < 1e-6 and abs(model.target_std.item() - std) < 1e-6
    with torch.no_grad():
        out = task.step(model, batch, train=False)
        raw = model(batch)
    torch.testing.assert_close(out.pred, raw * std + mean)
    torch.testing.assert_close(out.target, batch.y)
    extras = task.checkpoint_extras(splits)
    assert extras["target_scaler"] == {"mean": mean, "std": std}
    assert extras["vocab"] == splits.info["vocab"]


# ------------------------------------------------------------------------------------------ data
def _write_poscars(folder, n=8):
    import ase.io

    rng = np.random.default_rng(0)
    names = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.5 + 0.1 * k) if k % 2 else bulk("NaCl", "rocksalt", a=5.4 + 0.1 * k)
        atoms.rattle(0.01, seed=k)
        name = f"POSCAR-{k}.vasp"
        ase.io.write(folder / name, atoms, format="vasp")
        names.append((name, float(rng.normal())))
    return names


def test_jarvis_json_skips_missing_targets(tmp_path, caplog):
    records = []
    for k in range(10):
        atoms = bulk("Si", "diamond", a=5.3 + 0.05 * k)
        cart = k % 2 == 0
        coords = atoms.positions if cart else atoms.get_scaled_positions()
        records.append({
            "jid": f"JVASP-{k}",
            "atoms": {"lattice_mat": np.asarray(atoms.cell).tolist(), "coords": coords.tolist(),
                      "elements": atoms.get_chemical_symbols(), "cartesian": cart},
            "optb88vdw_bandgap": 1.0 + 0.1 * k,
            "hse_gap": "na" if k < 3 else (None if k == 3 else " NA " if k == 4 else 1.5 + 0.1 * k),
        })
    records[0]["description"] = "Si is a semiconductor ."
    path = tmp_path / "dft_3d.json"
    path.write_text(json.dumps(records))
    spec = {"format": "jarvis_json", "path": str(path)}
    task = _task(spec, "hse_gap")
    assert task.check() == []
    with caplog.at_level("WARNING"):
        splits = task.load(CrystalTextTask.DataConfig(max_neighbors=4))
    assert sum(splits.info["sizes"].values()) == 5
    assert splits.info["stats"]["skipped_missing_target"] == 5
    assert "skipped 5 of 10 records" in caplog.text
    # only "na" and null are documented as missing: a NaN target is an error naming the record, never skipped
    records[4]["hse_gap"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(records))  # NaN written as JSON NaN
    with pytest.raises(DataError, match=r"nan.json: record 4 \(id JVASP-4\): the target 'hse_gap' must be a finite number"):
        _task({"format": "jarvis_json", "path": str(tmp_path / "nan.json")}, "hse_gap").load(CrystalTextTask.DataConfig(max_neighbors=4))
    full = _task(spec, "optb88vdw_bandgap").load(CrystalTextTask.DataConfig(max_neighbors=4))
    assert sum(full.info["sizes"].values()) == 10
    assert full.info["stats"]["descriptions_from_data"] == 1
    # an unknown target names the closest field
    problems = _task(spec, "optb88vdw_bandgp").check()
    assert len(problems) == 1 and problems[0].path == "task.target"
    assert "optb88vdw_bandgap" in problems[0].message and "hse_gap" in problems[0].message


def test_alignn_folder(tmp_path):
    rows = _write_poscars(tmp_path)
    rows[2] = (rows[2][0], "na")
    with open(tmp_path / "id_prop.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    task = _task({"format": "alignn_folder", "path": str(tmp_path)}, "band_gap")
    assert task.check() == []
    splits = task.load(CrystalTextTask.DataConfig(max_neighbors=6))
    assert sum(splits.info["sizes"].values()) == 7
    assert splits.info["sizes"]["val"] == 1 and splits.info["sizes"]["test"] == 1
    missing = _task({"format": "alignn_folder", "path": str(tmp_path / "nope")}, "band_gap").check()
    assert [p.path for p in missing] == ["path"]


def test_ase_files_with_header_and_relative_paths(tmp_path):
    import ase.io

    (tmp_path / "cifs").mkdir()
    with open(tmp_path / "targets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "formation_energy", "other"])
        for k in range(6):
            ase.io.write(tmp_path / "cifs" / f"s{k}.cif", bulk("Al", "fcc", a=3.9 + 0.05 * k))
            w.writerow([f"s{k}", -0.1 * k, 0])
    spec = CrystalTextTask.DatasetSpec.model_validate(
        {"format": "ase_files", "files": "cifs/*.cif", "targets": "targets.csv"}, context={"base_dir": tmp_path}
    )
    assert spec.files == tmp_path / "cifs" / "*.cif"
    task = CrystalTextTask(spec, "formation_energy", DataCache(None))
    assert task.check() == []
    splits = task.load(CrystalTextTask.DataConfig(max_neighbors=6))
    assert sum(splits.info["sizes"].values()) == 6
    bad = CrystalTextTask(spec, "formation_enrgy", DataCache(None)).check()
    assert bad and "formation_energy" in bad[0].message


def test_dcdft_and_synthetic():
    task = _task({"format": "dcdft"}, "wien2k_B")
    assert task.check() == []
    splits = task.load(CrystalTextTask.DataConfig(max_neighbors=8))
    assert splits.info["sizes"] == {"train": 57, "val": 7, "test": 7}
    problems = _task({"format": "dcdft"}, "wien2k_b").check()
    assert problems and "wien2k_B" in problems[0].message
    syn = _task({"format": "synthetic", "n_samples": 10, "max_samples": 5}).load(CrystalTextTask.DataConfig())
    assert sum(syn.info["sizes"].values()) == 5


def test_dataset_spec_validation():
    Spec = CrystalTextTask.DatasetSpec
    with pytest.raises(ValidationError):
        Spec.model_validate({"format": "pdb"})
    with pytest.raises(ValidationError):
        Spec.model_validate({"format": "dcdft", "val_fraction": 0.5, "test_fraction": 0.5})
    with pytest.raises(ValidationError):
        Spec.model_validate({"format": "dcdft", "pth": "x"})
    assert Spec.model_validate({"format": "jarvis_json", "path": "d.json"}, context={"base_dir": "/data"}).path.as_posix() == "/data/d.json"


def test_same_split_for_every_load(tmp_path):
    a = _task({"format": "synthetic", "n_samples": 20}).load(CrystalTextTask.DataConfig())
    b = _task({"format": "synthetic", "n_samples": 20}).load(CrystalTextTask.DataConfig(max_neighbors=6))
    assert a.info["ids"] == b.info["ids"]


def test_disk_cache_hit_and_miss(tmp_path):
    (tmp_path / "data").mkdir()
    rows = _write_poscars(tmp_path / "data")
    with open(tmp_path / "data" / "id_prop.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    spec = {"format": "alignn_folder", "path": str(tmp_path / "data")}
    data_cfg = CrystalTextTask.DataConfig(max_neighbors=6)
    first = DataCache(tmp_path / "cache")
    _task(spec, "t", first).load(data_cfg)
    assert first.stats.misses == 2 and first.stats.disk_hits == 0
    again = DataCache(tmp_path / "cache")  # a new worker process: nothing in memory
    splits = _task(spec, "t", again).load(data_cfg)
    assert again.stats.misses == 0 and again.stats.disk_hits == 2
    assert sum(splits.info["sizes"].values()) == 8
    other = DataCache(tmp_path / "cache")
    _task(spec, "t", other).load(dataclasses.replace(data_cfg, cutoff=6.0))
    assert other.stats.misses == 2  # new graphs, and the split entry keyed on them


# -------------------------------------------------------------------------------------- training
def test_registered_and_tiny_preset_is_valid():
    assert get_task("crystal_text") is CrystalTextTask
    train_cfg, model_cfg, data_cfg = CrystalTextTask.split_config(TINY)
    assert model_cfg.hidden_features == 16 and data_cfg.max_neighbors == 8 and train_cfg.epochs == 3


def _fit(task, splits, **over):
    train_cfg, model_cfg, _ = CrystalTextTask.split_config({**TINY, **over})
    return fit(task, splits, train_cfg, model_cfg, keep_best_state=False)


def test_fit_reduces_training_loss(tiny_splits):
    task, splits = tiny_splits
    res = _fit(task, splits, epochs=6, scheduler="none", lr=3.0e-3)
    losses = res.curves["train_loss"]
    assert res.epochs_run == 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert set(res.best) >= {"val_mae", "val_rmse", "val_r2", "train_mae"}


def test_fit_is_reproducible(tiny_splits):
    task, splits = tiny_splits
    over = {"epochs": 2, "text_deletion_prob": 0.1, "lattice_perturbation_std": 0.02}
    a, b = _fit(task, splits, **over), _fit(task, splits, **over)
    drop = {"epoch_seconds"}
    assert {k: v for k, v in a.curves.items() if k not in drop} == {k: v for k, v in b.curves.items() if k not in drop}


# ---------------------------------------------------------------------------------------- YAML files
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
STUDIES = ["hse_bandgap.yaml", "optb88vdw_bandgap.yaml", "quickstart.yaml", "smoke/crystal_text.yaml"]


@pytest.mark.parametrize("name", STUDIES)
def test_studies_validate_with_the_study_loader(name):
    spec = pytest.importorskip("hpo.spec")
    study = spec.load_study(ROOT / "studies" / name, check_data=name in ("quickstart.yaml", "smoke/crystal_text.yaml"))
    assert study.task_cls is CrystalTextTask
    assert study.space.baselines  # every baseline compiled: known keys, values in range, valid configs
    for b in study.space.baselines.values():
        CrystalTextTask.split_config(study.space.resolve(b.params, b.overrides))


def test_seed_studies_carry_their_plans():
    spec = pytest.importorskip("hpo.spec")
    hse = spec.load_study(ROOT / "studies" / "hse_bandgap.yaml", check_data=False).space.baselines
    assert {"current", "plan1_regularisation", "plan2_no_middle_fusion", "plan3_smaller_model", "plan4_lower_lr_cosine",
            "combined_best_guess"} <= set(hse)
    assert hse["plan2_no_middle_fusion"].params["use_middle_fusion"] is False
    assert not any(k.startswith("middle_fusion_") for k in hse["plan2_no_middle_fusion"].params)
    optb = spec.load_study(ROOT / "studies" / "optb88vdw_bandgap.yaml", check_data=False).space.baselines
    assert "current" in optb and len(optb) >= 5
