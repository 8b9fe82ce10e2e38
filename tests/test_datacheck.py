"""The one path that checks a study's data before any trial (hpo/data/validate.py)."""


import numpy as np
import pytest

from hpo.cli import main
from hpo.data.validate import check_splits, check_task_data, require_finite, where
from hpo.errors import DataError
from hpo.tasks import Splits, get_task
from tests.conftest import stored_studies

TOY_STUDY = """
name: {name}
task: {{family: toy, dataset: {{n_samples: {n}}}}}
space:
  params:
    lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
objectives: [val_mae]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
budget: {{n_trials: 2}}
training: {{epochs: 1, batch_size: 8}}
storage: sqlite:///{db}
"""


def test_require_finite_names_each_bad_record_and_the_file():
    with pytest.raises(DataError) as e:
        require_finite([1.0, float("inf"), 2.0, float("nan")], "d/Y.txt", "affinity", kind="row", offset=1)
    msg = str(e.value)
    assert msg.startswith("d/Y.txt: affinity must be finite numbers, but got ")
    assert "row 2 = inf" in msg and "row 4 = nan" in msg
    with pytest.raises(DataError, match=r"x\.csv: target must be numbers, but got record 1 \(id b\) = 'abc'"):
        require_finite([1.0, "abc"], "x.csv", "target", ids=["a", "b"])
    require_finite(np.ones((3, 2)), "ok", "fine")  # finite: nothing raised
    with pytest.raises(DataError, match=r"and 2 more"):
        require_finite([np.nan] * 7, "f", "v")
    assert where(3, "line", "JVASP-1") == "line 3 (id JVASP-1)"


def test_check_splits_refuses_an_empty_split():
    assert check_splits(Splits([1], [2], [3]), "f") == []
    problems = check_splits(Splits([1, 2], [], [3]), "data.json")
    assert len(problems) == 1 and problems[0].startswith("data.json: the val split must hold at least one record, but got 0")


def test_check_task_data_turns_a_crashing_parser_into_one_line():
    toy = get_task("toy")

    class Crashing(toy):
        def load(self, data_cfg):
            raise ValueError("could not convert string to float: 'x'")

    task = Crashing(toy.DatasetSpec.model_validate({"n_samples": 64}))
    problems = check_task_data(task, [toy.DataConfig()])
    assert problems == ["task.dataset: must be a readable dataset of format 'synthetic', but reading it failed: "
                        "ValueError: could not convert string to float: 'x'"]


@pytest.mark.parametrize("command", ["validate", "run", "create"])
def test_a_dataset_too_small_for_its_splits_is_refused_before_anything_is_stored(tmp_path, capsys, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "s.db"
    path = tmp_path / "s.yaml"
    path.write_text(TOY_STUDY.format(name="tiny", n=5, db=db))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert "task.dataset.n_samples: " in err and "but got 5" in err  # 5 samples leave the val split empty
    assert "Traceback" not in err
    assert stored_studies(db) == []  # nothing stored


def test_a_valid_dataset_is_built_once_by_the_check_and_found_by_the_trials(tmp_path, monkeypatch):
    from hpo.run.backends.local import run_study
    from hpo.run.options import RunOptions
    from hpo.spec import load_study

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(TOY_STUDY.format(name="ok", n=128, db=tmp_path / "s.db"))
    assert main(["validate", str(path)]) == 0
    assert list((tmp_path / "runs" / "cache").rglob("*")), "the check built the cache entry"
    summary = run_study(load_study(path), RunOptions(cache_dir=str(tmp_path / "runs" / "cache")))
    assert summary.budget.complete == 2
    assert summary.cache.misses == 0 and summary.cache.disk_hits + summary.cache.memory_hits >= 1
