"""Spatio-temporal traffic forecasting (seed 002): a two-stage spatial/temporal transformer with a
fusion of the two streams, on DCRNN (METR-LA / PEMS-BAY) h5 or npz files, PEMS03/04/07/08 npz files,
plain CSV, or synthetic data.

Importing this package registers the task ``traffic``.
"""

from models.traffic.config import HORIZONS, TrafficConfig, TrafficDataConfig
from models.traffic.datasets import (
    CsvDataset,
    DcrnnH5Dataset,
    DcrnnNpzDataset,
    PemsNpzDataset,
    SyntheticDataset,
    TrafficDataset,
)
from models.traffic.task import TrafficTask

__all__ = [
    "HORIZONS",
    "CsvDataset",
    "DcrnnH5Dataset",
    "DcrnnNpzDataset",
    "PemsNpzDataset",
    "SyntheticDataset",
    "TrafficConfig",
    "TrafficDataConfig",
    "TrafficDataset",
    "TrafficTask",
]
