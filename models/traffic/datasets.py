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

    format: str

    def path_fields(self) -> dict[str, Path]:
        """Input files by field name (for existence checks; their content keys the cache)."""
        return {}

    def source_files(self) -> list[Path]:
        return list(self.path_fields().values())


class _ChronoSplit(TrafficDataset):
    """Formats holding one long series, split chronologically into train / val / test."""

    train_frac: float = Field(0.7, gt=0, lt=1)  # first 70 % of the time steps (DCRNN's split)
    val_frac: float = Field(0.1, gt=0, lt=1)  # next 10 %; the test part is the remaining 20 %

    split_fractions: ClassVar[tuple[str, ...]] = ("train_frac", "val_frac")


class _WithAdjacency(TrafficDataset):
    adj: Optional[DataPath] = None  # sensor graph; None: no graph (spatial_graph must then be "none")
    adj_format: AdjFormat = "auto"  # auto: .pkl -> dcrnn_pkl, .npy -> npy, .csv -> distances_csv if 3 columns else matrix_csv
    adj_threshold: float = Field(0.1, ge=0, lt=1)  # distances_csv: kernel weights below it are dropped (DCRNN normalized_k)

    def path_fields(self) -> dict[str, Path]:
        return {"adj": self.adj} if self.adj is not None else {}


class DcrnnH5Dataset(_ChronoSplit, _WithAdjacency):
    format: Literal["dcrnn_h5"]
    path: DataPath  # metr-la.h5 / pems-bay.h5: pandas HDF, DatetimeIndex rows x sensor-id columns
    key: Optional[str] = None  # HDF key; None: the file's only key ("df" in DCRNN's files)

    def path_fields(self) -> dict[str, Path]:
        return {"path": self.path, **super().path_fields()}


class DcrnnNpzDataset(_WithAdjacency):
    format: Literal["dcrnn_npz"]
    dir: DataPath  # folder with train.npz, val.npz, test.npz (DCRNN generate_training_data.py output)

    SPLIT_FILES: ClassVar[tuple[str, ...]] = ("train.npz", "val.npz", "test.npz")

    def path_fields(self) -> dict[str, Path]:
        return {**{f"dir/{n}": self.dir / n for n in self.SPLIT_FILES}, **super().path_fields()}


class CsvDataset(_ChronoSplit, _WithAdjacency):
    format: Literal["csv"]
    path: DataPath  # time x sensors, one row per time step, one column per sensor
    header: Optional[bool] = None  # true: first row = sensor ids; false: data from row 1; null: detect (see docs)
    time_column: Optional[str] = None  # name of a timestamp column (needs header); other columns are sensors
    start: Optional[datetime] = None  # timestamp of the first row when there is no time_column
    interval_minutes: float = Field(5.0, gt=0)  # minutes between rows (without time_column)

    def path_fields(self) -> dict[str, Path]:
        return {"path": self.path, **super().path_fields()}

    @model_validator(mode="after")
    def _time_column_needs_header(self):
        if self.time_column is not None and self.header is False:
            raise ValueError("time_column needs a header row, but header is false")
        return self


class PemsNpzDataset(_ChronoSplit, _WithAdjacency):
    format: Literal["pems_npz"]
    path: DataPath  # PEMS04.npz: array `data` of shape (time steps, sensors, channels)
    channels: Optional[list[str]] = None  # channel names in order; None: flow, occupancy, speed (3 channels) or flow (1)
    ids: Optional[DataPath] = None  # sensor ids, one per line (PEMS03.txt); None: 0..N-1 as in distance.csv
    start: Optional[datetime] = None  # time of the first step (PEMS04: 2018-01-01, PEMS08: 2016-07-01); needed for time features
    interval_minutes: float = Field(5.0, gt=0)  # minutes between steps

    def path_fields(self) -> dict[str, Path]:
        extra = {"ids": self.ids} if self.ids is not None else {}
        return {"path": self.path, **extra, **super().path_fields()}

    def channel_names(self, n_channels: int) -> list[str]:
        if self.channels is not None:
            return list(self.channels)
        return ["flow", "occupancy", "speed"] if n_channels == 3 else ["flow"] if n_channels == 1 else [str(i) for i in range(n_channels)]


class SyntheticDataset(_ChronoSplit):
    """A sensor graph with rush hours and incident congestion waves (see ``data.generate_synthetic``)."""

    format: Literal["synthetic"]
    n_nodes: int = Field(20, ge=2)  # sensors
    n_days: float = Field(7.0, gt=0)  # length of the series
    steps_per_day: int = Field(288, ge=4)  # readings per day (288 = every 5 minutes)
    start: datetime = datetime(2012, 3, 5)  # time of the first reading (a Monday, midnight)
    k_neighbors: int = Field(3, ge=1)  # graph: each sensor links to its k nearest, plus a spanning tree
    free_flow: float = 65.0  # mean free-flow speed
    rush_hour_drop: float = 25.0  # speed drop at the peak of a weekday rush hour at the graph's centre
    wave_minutes_per_hop: float = 10.0  # how long congestion takes to travel one hop upstream
    events_per_day: float = Field(4.0, ge=0)  # incidents; each sends a congestion wave upstream
    reading_noise: float = Field(1.5, ge=0)  # std of the (AR(1)) measurement noise
    missing_rate: float = Field(0.01, ge=0, lt=1)  # fraction of readings reported as 0 (missing)
    seed: int = 0  # generator seed


FORMATS = tuple(sorted(TrafficDataset.formats()))
