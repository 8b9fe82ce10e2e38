"""`hpo narrow` edits a round-trip copy of the study's space file: comments, key order and layout stay, only
the narrowed params, the baselines and the description change; without the file it writes the space anew."""

from __future__ import annotations

import re
import textwrap

from hpo.spec import load_space
from hpo.spec.yaml_io import edit_yaml, loads_yaml
from hpo.tasks import get_task
from tests.conftest import hpo_cli

COMMENTED_SPACE = """\
# yaml-language-server: $schema=../schema/space.json
# Toy space for the narrowing test: every comment below must survive.
description: toy space, phase 1   # what phase 1 searched
params:
  # the learning rate: log-uniform
  lr: {type: float, low: 1e-3, high: 3e-2, log: true}   # the widest sane range
  hidden: [8, 16, 32]   # widths
  use_second_modality: {type: bool}
  fusion:
    type: categorical
    choices:
      - concat   # the default
      - gated
      - sum
    when: use_second_modality
  dropout: {type: float, low: 0.0, high: 0.2, step: 0.1}
derived:
  batch_size: "2 * hidden"   # derived, never narrowed
baselines:
  # the plan everyone runs today
  current: {lr: 3.0e-3, hidden: 16, use_second_modality: true, fusion: concat, dropout: 0.0}
  wide: {extends: current, lr: 2.5e-2, hidden: 32}
"""

STUDY = """\
name: rt
task: {{family: toy, dataset: {{n_samples: 96}}}}
space: space.yaml
objectives: [val_mae]
sampler: {{type: random, seed: 1}}
pruner: {{type: none}}
budget: {{n_trials: 4}}
training: {{epochs: 2}}
storage: sqlite:///{db}
artifacts: {artifacts}
"""


def _comments(text: str) -> list[str]:
    """The comments of ``text``, in order (a ``#`` at the start or after a blank, then a blank)."""
    return [m.group(1).strip() for line in text.splitlines() for m in [re.search(r"(?:^|\s)#\s(.*)$", line)] if m]


TOLD = [  # (val_mae, params): the two best agree on a small lr, hidden 8/16 and the second modality
    (0.10, {"lr": 2e-3, "hidden": 8, "use_second_modality": True, "fusion": "concat", "dropout": 0.1}),
    (0.12, {"lr": 4e-3, "hidden": 16, "use_second_modality": True, "fusion": "gated", "dropout": 0.0}),
    (0.50, {"lr": 2.5e-2, "hidden": 32, "use_second_modality": False, "dropout": 0.2}),
    (0.60, {"lr": 1.5e-2, "hidden": 32, "use_second_modality": True, "fusion": "sum", "dropout": 0.2}),
]


def _stored_study(tmp_path):
    """A study stored as `hpo run` stores it (its record from the study file), its trials told with values
    (no training: this test is about the files)."""
    import optuna

    from hpo.run.study import prepare
    from hpo.spec import load_study
    from hpo.store.storage import open_storage

    (tmp_path / "space.yaml").write_text(COMMENTED_SPACE)
    path = tmp_path / "rt.yaml"
    path.write_text(STUDY.format(db=tmp_path / "hpo.db", artifacts=tmp_path / "artifacts"))
    study = load_study(path, check_data=False)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    ostudy = optuna.create_study(study_name="rt", storage=open_storage(url, heartbeat=False), direction="minimize")
    prepare(study, ostudy)
    for t in ostudy.get_trials():  # the enqueued baseline: not run here
        ostudy._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    defs = {p.name: p for p in study.space.params}
    for value, params in TOLD:
        ostudy.add_trial(optuna.trial.create_trial(params=params, distributions={k: defs[k].distribution() for k in params},
                                                   value=value))
    return url


def _narrow(url: str, out, capsys) -> tuple[int, str]:
    from hpo.cli import main

    rc = main(["narrow", "rt", "--storage", url, "--top", "2", "--out", str(out)])
    return rc, capsys.readouterr().out


def test_hpo_narrow_keeps_the_space_files_comments_and_order(tmp_path, capsys):
    url = _stored_study(tmp_path)
    space_file = tmp_path / "space.yaml"
    new = tmp_path / "phase2" / "space.yaml"
    rc, stdout = _narrow(url, new, capsys)
    assert rc == 0
    assert f"an edited copy of {space_file}" in stdout
    text = new.read_text()
    assert text.startswith("# search space narrowed by `hpo narrow rt --top 2")
    assert _comments(text)[1:] == _comments(COMMENTED_SPACE)  # every comment, in order (after the header)
    doc = loads_yaml(text)
    assert list(doc) == ["description", "params", "derived", "baselines"]
    assert list(doc["params"]) == ["lr", "hidden", "use_second_modality", "fusion", "dropout"]
    assert doc["description"].startswith("Narrowed from study 'rt'") and doc["description"].endswith("toy space, phase 1")
    lr = doc["params"]["lr"]
    assert 1e-3 <= lr["low"] <= 2e-3 and 4e-3 <= lr["high"] < 3e-2 and lr["log"] is True  # narrowed around the top 2
    assert [ln for ln in text.splitlines() if ln.startswith("  lr:")][0].endswith("# the widest sane range")  # kept on the rewritten line
    assert doc["params"]["hidden"] == [8, 16] and "  hidden: [8, 16]" in text  # still a flow list, 32 dropped
    assert doc["params"]["fusion"]["choices"] == ["concat", "gated"] and "  - concat   # the default" in text
    assert doc["params"]["use_second_modality"] == {"type": "categorical", "choices": [True]}
    for line in ('  dropout: {type: float, low: 0.0, high: 0.2, step: 0.1}', '  batch_size: "2 * hidden"   # derived, never narrowed',
                 "  current: {lr: 3.0e-3, hidden: 16, use_second_modality: true, fusion: concat, dropout: 0.0}"):
        assert line in text.splitlines()  # untouched lines exactly as written
    # the plan that still fits is kept as written, the one outside the new ranges dropped, the top trials added
    # (the enqueued plans were #0 and #1; the told trials are #2-#5; #2 and #3 are the best two)
    assert list(doc["baselines"]) == ["current", "phase1_trial_2", "phase1_trial_3"]
    assert doc["baselines"]["phase1_trial_2"] == TOLD[0][1] and doc["baselines"]["phase1_trial_3"] == TOLD[1][1]
    assert "dropped: wide" in stdout
    compiled = load_space(new, get_task("toy"), {"epochs": 2})  # the narrowed file validates
    assert set(compiled.baselines) == set(doc["baselines"])

    from tests.test_yaml_io import billion_laughs

    space_file.write_text(billion_laughs(9))  # replaced by a crafted file since: refused at once, written anew
    crafted = tmp_path / "crafted.yaml"
    rc, stdout = _narrow(url, crafted, capsys)
    assert rc == 0 and "an edited copy" not in stdout
    assert loads_yaml(crafted.read_text())["params"]["lr"] == lr

    space_file.unlink()  # the original file gone: written anew from the record, still valid
    again = tmp_path / "again.yaml"
    rc, stdout = _narrow(url, again, capsys)
    assert rc == 0 and "an edited copy" not in stdout
    assert _comments(again.read_text()) == [_comments(text)[0]]  # the header only
    assert loads_yaml(again.read_text())["params"]["lr"] == lr
    load_space(again, get_task("toy"), {"epochs": 2})


def test_edit_yaml_changes_only_what_differs():
    text = textwrap.dedent("""\
        # head
        a: 1   # one
        b:
          - x   # ex
          - y
          - z
        c: {p: 1, q: 2}   # flow kept
        d: 0x10   # hex kept while unchanged
        """)
    new = {"a": 2, "b": ["x", "z"], "c": {"p": 1, "q": 2}, "d": 16, "e": "no"}
    out = edit_yaml(text, new)
    assert loads_yaml(out) == new
    assert out.splitlines()[:2] == ["# head", "a: 2   # one"]
    assert "- x   # ex" in out and "- y" not in out
    assert "c: {p: 1, q: 2}   # flow kept" in out and "d: 0x10   # hex kept while unchanged" in out
    assert "e: 'no'" in out  # a new string a YAML 1.1 reader would take for a bool is quoted


def test_edit_yaml_refuses_an_edit_that_would_not_read_back():
    # ``b`` is an alias of ``a``: editing b in place would change a too, so the edit is refused (None)
    # and the caller writes the data anew
    text = "a: &x {p: 1}\nb: *x\n"
    assert edit_yaml(text, {"a": {"p": 1}, "b": {"p": 2}}) is None
    assert loads_yaml(edit_yaml(text, {"a": {"p": 1}, "b": {"p": 1}, "c": 3})) == {"a": {"p": 1}, "b": {"p": 1}, "c": 3}


def test_edit_yaml_bounds_the_document_first():
    # the round-trip reader has none of loads_yaml's bounds: a crafted file is refused before it reads it
    import time

    import pytest

    from hpo.errors import SpecError
    from tests.test_yaml_io import billion_laughs

    t0 = time.monotonic()
    with pytest.raises(SpecError, match="aliases must expand to at most"):
        edit_yaml(billion_laughs(9), {"a": 1}, "s.yaml")
    with pytest.raises(SpecError, match="s.yaml: invalid YAML at line 2.*duplicate key 'a'"):
        edit_yaml("a: 1\na: 2\n", {"a": 1}, "s.yaml")
    assert time.monotonic() - t0 < 1.0


def test_every_shipped_space_edits_in_place_keeping_its_comments():
    import copy
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    files = sorted((root / "search_spaces").glob("*.yaml"))
    assert files
    for f in files:
        text = f.read_text()
        doc = loads_yaml(text)
        new = copy.deepcopy(doc)
        new["description"] = "Narrowed. " + str(doc.get("description") or "")
        name, p = next(((n, p) for n, p in doc["params"].items() if isinstance(p, dict) and p.get("type") in ("float", "int")
                        and p["high"] - p["low"] >= 2), (None, None))
        if name is not None:
            new["params"][name]["high"] = (p["low"] + p["high"]) // 2 if p["type"] == "int" else (p["low"] + p["high"]) / 2
        out = edit_yaml(text, new, str(f))
        assert out is not None and loads_yaml(out) == new, f
        assert _comments(out) == _comments(text), f  # every comment kept, in order
        changed = [line for line in out.splitlines() if line not in text.splitlines()]
        assert len(changed) <= 2, (f, changed)  # the description and the one param
        assert name is None or any(line.lstrip().startswith(f"{name}:") for line in changed), (f, changed)
