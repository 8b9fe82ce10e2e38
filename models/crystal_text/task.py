"""The ``crystal_text`` task: a crystal property from the periodic graph and a text description.

Data path: ``load`` reads the dataset (see :mod:`models.crystal_text.data`), builds graphs, line
graphs and descriptions once per dataset and graph settings, then the split, vocabulary and token
ids once per split and text settings (both through ``self.cache``), and turns them into PyG
``Data`` objects once per task instance. A trial only builds its model and DataLoaders.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from hpo.data.cache import data_key, fingerprint
from hpo.data.metrics import mae, r2, rmse
from hpo.tasks import Splits, StepOutput, Task, register_task
from models.crystal_text.config import CrystalDataConfig, CrystalTextConfig
from models.crystal_text.data import CrystalTextDataset
from models.crystal_text.processing import (PROCESSING_VERSION, SPLIT_FIELDS, STRUCTURE_SETTINGS, TOKEN_SETTINGS, build_split,
                                             build_structures)

logger = logging.getLogger(__name__)

#: config of the tiny preset: trains in well under a second per epoch on ~20 tiny crystals
TINY = {
    "alignn_layers": 1,
    "gcn_layers": 1,
    "hidden_features": 16,
    "embedding_features": 8,
    "edge_rbf_bins": 16,
    "angle_rbf_bins": 8,
    "text_hidden_features": 16,
    "text_layers": 1,
    "text_num_heads": 2,
    "cross_modal_hidden_dim": 16,
    "cross_modal_num_heads": 2,
    "fine_grained_hidden_dim": 16,
    "fine_grained_num_heads": 2,
    "middle_fusion_layers": "1",
    "middle_fusion_hidden_dim": 16,
    "middle_fusion_num_heads": 2,
    "cutoff": 5.0,
    "max_neighbors": 8,
    "max_text_tokens": 48,
    "epochs": 3,
    "batch_size": 8,
    "lr": 3.0e-3,
    "warmup_steps": 0,
}


@register_task("crystal_text")
class CrystalTextTask(Task):
    """Crystal graph (ALIGNN) + text fusion regression of one scalar target."""

    ModelConfig = CrystalTextConfig
    DataConfig = CrystalDataConfig
    DatasetSpec = CrystalTextDataset
    metrics = {"mae": "minimize", "rmse": "minimize", "r2": "maximize"}
    default_objective = "val_mae"
    param_groups = ("graph", "text", "fusion", "head")
    presets = {"tiny": TINY}
    analyses = {"text_deleted": "models.crystal_text.analysis:text_deleted", "cka": "models.crystal_text.analysis:cka",
                "compare": "hpo.analysis.compare:compare_analysis"}
    needs_target = True

    def __init__(self, dataset, target=None, cache=None) -> None:
        super().__init__(dataset, target, cache)
        self._splits: dict[str, Splits] = {}

    # -- data -------------------------------------------------------------------------------
    def load(self, data_cfg: CrystalDataConfig) -> Splits:
        spec = self.dataset
        skey = self.cache_key(data_cfg, fields=STRUCTURE_SETTINGS, version=PROCESSING_VERSION,
                              digest=self.cache.content_digest(spec.source_files()),
                              dataset=spec.settings(exclude=(*SPLIT_FIELDS, *_LATER_SPLIT_FIELDS)), target=self.target)
        structures = self.cache.get_or_build("crystal_text/structures", skey, lambda: build_structures(spec, self.target, data_cfg))
        split_settings = {k: getattr(spec, k) for k in SPLIT_FIELDS}
        split_settings.update({k: getattr(spec, k) for k in _LATER_SPLIT_FIELDS if getattr(spec, k, None) is not None})
        tkey = data_key(data_cfg, fields=TOKEN_SETTINGS, structures=skey, split=split_settings)
        memo = fingerprint(tkey)
        if memo not in self._splits:
            split = self.cache.get_or_build("crystal_text/split", tkey,
                                            lambda: _require_the_specs_split(structures, build_split(structures, spec, data_cfg), spec))
            _require_the_specs_split(structures, split, spec)  # an entry stored before the check is refused too
            self._splits[memo] = _make_splits(structures, split, self.target, data_cfg)
        return self._splits[memo]

    def loader(self, splits: Splits, split: str, batch_size: int, *, shuffle: bool, seed: int = 0):
        import torch
        from torch_geometric.loader import DataLoader

        g = torch.Generator().manual_seed(seed)
        return DataLoader(splits[split], batch_size=batch_size, shuffle=shuffle, generator=g, follow_batch=["token_ids"])

    # -- model ------------------------------------------------------------------------------
    def build_model(self, model_cfg: CrystalTextConfig, splits: Splits):
        from models.crystal_text.model import CrystalTextNet

        info = splits.info
        return CrystalTextNet(model_cfg, vocab_size=len(info["vocab"]), max_text_len=info["max_text_len"],
                              target_mean=info["target_mean"], target_std=info["target_std"])

    def step(self, model, batch, *, train: bool) -> StepOutput:
        import torch
        import torch.nn.functional as F

        cfg: CrystalTextConfig = model.cfg
        target = batch.y  # (B, 1)
        n = int(batch.num_graphs)
        mixup = None
        if train and cfg.mixup_alpha > 0 and n > 1:
            lam = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample())
            perm = torch.randperm(n, device=target.device)
            mixup = (perm, lam)
            target = lam * target + (1.0 - lam) * target[perm]
        contrastive = train and cfg.use_contrastive_loss and cfg.contrastive_weight > 0
        out = model(batch, augment=train, mixup=mixup, return_stages=contrastive)
        out, stages = out if contrastive else (out, None)
        scaled = model.standardize(target)
        if cfg.loss == "mse":
            loss = F.mse_loss(out, scaled)
        elif cfg.loss == "l1":
            loss = F.l1_loss(out, scaled)
        else:
            loss = F.smooth_l1_loss(out, scaled)
        if contrastive:
            loss = loss + cfg.contrastive_weight * model.contrastive_loss(stages)
        return StepOutput(loss=loss, pred=model.destandardize(out).detach(), target=target, n=n)

    def compute_metrics(self, pred, target) -> dict[str, float]:
        pred, target = pred.double(), target.double()
        return {"mae": mae(pred, target), "rmse": rmse(pred, target), "r2": r2(pred, target)}

    def checkpoint_extras(self, splits: Splits) -> dict[str, Any]:
        info = splits.info
        return {
            "target": info["target"],
            "target_scaler": {"mean": info["target_mean"], "std": info["target_std"]},
            "vocab": list(info["vocab"]),
            "data_config": dict(info["data_config"]),
        }


#: split settings newer than SPLIT_FIELDS: keyed in the split entry only when set (older keys stay valid)
_LATER_SPLIT_FIELDS = tuple(k for k in ("fold",) if k not in SPLIT_FIELDS)


def _require_the_specs_split(structures: dict, split: dict, spec: CrystalTextDataset) -> dict:
    """``split``, when the entry holds the parts the spec defines (:meth:`CrystalTextDataset.split_parts`, the
    one definition); a split kind the entry's builder does not know (``split: matbench``) is an error, never
    a silent random split (checked before the entry is stored, and on every read)."""
    if getattr(spec, "split", "random") != "matbench":
        return split
    import numpy as np

    want = spec.split_parts(structures)
    if any(not np.array_equal(np.asarray(split["parts"][k]), want[k]) for k in want):
        from hpo.errors import DataError

        raise DataError(f"{spec.label()}: task.dataset.split: matbench must give the fold's parts, but got other parts from "
                        "models.crystal_text.processing.split_parts (it must call the dataset's split_parts)")
    return split


def _make_splits(structures: dict, split: dict, target: Optional[str], data_cfg: CrystalDataConfig) -> Splits:
    """PyG Data objects for every sample of each part (one pass over the cached arrays)."""
    import numpy as np
    import torch

    from models.crystal_text.graph_data import CrystalGraphData as Data

    s = structures
    numbers = torch.from_numpy(s["numbers"].astype(np.int64))
    edge_index = torch.from_numpy(s["edge_index"].astype(np.int64))
    edge_vec = torch.from_numpy(s["edge_vec"])
    lg_index = torch.from_numpy(s["lg_index"].astype(np.int64))
    lg_cos = torch.from_numpy(s["lg_cos"])
    tokens = torch.from_numpy(split["token_ids"].astype(np.int64))
    targets = torch.from_numpy(s["targets"].astype(np.float32))
    node_ptr, edge_ptr, lg_ptr, tok_ptr = s["node_ptr"], s["edge_ptr"], s["lg_ptr"], split["token_ptr"]

    def sample(i: int):
        return Data(
            x=numbers[node_ptr[i]:node_ptr[i + 1]],
            edge_index=edge_index[:, edge_ptr[i]:edge_ptr[i + 1]],
            edge_vec=edge_vec[edge_ptr[i]:edge_ptr[i + 1]],
            lg_edge_index=lg_index[:, lg_ptr[i]:lg_ptr[i + 1]],
            lg_cos=lg_cos[lg_ptr[i]:lg_ptr[i + 1]],
            token_ids=tokens[tok_ptr[i]:tok_ptr[i + 1]],
            y=targets[i].view(1, 1),
            sample=torch.tensor([i]),
            num_nodes=int(node_ptr[i + 1] - node_ptr[i]),
        )

    parts = {name: [sample(int(i)) for i in idx] for name, idx in split["parts"].items()}
    info = {
        "target": target,
        "target_mean": split["target_mean"],
        "target_std": split["target_std"],
        "vocab": split["vocab"],
        "max_text_len": data_cfg.max_text_tokens + 1,
        "data_config": split["data_config"],
        "ids": {name: [s["ids"][int(i)] for i in idx] for name, idx in split["parts"].items()},
        "stats": dict(s["stats"]),
        "sizes": {name: len(p) for name, p in parts.items()},
    }
    logger.info("crystal_text: %d train / %d val / %d test crystals, vocabulary of %d tokens",
                len(parts["train"]), len(parts["val"]), len(parts["test"]), len(split["vocab"]))
    return Splits(parts["train"], parts["val"], parts["test"], info=info)


__all__ = ["CrystalTextTask"]
