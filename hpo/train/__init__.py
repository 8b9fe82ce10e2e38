"""The one training loop shared by every task."""

from hpo.train.config import SCHEDULERS, TrainConfig
from hpo.train.loop import FitResult, fit

__all__ = ["SCHEDULERS", "FitResult", "TrainConfig", "fit"]
