"""The ``face3d`` task: a Transformer from face features to a target embedding (tuning plan 003)."""

from __future__ import annotations

from typing import Any

from hpo.tasks import Splits, StepOutput, Task, register_task

from models.face3d.config import Face3DConfig, Face3DDataConfig
from models.face3d.data import Face3DDataset, FaceLoader, build


@register_task("face3d")
class Face3DTask(Task):
    """Regress a target embedding from face feature tokens (+ identity embedding).

    Batches are dicts ``tokens`` (B, T, F), ``identity`` (B, E) when the data has one, ``target``
    (B, D). Loss ``mse_weight * MSE + cosine_weight * (1 - cos)`` (model config). The primary metric is
    the mean cosine similarity, maximised. Overfitting rule of the plan (val/train *loss* > 1.5): the
    curves hold ``train_loss`` and ``val_loss`` per epoch (``train_loss`` is the running loss in train
    mode, dropout on; set ``train_eval: true`` for eval-mode ``train_cosine``/``train_mse``).
    """

    ModelConfig = Face3DConfig
    DataConfig = Face3DDataConfig
    DatasetSpec = Face3DDataset
    metrics = {"cosine": "maximize", "mse": "minimize", "mae": "minimize", "cosine_p10": "maximize"}
    default_objective = "val_cosine"
    param_groups = ("encoder", "head")
    needs_target = False
    analyses = {"compare": "hpo.analysis.compare:compare_analysis"}
    presets = {
        "tiny": {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32, "dropout": 0.0,
                 "epochs": 3, "batch_size": 32, "lr": 3.0e-3, "scheduler": "none"},
    }

    def load(self, data_cfg: Face3DDataConfig) -> Splits:
        spec = self.dataset
        key = self.cache_key(data_cfg, dataset=spec.settings(), digest=self.cache.content_digest(spec.source_files()))
        data = self.cache.get_or_build("face3d", key, lambda: build(spec, data_cfg))
        return Splits(data.parts["train"], data.parts["val"], data.parts["test"], info=data.info)

    def loader(self, splits: Splits, split: str, batch_size: int, *, shuffle: bool, seed: int = 0) -> FaceLoader:
        return FaceLoader(splits[split], batch_size, shuffle=shuffle, seed=seed)

    def build_model(self, model_cfg: Face3DConfig, splits: Splits):
        from models.face3d.model import Face3DTransformer

        info = splits.info
        return Face3DTransformer(model_cfg, n_tokens=info["n_tokens"], token_dim=info["token_dim"],
                                 identity_dim=info["identity_dim"], target_dim=info["target_dim"])

    def step(self, model, batch: dict, *, train: bool) -> StepOutput:
        from models.face3d.model import face_loss

        target = batch["target"]
        pred = model(batch["tokens"], batch.get("identity"))
        loss = face_loss(pred, target, model.cfg.mse_weight, model.cfg.cosine_weight)
        return StepOutput(loss=loss, pred=pred.detach().float(), target=target, n=len(target))

    def compute_metrics(self, pred, target) -> dict[str, float]:
        """``cosine``: mean cosine similarity; ``cosine_p10``: its 10th percentile (the worst faces);
        ``mse`` / ``mae``: over all embedding entries."""
        import torch
        import torch.nn.functional as F

        from hpo.data.metrics import mae, mse

        if len(target) == 0:
            return {name: float("nan") for name in self.metrics}
        pred, target = pred.float(), target.float()
        cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-8)
        return {
            "cosine": float(cos.mean()),
            "mse": mse(pred, target),
            "mae": mae(pred, target),
            "cosine_p10": float(torch.quantile(cos, 0.1)),
        }

    def compare_views(self, pred, target) -> list[dict[str, Any]]:
        """``hpo compare``: the distribution of the per-sample cosine similarity (what ``cosine`` averages and
        ``cosine_p10`` takes the 10th percentile of)."""
        import torch.nn.functional as F

        if len(target) == 0:
            return []
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
        return [{"kind": "histogram", "id": "cosine-distribution", "title": "Per-sample cosine similarity",
                 "x_title": "cosine(pred, target)", "values": cos.double().numpy()}]

    def checkpoint_extras(self, splits: Splits) -> dict[str, Any]:
        """The input standardisation (fitted on the training split) that new inputs need."""
        return {"input_scaler": splits.info["scaler"], "n_tokens": splits.info["n_tokens"]}
