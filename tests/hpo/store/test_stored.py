"""StoredStudy: the one reader of a stored study's record, task and trials, on studies written by plain
Optuna as older fusion-hpo versions left them."""

import pytest

from hpo.errors import UsageError
from hpo.store.record import CURVES, FORMAT, RECORD_ATTR
from hpo.store.stored import StoredStudy, load_stored_study
from tests.hpo.analysis.old_study import OLD_RECORD, old_study


def test_a_record_without_format_reads_as_format_1_with_its_spec_task_and_dataset(tmp_path):
    url, _ = old_study(tmp_path / "old.db")
    stored = StoredStudy.open(url, "old")
    assert stored.record[FORMAT] == 1
    assert FORMAT not in stored.study.user_attrs[RECORD_ATTR]  # read with the default, the store is left as it was
    assert stored.spec == OLD_RECORD["spec"] and stored.family == "toy" and stored.study_file == "studies/old.yaml"
    assert stored.metrics == ["val_mae"] and stored.directions == ["minimize"]
    assert stored.task_class.name == "toy"
    assert stored.dataset.n_samples == 160 and stored.dataset.noise == 0.1
    assert stored.task_section() == {"family": "toy", "dataset": OLD_RECORD["dataset"]}
    task = stored.task(str(tmp_path / "cache"))
    assert task.dataset == stored.dataset and task.target is None


def test_a_stored_format_is_kept(tmp_path):
    url, _ = old_study(tmp_path / "new.db", record={**OLD_RECORD, "format": 7})
    assert StoredStudy.open(url, "old").record[FORMAT] == 7


def test_a_study_fusion_hpo_did_not_create_has_an_empty_record_and_refuses_what_needs_one(tmp_path):
    url, _ = old_study(tmp_path / "plain.db", record=None)
    stored = StoredStudy.open(url, "old")
    assert stored.record == {} and stored.spec == {} and stored.family is None
    assert stored.metrics == ["value"]  # one objective, unnamed
    for read in (stored.require, stored.task_section, lambda: stored.task_class, lambda: stored.dataset):
        with pytest.raises(UsageError, match="was not created by fusion-hpo"):
            read()


def test_objective_names_fall_back_when_the_record_names_fewer_than_the_study_has(tmp_path):
    url, _ = old_study(tmp_path / "mo.db", directions=("minimize", "minimize"))
    assert StoredStudy.open(url, "old").metrics == ["objective 0", "objective 1"]


def test_light_reads_leave_out_the_curves_and_full_reads_bring_them(tmp_path):
    url, _ = old_study(tmp_path / "old.db")
    stored = StoredStudy.open(url, "old")
    light = stored.light_trials()
    assert len(light) == 5 and all(CURVES not in t.user_attrs and "config" in t.user_attrs for t in light)
    assert all(CURVES in stored.full(t).user_attrs for t in light)
    assert [t.number for t in stored.trials()] == [0, 1, 2, 3, 4] and all(CURVES in t.user_attrs for t in stored.trials())


def test_best_ranks_complete_trials_and_reads_them_whole(tmp_path):
    url, _ = old_study(tmp_path / "old.db")
    stored = StoredStudy.open(url, "old")
    assert [t.number for t in stored.best()] == [3]
    top = stored.best(3)
    assert [t.number for t in top] == [3, 1, 4] and all(CURVES in t.user_attrs for t in top)
    with pytest.raises(UsageError, match="--top must be >= 1, but got 0"):
        stored.best(0)


def test_best_of_several_objectives_is_the_pareto_front(tmp_path):
    url, _ = old_study(tmp_path / "mo.db", directions=("minimize", "minimize"))
    stored = StoredStudy.open(url, "old")
    assert [t.number for t in stored.best()] == [1, 3, 4]
    assert [t.number for t in stored.best(2)] == [1, 3]
    assert {t.number for t in stored.pareto(stored.light_trials())} == {1, 3, 4}


def test_a_study_without_complete_trials_has_no_best(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=url).set_user_attr(RECORD_ATTR, OLD_RECORD)
    with pytest.raises(UsageError, match="has no complete trial yet"):
        StoredStudy.open(url, "empty").best()


def test_an_unknown_study_name_is_refused_with_the_names_in_the_store(tmp_path):
    url, _ = old_study(tmp_path / "old.db")
    with pytest.raises(UsageError) as e:
        load_stored_study(url, "olt")
    assert "'olt'" in str(e.value) and "old" in str(e.value)
