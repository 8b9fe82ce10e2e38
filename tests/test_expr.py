import pytest

from hpo.expr import Expression, ExpressionError


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
    with pytest.raises(ExpressionError, match="too large"):
        Expression("2 ** 100000").evaluate({})
