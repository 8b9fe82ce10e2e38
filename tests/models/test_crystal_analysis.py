"""Seed-specific analyses of crystal_text: linear CKA and text-deleted robustness on real checkpoints."""

import textwrap

import optuna
import pytest
import torch

from hpo.analysis.trained import run_analysis
from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from models.crystal_text.analysis import linear_cka


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-5)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-4)  # rotation, scale, shift
    assert linear_cka(x, torch.randn(200, 16, generator=g)) < 0.2  # unrelated
    assert linear_cka(x, x[:, :4]) < linear_cka(x, x[:, :12])  # keeps more of x: more similar


@pytest.mark.slow
def test_text_deleted_and_cka_on_trained_checkpoints(tmp_path):
    study_file = tmp_path / "c.yaml"
    study_file.write_text(textwrap.dedent(f"""
        name: crystal-analysis
        task: {{family: crystal_text, target: y, dataset: {{format: synthetic, n_samples: 40, max_atoms: 3, seed: 0}}}}
        space:
          params:
            use_middle_fusion: {{type: bool}}
          fixed: {{alignn_layers: 1, gcn_layers: 1, hidden_features: 16, embedding_features: 8, text_hidden_features: 16,
                  text_layers: 1, text_num_heads: 2, cross_modal_hidden_dim: 16, cross_modal_num_heads: 2,
                  fine_grained_hidden_dim: 16, fine_grained_num_heads: 2, middle_fusion_layers: "1",
                  middle_fusion_hidden_dim: 16, middle_fusion_num_heads: 2, cutoff: 5.0, max_neighbors: 8}}
          baselines:
            middle: {{use_middle_fusion: true}}
            no_middle: {{use_middle_fusion: false}}
        objectives: [val_mae]
        pruner: {{type: none}}
        budget: {{n_trials: 2}}
        training: {{epochs: 3, batch_size: 8, lr: 3.0e-3}}
        storage: sqlite:///{tmp_path / 'c.db'}
        artifacts: {tmp_path / 'art'}
    """))
    study = load_study(study_file)
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache")))
    ostudy = optuna.load_study(study_name="crystal-analysis", storage=study.storage_url())
    td = run_analysis(ostudy, "text_deleted", [0, 1], artifacts_dir=str(tmp_path / "art"))
    assert set(td["models"]) == {"#0 [middle]", "#1 [no_middle]"} and td["split"] == "test"
    for m in td["models"].values():
        assert m["with_text"]["test_mae"] > 0 and m["text_deleted"]["test_mae"] > 0
        assert m["with_text"]["test_mae"] != m["text_deleted"]["test_mae"]  # the text matters to the model
    c = run_analysis(ostudy, "cka", [0, 1], artifacts_dir=str(tmp_path / "art"))
    assert set(c["cka"]) >= {"graph", "text_fine", "text_final", "fused"}
    assert all(0.0 <= v <= 1.0 + 1e-6 for v in c["cka"].values())
    assert "analysis_cka" in optuna.load_study(study_name="crystal-analysis", storage=study.storage_url()).user_attrs
