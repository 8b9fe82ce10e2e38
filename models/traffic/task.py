"""The ``traffic`` task: multi-step forecasting of sensor readings on a road network (seed 002).

Target. The task forecasts the one signal a sensor reports: speed for METR-LA / PEMS-BAY / Los-loop
(``dcrnn_h5``, ``dcrnn_npz``, ``csv``, ``synthetic`` hold a single signal, so a ``target`` there is
reported by :meth:`TrafficTask.check`). Only ``pems_npz`` files hold several channels; there
``target`` names the one to forecast (``flow`` - the default, as in ASTGCN / STSGCN -, ``occupancy``
or ``speed``). Hence ``needs_target = False``.

Metrics (see :mod:`models.traffic.metrics`): masked ``mae`` (primary, the default objective ``val_mae``),
``rmse``, ``mape`` (percent), each also per horizon 3 / 6 / 12 steps (``mae_h3`` ...). A horizon
longer than ``output_len`` has no metric: ``compute_metrics`` leaves those names out, so only
objectives on horizons within ``output_len`` can be asked for.

Loss: masked MAE (or Huber / MSE, ``loss``) in data units, computed after mapping the model's
scaled outputs back with the training scaler; missing targets (0) are ignored.

Data are read, split, scaled and windowed once per (file content, dataset settings, data config)
and cached (:class:`hpo.data.cache.DataCache`); a trial only builds the model and its loaders.
"""

from __future__ import annotations

from typing import Any

from hpo.errors import DataError, Problem
from hpo.tasks import Splits, StepOutput, Task, register_task
from models.traffic.config import HORIZONS, TrafficConfig, TrafficDataConfig
from models.traffic.datasets import TrafficDataset

#: bump when the cached layout of loaded data changes
DATA_VERSION = 1


def _metric_directions() -> dict[str, str]:
    out = {m: "minimize" for m in ("mae", "rmse", "mape")}
    for h in HORIZONS:
        out.update({f"{m}_h{h}": "minimize" for m in ("mae", "rmse", "mape")})
    return out


@register_task("traffic")
class TrafficTask(Task):
    ModelConfig = TrafficConfig
    DataConfig = TrafficDataConfig
    DatasetSpec = TrafficDataset
    metrics = _metric_directions()
    default_objective = "val_mae"
    param_groups = ("encoder", "decoder", "head")
    needs_target = False
    analyses = {"compare": "hpo.analysis.compare:compare_analysis"}
    #: picks training windows only: applied to the cached splits, not part of their key
    fidelity_knobs = ("train_stride",)
    presets = {
        # one epoch (train + val) on the smoke study's synthetic data (8 sensors x 4 days at 15-min steps,
        # 246 training windows): ~0.9 s on one thread of a 2-core machine shared at load ~4.5 (less than
        # half a core for us), so well under a second on an idle core
        "tiny": {
            "embed_dim": 16, "num_heads": 2, "mlp_ratio": 2.0,
            "temporal_depth_1": 1, "spatial_depth_1": 1, "temporal_depth_2": 1, "spatial_depth_2": 1,
            "fusion_heads": 2, "dropout": 0.0,
            "epochs": 3, "batch_size": 32, "lr": 3e-3, "scheduler": "none",
        },
    }

    # -- data -----------------------------------------------------------------------------------
    def check(self) -> list[Problem]:
        from models.traffic import data as D

        spec = self.dataset
        problems: list[Problem] = []
        if self.target is not None and spec.format != "pems_npz":
            problems.append(Problem("task.target", f"must be left out for format {spec.format}: its files hold one "
                                    "signal per sensor (only pems_npz has channels to choose)", self.target))
        for field, path in spec.path_fields().items():
            if not path.exists():
                problems.append(Problem(f"task.dataset.{field.split('/')[0]}", "file does not exist", str(path)))
        if problems or spec.format == "synthetic":
            return problems
        try:
            n_data, ids = self._peek_data(spec)
            if spec.format == "pems_npz":
                D.pems_channel(spec, self.target, D.pems_peek(spec)[2])
        except (DataError, OSError, ValueError, KeyError) as e:
            path = "task.target" if "target must be" in str(e) else "task.dataset"
            return [Problem(path, str(e), has_got=False)]
        if getattr(spec, "adj", None) is None:
            return problems
        try:
            n_adj, adj_ids = D.adjacency_peek(spec)
        except (DataError, OSError, ValueError, KeyError) as e:
            return [Problem("task.dataset.adj", str(e), has_got=False)]
        if D.adjacency_format(spec.adj, spec.adj_format) == "distances_csv":
            if ids is not None and not set(ids) & set(adj_ids):  # a sensor may have no listed distance
                problems.append(Problem("task.dataset.adj", "must name the data's sensors (no listed sensor is one "
                                        f"of them; the data's start {', '.join(ids[:3])})", str(spec.adj)))
        elif ids is not None and adj_ids is not None:
            known = set(adj_ids)
            missing = [s for s in ids if s not in known]
            if missing:
                problems.append(Problem("task.dataset.adj", f"must list every sensor of the data; {len(missing)} of "
                                        f"{len(ids)} are missing (first: {', '.join(missing[:3])})", str(spec.adj)))
        elif n_adj != n_data:
            problems.append(Problem("task.dataset.adj", f"{spec.adj} must have one row per sensor ({n_data} in the data)",
                                    f"{n_adj} x {n_adj}"))
        return problems

    @staticmethod
    def _peek_data(spec) -> tuple[int, list[str] | None]:
        from models.traffic import data as D

        if spec.format == "dcrnn_h5":
            _, n, ids = D.h5_peek(spec.path, spec.key)
            return n, ids
        if spec.format == "csv":
            return D.csv_peek(spec)
        if spec.format == "pems_npz":
            n = D.pems_peek(spec)[1]
            return n, D.pems_ids(spec, n)
        shapes = {name: D.npz_shapes(spec.dir / name) for name in spec.SPLIT_FILES}
        nodes: dict[str, int] = {}
        for name, s in shapes.items():
            if "x" not in s or "y" not in s or len(s["x"]) != 4 or len(s["y"]) != 4:
                got = ", ".join(f"{k} {v}" for k, v in s.items()) or "no arrays"
                raise DataError(f"{spec.dir / name}: arrays x, y: must be (samples, steps, nodes, features), but got {got}")
            if s["x"][2] != s["y"][2]:
                raise DataError(f"{spec.dir / name}: arrays x, y: must have the same nodes, but got {s['x'][2]} and {s['y'][2]}")
            nodes[name] = s["x"][2]
        first = spec.SPLIT_FILES[0]
        for name, n in nodes.items():
            if n != nodes[first]:
                raise DataError(f"{spec.dir / name}: array x: must have {first}'s {nodes[first]} nodes, but got {n}")
        return nodes[first], None

    def load(self, data_cfg: TrafficDataConfig) -> Splits:
        from models.traffic.data import load_splits

        spec = self.dataset
        key = self.cache_key(data_cfg, version=DATA_VERSION, dataset=spec.settings(),
                             digest=self.cache.content_digest(spec.source_files()),
                             target=self.target if spec.format == "pems_npz" else None)
        splits = self.cache.get_or_build("traffic", key, lambda: load_splits(spec, data_cfg, self.target))
        if data_cfg.train_stride == 1:
            return splits
        import copy

        strided = copy.copy(splits)  # the same parts (shared, read-only); its own info and test lock
        strided.info = {**splits.info, "train_stride": data_cfg.train_stride}
        return strided

    def loader(self, splits: Splits, split: str, batch_size: int, *, shuffle: bool, seed: int = 0):
        from models.traffic.data import WindowLoader

        stride = splits.info.get("train_stride", 1) if split == "train" else 1
        return WindowLoader(splits[split], batch_size, shuffle=shuffle, seed=seed, stride=stride)

    # -- model ----------------------------------------------------------------------------------
    def build_model(self, model_cfg: TrafficConfig, splits: Splits):
        from models.traffic.model import TrafficTransformer

        i = splits.info
        return TrafficTransformer(model_cfg, n_nodes=i["n_nodes"], in_features=i["in_features"],
                                  time_features=i["time_features"], input_len=i["input_len"],
                                  output_len=i["output_len"], adj=i["adj"], scaler_mean=i["scaler_mean"],
                                  scaler_std=i["scaler_std"])

    def step(self, model, batch: dict, *, train: bool) -> StepOutput:
        from models.traffic.augment import augment
        from models.traffic.metrics import masked_loss

        x, y, tf = batch["x"], batch["y"], batch["tf"]
        cfg = model.cfg
        if train:
            x, y, tf = augment(x, y, tf, cfg)
        pred = model.unscale(model(x, tf))  # (B, H, N) data units
        loss = masked_loss(pred, y, cfg.loss, cfg.huber_delta)
        return StepOutput(loss=loss, pred=pred.detach(), target=y, n=y.shape[0])

    def compute_metrics(self, pred, target) -> dict[str, float]:
        from models.traffic.metrics import masked_metrics

        return masked_metrics(pred, target)

    def compare_views(self, pred, target) -> list[dict[str, Any]]:
        """``hpo compare``: the masked MAE at every forecast step, and sensor 0's series over the split (its
        readings and the 1-step-ahead forecasts of consecutive windows; missing readings left out)."""
        from models.traffic.metrics import observed

        if target.ndim != 3 or len(target) == 0:  # (windows, steps, sensors)
            return []
        pred, target = pred.float(), target.float()
        mask = observed(target)
        err = (pred - target.nan_to_num()).abs().where(mask, pred.new_zeros(()))
        per_step = err.sum(dim=(0, 2)) / mask.sum(dim=(0, 2)).clamp(min=1)
        seen = mask[:, 0, 0]
        steps = seen.nonzero().flatten()
        return [
            {"kind": "lines", "id": "mae-by-horizon", "title": "Masked MAE per forecast step",
             "x": list(range(1, len(per_step) + 1)), "y": per_step.double().numpy(), "x_title": "steps ahead", "y_title": "MAE"},
            {"kind": "series", "id": "sample-series", "title": "Sensor 0: readings and 1-step-ahead forecasts",
             "x": steps.tolist(), "true": target[seen, 0, 0].double().numpy(), "pred": pred[seen, 0, 0].double().numpy(),
             "x_title": "window", "y_title": "reading"},
        ]

    def checkpoint_extras(self, splits: Splits) -> dict[str, Any]:
        i = splits.info
        return {k: i[k] for k in ("sensor_ids", "scaler", "input_len", "output_len", "in_features", "time_features")} | {
            "scaler_mean": i["scaler_mean"].tolist(), "scaler_std": i["scaler_std"].tolist()}
