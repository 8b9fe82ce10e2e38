"""The ``drug_target`` task: DeepBindNet on drug–target affinity data (tuning plan 004)."""

from __future__ import annotations

from typing import Any

from hpo.tasks import Splits, StepOutput, Task, register_task

from models.drug_target.config import DeepBindConfig, DTADataConfig
from models.drug_target.data import DTADataset, PairLoader, PairSet, build
from models.drug_target.metrics import METRICS, regression_metrics


@register_task("drug_target")
class DrugTargetTask(Task):
    """Affinity regression from a SMILES string and an amino-acid sequence.

    Batches are dicts ``drug`` (B, Ld), ``protein`` (B, Lp), ``y`` (B,). The loss is the MSE of the
    standardised target (the scaler is fitted on the training split); predictions, targets and metrics
    are in target units (pKd with ``pkd: true``).
    """

    ModelConfig = DeepBindConfig
    DataConfig = DTADataConfig
    DatasetSpec = DTADataset
    metrics = METRICS
    default_objective = "val_rmse"
    param_groups = ("encoder", "fusion", "head")
    needs_target = False  # CSV: names the affinity column (default "affinity"); other formats: leave it out
    analyses = {"compare": "hpo.analysis.compare:compare_analysis"}
    #: pick and order training pairs only: applied after the cached data are loaded, not part of their key
    fidelity_knobs = ("batch_proteins", "train_subsample")
    presets = {
        "tiny": {
            "hidden_dim": 16, "feature_dim": 32, "fusion_heads": 2, "fusion_layers": 1, "embed_dim": 16,
            "encoder_layers": 1, "encoder_heads": 2, "dropout_rate": 0.0,
            "max_smiles_len": 40, "max_protein_len": 120, "epochs": 3, "batch_size": 32, "lr": 3.0e-3,
        },
    }

    def load(self, data_cfg: DTADataConfig) -> Splits:
        spec = self.dataset
        key = self.cache_key(data_cfg, dataset=spec.settings(), digest=self.cache.content_digest(spec.source_files()),
                             target=self.target)
        data = self.cache.get_or_build("drug_target", key, lambda: build(spec, data_cfg, self.target))
        parts = {name: PairSet(data.tables, *data.parts[name]) for name in Splits.NAMES}
        if data_cfg.train_subsample < 1.0:
            import numpy as np

            tr = parts["train"]
            rng = np.random.default_rng(getattr(spec, "split_seed", 0))
            keep = np.sort(rng.permutation(len(tr))[: max(1, round(len(tr) * data_cfg.train_subsample))])
            parts["train"] = PairSet(tr.tables, tr.drug_idx[keep], tr.protein_idx[keep], tr.y[keep])
        return Splits(parts["train"], parts["val"], parts["test"], info={**data.info, "batch_proteins": data_cfg.batch_proteins})

    def loader(self, splits: Splits, split: str, batch_size: int, *, shuffle: bool, seed: int = 0) -> PairLoader:
        group = splits.info.get("batch_proteins", 0) if split == "train" else 0
        return PairLoader(splits[split], batch_size, shuffle=shuffle, seed=seed, batch_proteins=group)

    def build_model(self, model_cfg: DeepBindConfig, splits: Splits):
        from models.drug_target.model import DeepBindNet

        info = splits.info
        return DeepBindNet(
            model_cfg,
            smiles_vocab_size=info["smiles_vocab_size"],
            protein_vocab_size=info["protein_vocab_size"],
            max_smiles_len=info["max_smiles_len"],
            max_protein_len=info["max_protein_len"],
            target_mean=info["target_mean"],
            target_std=info["target_std"],
        )

    def step(self, model, batch: dict, *, train: bool) -> StepOutput:
        import torch.nn.functional as F

        y = batch["y"]
        # (B,) standardised; a batch without index vectors pairs row i with row i
        z = model(batch["drug"], batch["protein"], batch.get("drug_index"), batch.get("protein_index"))
        loss = F.mse_loss(z.float(), model.scale(y))
        return StepOutput(loss=loss, pred=model.unscale(z.detach().float()), target=y, n=len(y))

    def compute_metrics(self, pred, target) -> dict[str, float]:
        return regression_metrics(target, pred)

    def checkpoint_extras(self, splits: Splits) -> dict[str, Any]:
        """The target scaler and the token vocabularies: what predicting on new pairs needs."""
        info = splits.info
        train: PairSet = splits["train"]
        return {
            "target_scaler": {"mean": info["target_mean"], "std": info["target_std"], "fitted_on": "train"},
            "target_units": info["target_units"],
            "smiles_tokenizer": info["smiles_tokenizer"],
            "smiles_vocab": list(train.tables.smiles_vocab),
            "protein_vocab": list(train.tables.protein_vocab),
            "max_smiles_len": info["max_smiles_len"],
            "max_protein_len": info["max_protein_len"],
        }
