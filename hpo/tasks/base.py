"""The task contract: a model family on a dataset with a target.

A task is everything the generic trainer needs that is not generic: how to load and split the data
(cached), how to build the model from its config, how to batch, how to compute the loss and the
metrics. The trainer (:func:`hpo.train.fit`), the Optuna objective, ``hpo train`` and ``hpo
reevaluate`` all drive tasks only through this class.

Who calls what, and when (all in the worker process, single-threaded):

1. ``TaskCls(dataset=DatasetSpec, target=str|None, cache=DataCache)`` once per worker per study.
2. ``check()`` by ``hpo validate`` / before a study starts: cheap checks that the data resolve
   (files exist, target present). Returns problems; raises nothing for user errors.
3. ``load(data_cfg)`` before each trial; must be cheap when called again with an equal config (use
   ``self.cache.get_or_build`` with a key from :meth:`Task.cache_key`, which leaves the task's
   ``fidelity_knobs`` out; the cache memoises in memory and on disk). Splits, batching, scalers and
   common metrics come from :mod:`hpo.data`.
4. ``build_model(model_cfg, splits)`` -> ``torch.nn.Module`` on CPU; the trainer moves it.
5. ``loader(splits, split, batch_size, shuffle=..., seed=...)`` -> an iterable of batches with
   ``len``. ``split`` is "train", "val" or "test"; while tuning the test split is locked and reading
   it raises :class:`hpo.errors.TestSplitAccessError`.
6. ``step(model, batch, train=...)`` -> :class:`StepOutput` for a batch already on the device. In
   train mode it may apply augmentation; ``loss`` includes any auxiliary loss.
7. ``compute_metrics(pred, target)`` on the concatenated outputs of one split -> ``{name: float}``
   with the names in ``metrics`` that apply to the config.

Config keys: the flat config of a trial is split between :class:`hpo.train.TrainConfig`, the task's
``ModelConfig`` and ``DataConfig`` (dataclasses, with distinct field names) and ``lr_<group>`` for each
name in ``param_groups``. :meth:`split_config` does it and names unknown keys.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

from hpo.errors import Problem, unknown_name_message

if TYPE_CHECKING:
    import torch

    from hpo.data.cache import DataCache
    from hpo.data.dataset import DatasetSpec
    from hpo.tasks.splits import Splits


@dataclass
class NoDataConfig:
    """For tasks whose preprocessing has no settings."""


@dataclass
class StepOutput:
    loss: "torch.Tensor"  # scalar, differentiable in train mode
    pred: Any  # detached predictions in the target's original units (tensor or tuple of tensors)
    target: Any  # matching targets
    n: int  # number of samples in the batch (weights the running loss)


class Task(abc.ABC):
    """Base class of all tasks; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    ModelConfig: ClassVar[type]
    DataConfig: ClassVar[type] = NoDataConfig
    DatasetSpec: ClassVar[type[DatasetSpec]]
    #: metric name -> "minimize" | "maximize"; the first is the primary metric (train/val gap).
    metrics: ClassVar[dict[str, str]] = {}
    default_objective: ClassVar[str] = ""
    #: names of parameter groups for layer-wise learning rates (keys ``lr_<group>``)
    param_groups: ClassVar[tuple[str, ...]] = ()
    #: small named configs (flat key -> value) for tests and smoke studies, e.g. {"tiny": {...}}
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: whether ``target`` must be given in the study's task section
    needs_target: ClassVar[bool] = True
    #: analyses of trained models: name -> "package.module:function" (see :mod:`hpo.analysis.trained`)
    analyses: ClassVar[dict[str, str]] = {}
    #: data-config fields that only pick or order the training data (a fraction of the training pairs, a
    #: window stride): left out of cache keys, so every fidelity shares one cached entry (:meth:`cache_key`)
    fidelity_knobs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dataset: DatasetSpec, target: str | None = None, cache: "DataCache | None" = None) -> None:
        from hpo.data.cache import DataCache

        self.dataset = dataset
        self.target = target
        self.cache = cache if cache is not None else DataCache(None)

    # -- data -------------------------------------------------------------------------------
    def cache_key(self, data_cfg: Any, **parts: Any) -> dict:
        """The key of this task's processed data for ``data_cfg``: :func:`hpo.data.cache.data_key` with the
        task's :attr:`fidelity_knobs` left out; ``parts`` are ``version``, ``digest``, ``dataset``, ..."""
        from hpo.data.cache import data_key

        return data_key(data_cfg, fidelity=self.fidelity_knobs, **parts)

    def check(self) -> list[Problem]:
        """Cheap checks that the dataset resolves; paths relative to ``task.dataset``. Default: the
        dataset spec's own :meth:`~hpo.data.dataset.DatasetSpec.check` for the task's target."""
        return self.dataset.check(self.target)

    @abc.abstractmethod
    def load(self, data_cfg: Any) -> Splits:
        """Load, preprocess (cached) and split the dataset."""

    @abc.abstractmethod
    def loader(self, splits: Splits, split: str, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterable:
        """Batches of one split; shuffling must be driven by ``seed`` alone."""

    # -- model ------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self, model_cfg: Any, splits: Splits) -> "torch.nn.Module":
        """Build the model (on CPU) for this config and data."""

    @abc.abstractmethod
    def step(self, model: "torch.nn.Module", batch: Any, *, train: bool) -> StepOutput:
        """Forward one batch; return loss, predictions and targets."""

    @abc.abstractmethod
    def compute_metrics(self, pred: Any, target: Any) -> dict[str, float]:
        """Metrics over a whole split from concatenated predictions and targets: the names in
        ``metrics`` that apply to this config (e.g. no 12-step horizon metric when the model
        predicts 6 steps). An objective naming a metric a trial does not produce fails that trial."""

    def group_parameters(self, model: "torch.nn.Module") -> dict[str, list]:
        """Parameters by group for layer-wise learning rates.

        Default: the model's ``param_groups()`` method when it has one, else one group ``"all"``.
        Every trainable parameter must be in exactly one group.
        """
        if hasattr(model, "param_groups"):
            return {k: list(v) for k, v in model.param_groups().items()}
        return {"all": [p for p in model.parameters()]}

    def checkpoint_extras(self, splits: Splits) -> dict[str, Any]:
        """Extra state a checkpoint needs to be used on new data (e.g. a target scaler)."""
        return {}

    def compare_views(self, pred: Any, target: Any) -> list[dict[str, Any]]:
        """What ``hpo compare`` draws of one model's predictions over a split, as plain data (no plotting here).

        ``pred`` and ``target`` are what :meth:`compute_metrics` gets. Each view is a dict with ``kind``, ``id``
        (the figure's HTML id: both trials' views with one id make one figure) and ``title``, and by kind:

        - ``"regression"``: ``y_true``, ``y_pred`` (equal length, target units) -> a predicted-vs-true scatter
          (figure ``id``) and a histogram of ``y_pred - y_true`` (figure ``error_id``, default ``error-histogram``);
        - ``"lines"``: ``x``, ``y`` (equal length), ``x_title``, ``y_title`` -> one line per trial (e.g. MAE per
          forecast step);
        - ``"series"``: ``x``, ``true``, ``pred`` (equal length) -> the true series once and each trial's prediction;
        - ``"histogram"``: ``values``, ``x_title`` -> overlaid histograms (e.g. per-sample cosine similarity).

        Default: one ``regression`` view of the flattened predictions when ``pred`` and ``target`` are tensors
        with as many entries (a scalar or per-entry target); no view otherwise.
        """
        import torch

        if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor) and pred.numel() == target.numel() > 0:
            return [{"kind": "regression", "id": "pred-vs-true", "title": "Predicted vs true",
                     "y_true": target.detach().reshape(-1).double().cpu().numpy(),
                     "y_pred": pred.detach().reshape(-1).double().cpu().numpy()}]
        return []

    # -- configs ----------------------------------------------------------------------------
    @classmethod
    def config_fields(cls) -> dict[str, tuple[str, dataclasses.Field]]:
        """Every flat config key -> (section, dataclass field); section in train/model/data."""
        from hpo.train.config import TrainConfig

        out: dict[str, tuple[str, dataclasses.Field]] = {}
        for section, dc in (("train", TrainConfig), ("model", cls.ModelConfig), ("data", cls.DataConfig)):
            for f in dataclasses.fields(dc):
                if f.name == "group_lr" and section == "train":
                    continue
                if f.name in out:
                    raise TypeError(f"task {cls.name}: config key {f.name!r} is in both {out[f.name][0]} and {section}")
                out[f.name] = (section, f)
        return out

    @classmethod
    def config_keys(cls) -> list[str]:
        return sorted([*cls.config_fields(), *(f"lr_{g}" for g in cls.param_groups)])

    @classmethod
    def split_config(cls, config: Mapping[str, Any]):
        """Flat config -> (TrainConfig, ModelConfig, DataConfig). Unknown keys raise ``KeyError``
        naming the closest key; invalid values raise ``ValueError`` from the dataclasses."""
        from hpo.train.config import TrainConfig

        fields = cls.config_fields()
        parts: dict[str, dict[str, Any]] = {"train": {}, "model": {}, "data": {}}
        group_lr: dict[str, float] = {}
        for key, value in config.items():
            if key.startswith("lr_") and key[3:] in cls.param_groups:
                group_lr[key[3:]] = float(value)
            elif key in fields:
                parts[fields[key][0]][key] = value
            else:
                raise KeyError(unknown_name_message(f"config key of task {cls.name}", key, cls.config_keys()))
        train = TrainConfig(**parts["train"], group_lr=group_lr)
        return train, cls.ModelConfig(**parts["model"]), cls.DataConfig(**parts["data"])

    @classmethod
    def direction_of(cls, metric: str) -> str | None:
        """Natural direction of ``train_x`` / ``val_x`` / ``x`` metrics, or None if unknown."""
        base = metric.split("_", 1)[1] if metric.split("_", 1)[0] in ("train", "val", "test") else metric
        if base in ("loss", "val_gap", "gap"):
            return "minimize"
        if metric in ("train_val_gap", "val_train_ratio", "val_train_loss_ratio"):
            return "minimize"
        return cls.metrics.get(base)

    @classmethod
    def objective_names(cls) -> list[str]:
        """Every name an objective may use."""
        names = ["train_loss", "val_loss", "train_val_gap", "val_train_ratio", "val_train_loss_ratio"]
        for m in cls.metrics:
            names += [f"train_{m}", f"val_{m}"]
        return names
