"""The bounds every search-space expression runs under (:mod:`hpo.spec.expr`), and its errors.

A crafted spec cannot hang or exhaust memory: an expression's length (:data:`MAX_LENGTH`), its nesting
(:data:`MAX_DEPTH`, measured by :func:`nesting_depth` without recursion), exponents (:data:`MAX_POWER`), integer
results (:data:`MAX_INT_BITS` bits), string/list/tuple results (:data:`MAX_SEQUENCE` items, refused by
:func:`bounded_binop` before they are built) and ``round``'s digits (:data:`MAX_ROUND_DIGITS`).
"""

from __future__ import annotations

import ast
import operator
from typing import Any

from hpo.errors import HpoError


class ExpressionError(HpoError):
    exit_code = 2


class ExpressionBoundError(ExpressionError):
    """An expression (or a value it would compute) over one of the bounds of this module."""


MAX_LENGTH = 2000  # characters of one expression
MAX_DEPTH = 100  # levels of nesting (operators, calls, conditionals, lists) in one expression
MAX_POWER = 1000  # largest exponent, also the product of the exponents of nested powers
MAX_INT_BITS = 4096  # largest integer an expression computes (about 1,233 decimal digits)
MAX_SEQUENCE = 10_000  # longest string, list or tuple an expression computes
MAX_ROUND_DIGITS = 100  # largest |ndigits| of round()


def bounded_round(x: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise ExpressionBoundError(f"round() digits must be at most {MAX_ROUND_DIGITS} in magnitude, but got {ndigits}")
    return round(x, ndigits) if ndigits is not None else round(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int)  # bool too


def _is_seq(x: Any) -> bool:
    return isinstance(x, (str, list, tuple))


def _size(x: Any) -> int:
    """Items of a string, or of a list/tuple counting those of the lists and strings in it (``[[0]*100]*100``
    is 10,100): what comparing, printing or repeating it costs. Values are built within the bound, so
    this walks at most :data:`MAX_SEQUENCE` items."""
    if isinstance(x, str):
        return len(x)
    if isinstance(x, (list, tuple)):
        return len(x) + sum(_size(i) for i in x if isinstance(i, (str, list, tuple)))
    return 1


def check_size(x: Any, what: str) -> Any:
    if isinstance(x, (str, list, tuple)) and _size(x) > MAX_SEQUENCE:
        raise ExpressionBoundError(f"strings and lists must have at most {MAX_SEQUENCE} items, but {what} makes {_size(x)}")
    return x


def bounded_str(x: Any = "") -> str:
    return check_size(str(check_size(x, "the argument of str()")), "str()")


def bounded_binop(op: type, left: Any, right: Any) -> Any:
    """``left op right``, refusing (before computing it) a result over the bounds."""
    if op is ast.Pow:
        if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
            raise ExpressionBoundError(f"exponents must be at most {MAX_POWER} in magnitude, but got {right:g}")
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_INT_BITS:
            raise ExpressionBoundError(
                f"integer results must have at most {MAX_INT_BITS} bits, but {_num(left)} ** {right} "
                f"has about {abs(left).bit_length() * right}")
    elif op is ast.Mult:
        if _is_int(left) and _is_int(right):
            bits = abs(left).bit_length() + abs(right).bit_length()
            if bits > MAX_INT_BITS + 1:
                raise ExpressionBoundError(f"integer results must have at most {MAX_INT_BITS} bits, but a product has about {bits}")
        seq, n = (left, right) if _is_seq(left) else (right, left) if _is_seq(right) else (None, None)
        if seq is not None and _is_int(n) and _size(seq) * max(n, 0) > MAX_SEQUENCE:
            raise ExpressionBoundError(
                f"strings and lists must have at most {MAX_SEQUENCE} items, but a repetition makes {_size(seq) * n:g}")
    elif op is ast.Add:
        if _is_seq(left) and _is_seq(right) and _size(left) + _size(right) > MAX_SEQUENCE:
            raise ExpressionBoundError(
                f"strings and lists must have at most {MAX_SEQUENCE} items, but a sum makes {_size(left) + _size(right)}")
        if _is_int(left) and _is_int(right) and max(abs(left).bit_length(), abs(right).bit_length()) > MAX_INT_BITS:
            raise ExpressionBoundError(f"integer results must have at most {MAX_INT_BITS} bits")
    elif op is ast.Mod and isinstance(left, str):
        raise ExpressionBoundError("% is arithmetic only: string formatting is not allowed")
    return BINOPS[op](left, right)


def _num(x: Any) -> str:
    text = str(x)
    return text if len(text) <= 20 else text[:17] + "..."


def nesting_depth(tree: ast.AST) -> int:
    """The nesting depth of ``tree``, without recursion (a deep tree must not overflow the stack)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            return deepest
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
                stack.append((child, d + 1))
    return deepest


BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
