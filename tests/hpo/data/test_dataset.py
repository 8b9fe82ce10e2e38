"""hpo.data.dataset: the split fractions are validated once for every format; settings leave paths out."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Optional

import pytest
from pydantic import ValidationError

from hpo.data.dataset import DataPath, DatasetSpec


class Base(DatasetSpec):
    format: str
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_fractions: ClassVar[tuple[str, ...]] = ("val_fraction", "test_fraction")


class FileFormat(Base):
    format: Literal["file"] = "file"
    path: DataPath
    extra: Optional[DataPath] = None
    seed: int = 0

    def source_files(self) -> list[Path]:
        return [self.path]


class Generated(Base):
    format: Literal["generated"] = "generated"
    n: int = 10


class Chrono(DatasetSpec):
    format: Literal["chrono"] = "chrono"
    train_frac: float = 0.7
    val_frac: float = 0.1
    split_fractions: ClassVar[tuple[str, ...]] = ("train_frac", "val_frac")


@pytest.mark.parametrize("data", [{"format": "file", "path": "x"}, {"format": "generated"}])
def test_one_fraction_check_for_every_format(data):
    assert isinstance(Base.model_validate(data), Base)
    with pytest.raises(ValidationError, match=r"val_fraction \+ test_fraction must be < 1 \(the rest is the training part\), "
                                              r"but got 0.6 \+ 0.4"):
        Base.model_validate({**data, "val_fraction": 0.6, "test_fraction": 0.4})


def test_a_train_fraction_leaves_the_test_part():
    with pytest.raises(ValidationError, match=r"train_frac \+ val_frac must be < 1 \(the rest is the test part\)"):
        Chrono.model_validate({"train_frac": 0.8, "val_frac": 0.2})
    assert Chrono.model_validate({"train_frac": 0.8, "val_frac": 0.1}).train_frac == 0.8


def test_dispatch_paths_and_settings(tmp_path):
    spec = Base.model_validate({"format": "file", "path": "a.npz", "extra": "b.csv", "seed": 3}, context={"base_dir": tmp_path})
    assert type(spec) is FileFormat and spec.path == (tmp_path / "a.npz").resolve()
    assert spec.settings() == {"format": "file", "val_fraction": 0.1, "test_fraction": 0.1, "seed": 3}
    assert spec.settings(exclude={"seed"}) == {"format": "file", "val_fraction": 0.1, "test_fraction": 0.1}
    assert spec.source_files() == [spec.path]
    gen = Base.model_validate({"format": "generated"})
    assert gen.source_files() == [] and gen.check() == []
    with pytest.raises(NotImplementedError):
        gen.read()
    with pytest.raises(ValidationError, match="'file', 'generated'"):
        Base.model_validate({"format": "nope"})
