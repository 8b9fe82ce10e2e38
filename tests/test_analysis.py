"""Report, dashboard notes, narrowing and multi-seed re-evaluation on real toy studies."""

import pytest

from hpo.analysis.dashboard import publish_to_dashboard
from hpo.plan.narrow import narrow_space
from hpo.analysis.reevaluate import reevaluate
from hpo.analysis.report import build_report
from hpo.run.backends.local import run_study
from hpo.run.options import RunOptions
from hpo.spec import load_study
from hpo.spec import load_space
from hpo.store.stored import load_stored_study
from hpo.tasks import TASKS, get_task, register_task
from hpo.spec.yaml_io import dump_yaml

pytestmark = pytest.mark.slow

ToyTask = get_task("toy")
READS: list[str] = []


if "toy_audit" not in TASKS:

    @register_task("toy_audit")
    class AuditTask(ToyTask):
        """The toy task, recording every split it is asked for."""

        def loader(self, splits, split, batch_size, *, shuffle, seed=0):
            READS.append(split)
            return super().loader(splits, split, batch_size, shuffle=shuffle, seed=seed)


@pytest.fixture
def finished(toy_study, tmp_path):
    path = toy_study(n_trials=6)
    path.write_text(path.read_text().replace("family: toy", "family: toy_audit"))
    study = load_study(path)
    READS.clear()
    run_study(study, RunOptions(cache_dir=str(tmp_path / "cache"), checkpoints=False))
    return study, load_stored_study(study.storage_url(), study.name)


def test_tuning_never_reads_the_test_split_and_reevaluation_does(finished, tmp_path):
    study, ostudy = finished
    assert READS and set(READS) == {"train", "val"}  # six trials trained, none looked at test
    READS.clear()
    res = reevaluate(ostudy, top=1, seeds=[0, 1, 2], ensemble=True, cache_dir=str(tmp_path / "cache"))
    assert "test" in READS
    labels = list(res["configs"])
    assert labels[0].startswith("tuned_rank1_trial") and {"current", "single_modality"} <= set(labels)
    for entry in res["configs"].values():
        s = entry["summary"]["mae"]
        assert len(s["values"]) == 3 and s["std"] >= 0 and min(s["values"]) <= s["mean"] <= max(s["values"])
    comps = [c for c in res["comparisons"] if c["metric"] == "mae"]
    assert {c["baseline"] for c in comps} == {"current", "single_modality"}
    assert all(0.0 <= c["p_value"] <= 1.0 for c in comps)
    assert res["ensemble"]["members"] == 3 and res["ensemble"]["metrics"]["mae"] > 0
    stored = load_stored_study(study.storage_url(), study.name).user_attrs["reevaluation"]
    assert stored["configs"].keys() == res["configs"].keys()


def test_report_has_every_section(finished, tmp_path):
    _, ostudy = finished
    path = build_report(ostudy, tmp_path / "r.html")
    html = path.read_text()
    for needle in ("Plans vs tuned", "current", "single_modality", "Optimisation history", "Parameter importances",
                   "Parallel coordinates", "Slice plots", "Learning curves", "Curve diagnosis", "improvement %"):
        assert needle in html, needle
    assert html.count("<script") >= 5
    assert "src=" not in "".join(part.split(">", 1)[0] for part in html.split("<script")[1:])  # self-contained: no external scripts


def test_dashboard_gets_curves_and_note(finished):
    _, ostudy = finished
    publish_to_dashboard(ostudy)
    from optuna_dashboard import get_note

    note = get_note(ostudy)
    assert "Curve diagnosis" in note and "Plans vs tuned" in note
    system_attrs = ostudy._storage.get_study_system_attrs(ostudy._study_id)
    assert any("fusion-hpo-learning-curves" in k for k in system_attrs)
    assert ostudy.metric_names == ["val_mae"]


def test_narrow_keeps_top_values_and_validates(finished, tmp_path):
    study, ostudy = finished
    space, facts = narrow_space(ostudy, top=2, margin=0.1)
    top = [t for t in ostudy.trials if t.number in facts["top"]]
    lr = space["params"]["lr"]
    assert all(lr["low"] <= t.params["lr"] <= lr["high"] for t in top)
    assert 1e-3 <= lr["low"] and lr["high"] <= 3e-2  # inside the original range
    hidden = space["params"]["hidden"]["choices"]
    assert set(hidden) == {t.params["hidden"] for t in top}
    out = tmp_path / "phase2.yaml"
    out.write_text(dump_yaml(space))
    compiled = load_space(out, get_task("toy"), {})
    assert compiled.baselines  # the top trials (or the plans) are the new baselines
