"""The ``task.dataset`` section of a traffic study: a tagged union on ``format``.

=============  =====================================================================================
format         what it reads
=============  =====================================================================================
``dcrnn_h5``   DCRNN's ``metr-la.h5`` / ``pems-bay.h5``: a pandas HDF frame, DatetimeIndex x sensor ids,
               plus an adjacency (``adj_mx.pkl`` from DCRNN's ``gen_adj_mx.py``, or a matrix / distance
               CSV, or ``.npy``).
``dcrnn_npz``  the ``train.npz`` / ``val.npz`` / ``test.npz`` that DCRNN's ``generate_training_data.py``
               writes: ``x`` (samples, input steps, nodes, features), ``y`` (samples, output steps, nodes,
               features), ``x_offsets``, ``y_offsets``; feature 0 is the signal, feature 1 the time of day
               (``--add_time_in_day``), then a 7-way day-of-week one-hot when present.
``csv``        a plain CSV of time x sensors (header row = sensor ids, or no header as in some T-GCN
               files; ``header`` says which), plus an optional CSV adjacency such as T-GCN's
               ``los_adj.csv``.
``pems_npz``   the PEMS03/04/07/08 releases of ASTGCN / STSGCN: ``PEMS04.npz`` with ``data`` (time, sensors,
               channels) - flow, occupancy, speed for PEMS04/08, flow only for PEMS03/07 - plus their
               ``distance.csv`` (``from,to,cost`` by sensor index, or by the ids of ``ids`` for PEMS03).
               The task's ``target`` picks the channel (default: the first, flow).
``synthetic``  a generated sensor graph with daily rush hours and incident congestion waves that travel
               upstream along the graph, for tests and smoke studies.
=============  =====================================================================================

Paths are :data:`hpo.tasks.DataPath`: relative paths resolve against the study file's folder.
``TrafficDataset.model_validate(data)`` returns the subclass named by ``format`` (the dispatch of
:class:`hpo.tasks.DatasetSpec`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from hpo.tasks import DataPath, DatasetSpec

AdjFormat = Literal["auto", "dcrnn_pkl", "matrix_csv", "distances_csv", "npy"]


class TrafficDataset(DatasetSpec):
    """Base of every traffic dataset format; validating it dispatches on ``format``."""

    format: str = Field(description="the dataset format: dcrnn_h5, dcrnn_npz, csv, pems_npz or synthetic")

    def path_fields(self) -> dict[str, Path]:
        """Input files by field name (for existence checks; their content keys the cache)."""
        return {}

    def source_files(self) -> list[Path]:
        return list(self.path_fields().values())


class _ChronoSplit(TrafficDataset):
    """Formats holding one long series, split chronologically into train / val / test."""

    train_frac: float = Field(0.7, gt=0, lt=1, description="fraction of the time steps, first, for training (DCRNN's split: 0.7)")
    val_frac: float = Field(0.1, gt=0, lt=1,
                            description="fraction of the time steps after the training part, for validation; the rest is test")

    split_fractions: ClassVar[tuple[str, ...]] = ("train_frac", "val_frac")


class _WithAdjacency(TrafficDataset):
    adj: Optional[DataPath] = Field(None, description="sensor graph file; null: no graph (spatial_graph must then be none)")
    adj_format: AdjFormat = Field(
        "auto", description="auto: .pkl -> dcrnn_pkl, .npy -> npy, .csv -> distances_csv if 3 columns else matrix_csv")
    adj_threshold: float = Field(0.1, ge=0, lt=1,
                                 description="distances_csv: kernel weights below it are dropped (DCRNN normalized_k)")

    def path_fields(self) -> dict[str, Path]:
        return {"adj": self.adj} if self.adj is not None else {}


class DcrnnH5Dataset(_ChronoSplit, _WithAdjacency):
    format: Literal["dcrnn_h5"] = Field(description="selects this format: DCRNN's pandas HDF file")
    path: DataPath = Field(description="metr-la.h5 / pems-bay.h5: pandas HDF, DatetimeIndex rows x sensor-id columns")
    key: Optional[str] = Field(None, description="HDF key; null: the file's only key (df in DCRNN's files)")

    def path_fields(self) -> dict[str, Path]:
        return {"path": self.path, **super().path_fields()}


class DcrnnNpzDataset(_WithAdjacency):
    format: Literal["dcrnn_npz"] = Field(description="selects this format: DCRNN's train/val/test .npz files")
    dir: DataPath = Field(description="folder with train.npz, val.npz, test.npz (DCRNN generate_training_data.py output)")

    SPLIT_FILES: ClassVar[tuple[str, ...]] = ("train.npz", "val.npz", "test.npz")

    def path_fields(self) -> dict[str, Path]:
        return {**{f"dir/{n}": self.dir / n for n in self.SPLIT_FILES}, **super().path_fields()}


class CsvDataset(_ChronoSplit, _WithAdjacency):
    format: Literal["csv"] = Field(description="selects this format: a CSV of time x sensors")
    path: DataPath = Field(description="the CSV of time x sensors, one row per time step, one column per sensor")
    header: Optional[bool] = Field(
        None, description="true: first row = sensor ids; false: data from row 1; null: detect (see docs)")
    time_column: Optional[str] = Field(
        None, description="name of a timestamp column (needs header); other columns are sensors")
    start: Optional[datetime] = Field(None, description="timestamp of the first row when there is no time_column")
    interval_minutes: float = Field(5.0, gt=0, description="minutes between rows (without time_column)")

    def path_fields(self) -> dict[str, Path]:
        return {"path": self.path, **super().path_fields()}

    @model_validator(mode="after")
    def _time_column_needs_header(self):
        if self.time_column is not None and self.header is False:
            raise ValueError("time_column needs a header row, but header is false")
        return self


class PemsNpzDataset(_ChronoSplit, _WithAdjacency):
    format: Literal["pems_npz"] = Field(description="selects this format: a PEMS03/04/07/08 .npz release")
    path: DataPath = Field(description="the .npz file, e.g. PEMS04.npz: array data of shape (time steps, sensors, channels)")
    channels: Optional[list[str]] = Field(
        None, description="channel names in order; null: flow, occupancy, speed (3 channels) or flow (1)")
    ids: Optional[DataPath] = Field(
        None, description="file of sensor ids, one per line (PEMS03.txt); null: 0..N-1 as in distance.csv")
    start: Optional[datetime] = Field(
        None, description="time of the first step (PEMS04: 2018-01-01, PEMS08: 2016-07-01); needed for time features")
    interval_minutes: float = Field(5.0, gt=0, description="minutes between steps")

    def path_fields(self) -> dict[str, Path]:
        extra = {"ids": self.ids} if self.ids is not None else {}
        return {"path": self.path, **extra, **super().path_fields()}

    def channel_names(self, n_channels: int) -> list[str]:
        if self.channels is not None:
            return list(self.channels)
        return ["flow", "occupancy", "speed"] if n_channels == 3 else ["flow"] if n_channels == 1 else [str(i) for i in range(n_channels)]


class SyntheticDataset(_ChronoSplit):
    """A sensor graph with rush hours and incident congestion waves (see ``data.generate_synthetic``)."""

    format: Literal["synthetic"] = Field(description="selects this format: a generated sensor graph and series")
    n_nodes: int = Field(20, ge=2, description="number of sensors")
    n_days: float = Field(7.0, gt=0, description="length of the series in days")
    steps_per_day: int = Field(288, ge=4, description="readings per day (288 = every 5 minutes)")
    start: datetime = Field(datetime(2012, 3, 5), description="time of the first reading (a Monday, midnight)")
    k_neighbors: int = Field(3, ge=1, description="graph: each sensor links to its k nearest, plus a spanning tree")
    free_flow: float = Field(65.0, description="mean free-flow speed")
    rush_hour_drop: float = Field(25.0, description="speed drop at the peak of a weekday rush hour at the graph's centre")
    wave_minutes_per_hop: float = Field(10.0, description="minutes congestion takes to travel one hop upstream")
    events_per_day: float = Field(4.0, ge=0, description="incidents per day; each sends a congestion wave upstream")
    reading_noise: float = Field(1.5, ge=0, description="std of the (AR(1)) measurement noise")
    missing_rate: float = Field(0.01, ge=0, lt=1, description="fraction of readings reported as 0 (missing)")
    seed: int = Field(0, description="generator seed")


FORMATS = tuple(sorted(TrafficDataset.formats()))
