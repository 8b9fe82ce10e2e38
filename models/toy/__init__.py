"""A two-modality fusion regressor on synthetic data, for testing and benchmarking the service itself
(orchestration overhead, storage concurrency) with trials that take milliseconds."""

from models.toy.task import ToyConfig, ToyDataConfig, ToyTask

__all__ = ["ToyConfig", "ToyDataConfig", "ToyTask"]
