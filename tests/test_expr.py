import pytest

from hpo.spec.expr import Expression, ExpressionError


@pytest.mark.parametrize(
    "source, env, expected",
    [
        ("4 * d_model", {"d_model": 512}, 2048),
        ("d_model % nhead == 0", {"d_model": 768, "nhead": 16}, True),
        ("d_model % nhead == 0", {"d_model": 768, "nhead": 10}, False),
        ("use_middle_fusion", {"use_middle_fusion": False}, False),
        ("fusion_type == 'cross_attn'", {"fusion_type": "cross_attn"}, True),
        ("fusion_type in ['gated', 'gated_residual']", {"fusion_type": "concat"}, False),
        ("1 <= depth < 3", {"depth": 3}, False),
        ("max(a, b) if flag else -a", {"a": 2, "b": 5, "flag": True}, 5),
        ("not flag and true", {"flag": False}, True),
        ("lr * 10 ** -1", {"lr": 1.0}, 0.1),
        ("ceil(log2(n))", {"n": 9}, 4),
    ],
)
def test_evaluates(source, env, expected):
    assert Expression(source).evaluate(env) == expected


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "x.__class__",
        "x[0]",
        "(lambda: 1)()",
        "[i for i in range(3)]",
        "eval('1')",
        "a if",
        "",
    ],
)
def test_rejects_code(source):
    with pytest.raises(ExpressionError):
        Expression(source)


def test_names_and_errors():
    e = Expression("a * b + c")
    assert e.names == {"a", "b", "c"}
    with pytest.raises(ExpressionError, match="unknown name"):
        e.evaluate({"a": 1, "b": 2})
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        Expression("a / b").evaluate({"a": 1, "b": 0})
    with pytest.raises(ExpressionError, match="exponents must be at most 1000"):
        Expression("2 ** 100000")  # a constant part over a bound is refused when parsed


# ------------------------------------------------------------------------ bounds (issue #13, item 4)
import json
import subprocess
import sys
import textwrap
import time

from hpo.spec.expr import MAX_DEPTH, MAX_LENGTH, ExpressionBoundError
from tests.conftest import ROOT, TOY_SPACE

BOMBS = {  # name: (source, env, what the error says)
    "tower of powers": ("((x**1000)**1000)**1000 > 0", {"x": 2}, "exponents must be at most 1000"),
    "power tower of constants": ("10**10**10", {}, "exponents must be at most 1000"),
    "string repetition": ("'a'*10**9", {}, "at most 10000 items"),
    "repetition by a name": ("x * 'a'", {"x": 10**9}, "at most 10000 items"),
    "list repetition": ("[0] * x", {"x": 10**9}, "at most 10000 items"),
    "big integer power": ("(x * 1000) ** 999", {"x": 16}, "at most 4096 bits"),
    "big integer product": ("(x*x)*(x*x)", {"x": 2**2000}, "at most 4096 bits"),
    "round digits": ("round(x, -10**9)", {"x": 5}, "round() digits must be at most"),
    "string formatting": ("'%*d' % (x, 1)", {"x": 10**9}, "string formatting is not allowed"),
    "1,000 nested not": ("not " * 1000 + "x", {"x": 1}, f"at most {MAX_LENGTH} characters"),
    "150 nested not": ("not " * 150 + "x", {"x": 1}, f"at most {MAX_DEPTH} levels deep"),
    "1,500 unary minus": ("-" * 1500 + "x", {"x": 1}, f"at most {MAX_DEPTH} levels deep"),
    "left-deep sum": ("+".join(["x"] * 500), {"x": 1}, f"at most {MAX_DEPTH} levels deep"),
    "500 nested parentheses": ("(" * 500 + "x" + ")" * 500, {"x": 1}, "parentheses must nest at most 200"),
    "1,000 nested parentheses": ("(" * 1000 + "x" + ")" * 1000, {"x": 1}, f"at most {MAX_LENGTH} characters"),
    "100k-character expression": ("x + " * 25000 + "x", {"x": 1}, f"at most {MAX_LENGTH} characters"),
    "nested list repetition": ("[[0] * 1000] * 1000", {}, "at most 10000 items"),
    "list of big lists": ("[x, x, x, x, x, x, x, x, x, x, x] == y", {"x": [0] * 1000, "y": []}, "at most 10000 items"),
    "comparing nested lists": ("[[x] * 100] * 100 == [[x] * 100] * 100", {"x": [0] * 100}, "at most 10000 items"),
    "str() of a big list": ("str(x)", {"x": ["a" * 5000] * 3}, "at most 10000 items"),
}


def test_crafted_expressions_are_refused_at_once(report_figures):
    slowest = 0.0
    for name, (source, env, words) in BOMBS.items():
        t0 = time.monotonic()
        with pytest.raises(ExpressionBoundError, match=re.escape(words)) as e:
            Expression(source).evaluate(env)
        slowest = max(slowest, time.monotonic() - t0)
        assert time.monotonic() - t0 < 0.5, name
        assert "\n" not in str(e.value) and len(str(e.value)) < 400, name  # one line; the source is shortened
    report_figures("crafted expressions (unit)", {"refused": len(BOMBS), "of": len(BOMBS), "slowest s": round(slowest, 4)})


def test_bounds_leave_normal_expressions_alone():
    assert Expression("2 ** 1000").evaluate({}) == 2 ** 1000  # at the bound
    assert Expression("(x ** 2) ** 3").evaluate({"x": 3}) == 729
    assert Expression("x ** 0.5").evaluate({"x": 16.0}) == 4.0
    assert Expression("'ab' * 3 + 'c'").evaluate({}) == "abababc"
    assert Expression("x % 7").evaluate({"x": 30}) == 2
    assert Expression("round(x, 2)").evaluate({"x": 1.23456}) == 1.23
    assert Expression("not " * 50 + "x").evaluate({"x": True}) is True
    assert Expression("+".join(["x"] * 90)).evaluate({"x": 1}) == 90
    assert Expression("(" * 150 + "x" + ")" * 150).evaluate({"x": 7}) == 7
    assert Expression("1 / 0 if x else 1").evaluate({"x": False}) == 1  # other errors stay the evaluation's
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        Expression("1 / 0").evaluate({})


import re  # noqa: E402  (used by the bounds tests above)

_VALIDATE = textwrap.dedent('''
    import contextlib, io, json, sys, time
    from hpo.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["validate", sys.argv[1]]) == 0   # warm up: imports, the task registry
    for bad in sys.argv[2:]:
        out, err = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["validate", bad])
        print(json.dumps({"rc": rc, "seconds": time.monotonic() - t0, "stdout": out.getvalue(), "stderr": err.getvalue()}))
''')


def validate_timed(good, bads, cwd) -> list[dict]:
    """`hpo validate` of each of BADS in one fresh process, after one validate of GOOD (so imports and
    the task registry are not timed): [{rc, seconds, stdout, stderr}]. A traceback fails the test."""
    r = subprocess.run([sys.executable, "-c", _VALIDATE, str(good), *map(str, bads)], cwd=cwd, capture_output=True,
                       text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    out = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(out) == len(bads)
    return out


SPEC_BOMBS = {  # name: (where in the space, the expression, what the error says)
    "constraint ((hidden**1000)**1000)**1000": ("constraints", "((hidden**1000)**1000)**1000 > 0", "exponents must be at most 1000"),
    "derived 10**10**10": ("derived", "10**10**10", "exponents must be at most 1000"),
    "constraint 'a'*10**9": ("constraints", "'a'*10**9 == 'b'", "at most 10000 items"),
    "when with 1,000 nested not": ("when", "not " * 1000 + "use_second_modality", f"at most {MAX_LENGTH} characters"),
    "when with 150 nested not": ("when", "not " * 150 + "use_second_modality", f"at most {MAX_DEPTH} levels deep"),
    "constraint with 500 nested parentheses": ("constraints", "(" * 500 + "hidden" + ")" * 500 + " > 0", "parentheses must nest at most 200"),
    "constraint (hidden*1000)**999, too big for the baselines' values": ("constraints", "(hidden * 1000) ** 999 > 0", "at most 4096 bits"),
}


@pytest.mark.slow
def test_hpo_validate_refuses_crafted_expressions_within_a_second(tmp_path, toy_study, report_figures):
    """Each crafted expression in a study's space: `hpo validate` exits 2 with one error line per problem
    (`file: key: what must hold, but got X`) within a second, no traceback, nothing stored."""
    good = toy_study(name="good")
    bads, keys = [], []
    for i, (name, (where, source, _)) in enumerate(SPEC_BOMBS.items()):
        space = TOY_SPACE
        if where == "constraints":
            space += f"constraints: [{json.dumps(source)}]\n"
            keys.append("constraints.0")
        elif where == "derived":
            space = space.replace('batch_size: "2 * hidden"', f"batch_size: {json.dumps(source)}")
            keys.append("derived.batch_size")
        else:
            space = space.replace("when: use_second_modality}", f"when: {json.dumps(source)}}}")
            keys.append("params.fusion.when")
        assert space != TOY_SPACE
        (tmp_path / f"bad{i}_space.yaml").write_text(textwrap.dedent(space))
        bad = tmp_path / f"bad{i}.yaml"
        bad.write_text(good.read_text().replace("space: space.yaml", f"space: bad{i}_space.yaml"))
        bads.append(bad)
    results = validate_timed(good, bads, tmp_path)
    slowest = 0.0
    for i, ((name, (_, _, words)), key, r) in enumerate(zip(SPEC_BOMBS.items(), keys, results)):
        assert r["rc"] == 2 and r["stdout"] == "", (name, r)
        lines = r["stderr"].strip().splitlines()
        file = rf"error: \S*bad{i}_space\.yaml: "
        if "baselines" in name:  # only the baselines' values make it too large: one line per baseline
            assert [line.split(": ")[2] for line in lines] == ["baselines.current", "baselines.single_modality"], (name, lines)
            assert all(re.match(file + r"baselines\.\w+: must meet the constraint .*" + re.escape(words), line) for line in lines), lines
        else:
            assert len(lines) == 1, (name, lines)
            assert re.match(file + re.escape(key) + r": must be a valid expression .*" + re.escape(words) + r".*, but got ", lines[0]), (name, lines)
        assert all(len(line) < 600 for line in lines), lines
        assert r["seconds"] < 1.0, (name, r["seconds"])
        slowest = max(slowest, r["seconds"])
    assert not (tmp_path / "hpo.db").exists()
    report_figures("hpo validate, crafted expressions", {"refused": len(results), "of": len(SPEC_BOMBS), "slowest s": round(slowest, 3)})
