import pytest
import yaml

from hpo.errors import SpecError
from hpo.spec.yaml_io import loads_yaml


def test_yaml12_floats_are_numbers():
    doc = loads_yaml("a: 3e-4\nb: 1E5\nc: .5\nd: 1.0e-3\ne: '3e-4'\nf: \"2,3\"\ng: 2,3\nh: 7")
    assert doc == {"a": 3e-4, "b": 1e5, "c": 0.5, "d": 1e-3, "e": "3e-4", "f": "2,3", "g": "2,3", "h": 7}
    assert isinstance(doc["h"], int)


def test_duplicate_keys_and_syntax_errors_name_the_line():
    with pytest.raises(SpecError, match="line 2.*duplicate key 'lr'"):
        loads_yaml("lr: 1\nlr: 2\n", "s.yaml")
    with pytest.raises(SpecError, match=r"s.yaml: invalid YAML at line 2"):
        loads_yaml("a: [1, 2\nb: 3\n", "s.yaml")


# ------------------------------------------------------------------------ bounds (issue #13, item 4)
import json
import re
import time

from hpo.spec.yaml_io import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_yaml


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: 9 levels of 9 aliases expand to 9**9 (387,420,489) strings."""
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


YAML_BOMBS = {  # name: (text, the key/where of the one error, what it says)
    "billion laughs (750 bytes)": (billion_laughs(9) + "#" * (750 - len(billion_laughs(9))),
                                   "f", f"aliases must expand to at most {MAX_NODES} nodes, but got "),
    "billion laughs in a space key": ("fixed:\n  x: &x [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
        f"  x{i}: &x{i} [" + ", ".join([f"*x{i - 1 if i else ''}"] * 10) + "]\n" for i in range(8)),
        "fixed.x3", "aliases must expand to at most"),
    "1,000 nested flow lists": ("fixed: {a: " + "[" * 1000 + "]" * 1000 + "}\n", "line 1, column",
                                f"YAML must nest at most {MAX_DEPTH} levels deep, but got {MAX_DEPTH + 1}"),
    "100,000 nested flow maps": ("x: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n", None, f"must be at most {MAX_BYTES}"),
    "200 nested block maps": ("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n", "line",
                              f"YAML must nest at most {MAX_DEPTH} levels deep"),
    "alias cycle": ("fixed: &a {b: [1, *a]}\n", "line 1, column", "an alias must not refer to a node that contains it"),
    "oversized document": ("# " + "x" * (MAX_BYTES + 10) + "\nname: x\n", None, f"must be at most {MAX_BYTES}"),
}


def test_crafted_yaml_is_refused_at_once(report_figures):
    slowest = 0.0
    for name, (text, where, words) in YAML_BOMBS.items():
        t0 = time.monotonic()
        with pytest.raises(SpecError) as e:
            loads_yaml(text, "s.yaml")
        seconds = time.monotonic() - t0
        slowest = max(slowest, seconds)
        lines = e.value.lines()
        assert len(lines) == 1 and words in lines[0], (name, lines)
        assert lines[0].startswith("s.yaml: " + (where or "")), (name, lines)
        assert seconds < 1.0, (name, seconds)
    report_figures("crafted YAML (unit)", {"refused": len(YAML_BOMBS), "of": len(YAML_BOMBS), "slowest s": round(slowest, 3)})


def test_yaml_bounds_leave_normal_documents_alone(tmp_path):
    shared = loads_yaml("a: &x {p: 1, q: [1, 2]}\nb: *x\nc: *x\n")
    assert shared == {"a": {"p": 1, "q": [1, 2]}, "b": {"p": 1, "q": [1, 2]}, "c": {"p": 1, "q": [1, 2]}}
    nested = "v: " + "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2)  # the mapping, 62 lists and the scalar: 64 levels
    value = loads_yaml(nested)["v"]
    for _ in range(MAX_DEPTH - 3):
        value = value[0]
    assert value == [1]
    with pytest.raises(SpecError, match="must nest at most"):
        loads_yaml("v: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1))  # one level more
    assert loads_yaml("") is None and loads_yaml("# only a comment\n") is None
    wide = {f"k{i}": list(range(10)) for i in range(2000)}  # 24,000 nodes, 94 KB: big, no aliases
    assert loads_yaml(json.dumps(wide)) == wide
    p = tmp_path / "s.yaml"
    p.write_text("lr: 3e-4\n")
    assert load_yaml(p) == {"lr": 3e-4}


def test_load_yaml_reads_no_more_than_the_bound(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (MAX_BYTES + 10) + "\n")
    with pytest.raises(SpecError, match=re.escape(f"big.yaml: must be at most {MAX_BYTES} bytes (a study, space or config file), but got {MAX_BYTES + 13} bytes")):
        load_yaml(big)
    t0 = time.monotonic()
    with pytest.raises(SpecError, match=f"must be at most {MAX_BYTES} bytes"):
        load_yaml("/dev/zero")  # endless: never read to the end
    assert time.monotonic() - t0 < 1.0
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="latin1.yaml: must be UTF-8 text"):
        load_yaml(bad)


STUDY_YAML_BOMBS = {  # name: (which file gets it, text, what its one error line says)
    "750-byte alias bomb as the study file": ("study", billion_laughs(9), "aliases must expand to at most"),
    "alias bomb in the space's fixed": ("space", None, "aliases must expand to at most"),
    "1,000 nested lists in the space": ("space", "fixed: {a: " + "[" * 1000 + "]" * 1000 + "}\n", "YAML must nest at most"),
    "alias cycle in the study": ("study", "name: x\ntraining: &t {a: [*t]}\n", "an alias must not refer to a node that contains it"),
    "oversized study file": ("study", None, f"must be at most {MAX_BYTES} bytes"),
}


@pytest.mark.slow
def test_hpo_validate_refuses_crafted_yaml_within_a_second(tmp_path, toy_study, report_figures):
    from tests.test_expr import validate_timed

    good = toy_study(name="good")
    bads = []
    for i, (name, (which, text, _)) in enumerate(STUDY_YAML_BOMBS.items()):
        bad = tmp_path / f"bad{i}.yaml"
        if which == "space":
            space = text if text is not None else YAML_BOMBS["billion laughs in a space key"][0]
            (tmp_path / f"bad{i}_space.yaml").write_text(space)
            bad.write_text(good.read_text().replace("space: space.yaml", f"space: bad{i}_space.yaml"))
        elif text is None:  # oversized: a valid study with a huge comment
            bad.write_text(good.read_text() + "# " + "x" * MAX_BYTES + "\n")
        else:
            bad.write_text(text)
        bads.append(bad)
    results = validate_timed(good, bads, tmp_path)
    slowest = 0.0
    for i, ((name, (which, _, words)), r) in enumerate(zip(STUDY_YAML_BOMBS.items(), results)):
        lines = r["stderr"].strip().splitlines()
        assert r["rc"] == 2 and r["stdout"] == "" and len(lines) == 1, (name, r)
        # a space file's YAML problem is reported in that file, at its own key (hpo/spec/study.py)
        file = rf"bad{i}_space\.yaml" if which == "space" else rf"bad{i}\.yaml"
        assert re.match(rf"error: \S*{file}: .*{re.escape(words)}", lines[0]), (name, lines)
        assert r["seconds"] < 1.0, (name, r["seconds"])
        slowest = max(slowest, r["seconds"])
    assert not (tmp_path / "hpo.db").exists()
    report_figures("hpo validate, crafted YAML", {"refused": len(results), "of": len(STUDY_YAML_BOMBS), "slowest s": round(slowest, 3)})


# ------------------------------------------------------------------------ YAML 1.2 core schema (issue #16)
YAML12 = {  # plain scalar: what it loads as (YAML 1.1, PyYAML's default, in the comment)
    "no": "no", "yes": "yes", "on": "on", "off": "off", "y": "y", "n": "n",  # 1.1: booleans
    "No": "No", "YES": "YES", "On": "On", "OFF": "OFF", "Y": "Y", "N": "N",
    "true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
    "tRUE": "tRUE",
    "null": None, "Null": None, "NULL": None, "~": None, "nULL": "nULL",
    "010": 10, "007": 7, "-010": -10, "+12": 12, "0": 0,  # 1.1: 010 is octal 8
    "0o10": 8, "0o17": 15, "0o8": "0o8", "0x10": 16, "0xff": 255, "0xFF": 255, "0X10": "0X10",  # 1.1: 0o10 a string
    "0b101": "0b101", "1_000": 1000,  # 1.1: 0b101 is 5; digits may still be grouped
    "1:30": "1:30", "1:30:00": "1:30:00", "-1:30": "-1:30",  # 1.1: sexagesimal 90, 5400
    "2024-01-31": "2024-01-31", "2024-01-31 10:00:00": "2024-01-31 10:00:00",  # 1.1: timestamps
    "=": "=",  # 1.1: the value key (which PyYAML's safe loader then refuses)
    "3e-4": 3e-4, "1E5": 1e5, ".5": 0.5, "-.5": -0.5, "1.": 1.0, "1.0e-3": 1e-3, "+1.5": 1.5, "1_000.5": 1000.5,
    "1e5.0": "1e5.0", "e5": "e5", "0o_": "0o_", "0x_": "0x_", "._5": "._5", "0o1_7": 15,  # never a traceback
}


def test_yaml12_core_schema_plain_scalars():
    text = "".join(f"k{i}: {s}\n" for i, s in enumerate(YAML12))
    doc = loads_yaml(text)
    for i, (s, want) in enumerate(YAML12.items()):
        got = doc[f"k{i}"]
        assert type(got) is type(want) and got == want, (s, got, want)
    inf = loads_yaml("a: .inf\nb: -.inf\nc: +.inf\nd: .Inf\ne: .INF\nf: .nan\ng: .NaN\nh: .NAN\ni: .nAn\nj: inf\n")
    assert inf["a"] == inf["c"] == inf["d"] == inf["e"] == float("inf") and inf["b"] == float("-inf")
    assert all(inf[k] != inf[k] for k in "fgh") and inf["i"] == ".nAn" and inf["j"] == "inf"
    assert loads_yaml("a:\nb: [on, off]\nc: {scheduler: on, layers: 010}") == {"a": None, "b": ["on", "off"],
                                                                           "c": {"scheduler": "on", "layers": 10}}
    quoted = loads_yaml("a: '010'\nb: \"true\"\nc: 'null'\nd: '0x10'")
    assert quoted == {"a": "010", "b": "true", "c": "null", "d": "0x10"}


def test_yaml12_explicit_tags_and_merge_keys():
    assert loads_yaml('a: !!int "010"\nb: !!float "1"\nc: !!bool "TRUE"\nd: !!str 010\ne: !!int 0x1F') == {
        "a": 10, "b": 1.0, "c": True, "d": "010", "e": 31}
    for text, word in (("a: !!int 1:30", "'1:30' is not a YAML 1.2 int"), ("a: !!bool yes", "'yes' is not a YAML 1.2 bool"),
                       ("a: !!float abc", "'abc' is not a YAML 1.2 float"), ("a: !!int", "'' is not a YAML 1.2 int")):
        with pytest.raises(SpecError, match=re.escape(f"s.yaml: invalid YAML at line 1, column 4: {word}")):
            loads_yaml(text, "s.yaml")
    # ``<<`` merges (its keys may be overridden), and a key twice is still refused
    assert loads_yaml("base: &b {lr: 1, hidden: 8}\nplan: {<<: *b, hidden: 16}") == {
        "base": {"lr": 1, "hidden": 8}, "plan": {"lr": 1, "hidden": 16}}
    with pytest.raises(SpecError, match="line 1, column 23: duplicate key 'a'"):
        loads_yaml("x: {<<: {a: 1}, a: 2, a: 3}", "s.yaml")
    with pytest.raises(SpecError, match="could not determine a constructor"):
        loads_yaml("a: !!python/object:os.system x", "s.yaml")  # no objects, as before


def test_dump_yaml_quotes_what_either_yaml_would_misread():
    from hpo.spec.yaml_io import dump_yaml

    data = {s: s for s in ("no", "on", "y", "010", "0o10", "0x10", "1:30", "3e-4", ".5", "true", "null", "2024-01-31", "1_000", "=")}
    data.update(n=10, f=3e-4, t=True, z=None, i=float("inf"), plain="concat")
    text = dump_yaml(data)
    assert loads_yaml(text) == data  # this loader (YAML 1.2) reads it back
    assert yaml.safe_load(text) == data  # so does a YAML 1.1 reader
    assert "plain: concat\n" in text and "n: 10\n" in text and "t: true\n" in text
