"""A safe evaluator for the expressions in search spaces (``when:``, ``derived:``, ``constraints:``).

Expressions are Python-like: names of config keys, numbers, strings, ``True``/``False``/``None``
(also ``true``/``false``/``null``), arithmetic ``+ - * / // % **``, comparisons (chained too),
``and``/``or``/``not``, ``x if c else y``, ``in`` over lists/tuples, and calls of a few pure
functions (:data:`FUNCTIONS`). Nothing else parses: no attributes, subscripts, lambdas or
comprehensions, so a spec can never run code. Never ``eval``.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Mapping

from hpo.errors import HpoError


class ExpressionError(HpoError):
    exit_code = 2


FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "len": len,
    "log2": math.log2,
    "log10": math.log10,
    "sqrt": math.sqrt,
    "ceil": math.ceil,
    "floor": math.floor,
}
CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_MAX_POWER = 1000


class Expression:
    """A parsed, checked expression. ``names`` are the config keys it reads."""

    def __init__(self, source: str | bool | int | float) -> None:
        self.source = str(source).strip() if not isinstance(source, bool) else ("True" if source else "False")
        if not self.source:
            raise ExpressionError("empty expression")
        try:
            tree = ast.parse(self.source, mode="eval")
        except SyntaxError as e:
            raise ExpressionError(f"cannot parse expression {self.source!r}: {e.msg}") from None
        self._tree = tree.body
        self.names: set[str] = set()
        self._check(self._tree)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool, type(None))):
                raise ExpressionError(f"{self.source!r}: constant {node.value!r} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id not in CONSTANTS and node.id not in FUNCTIONS:
                self.names.add(node.id)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise ExpressionError(f"{self.source!r}: operator {type(node.op).__name__} is not allowed")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise ExpressionError(f"{self.source!r}: operator {type(node.op).__name__} is not allowed")
            self._check(node.operand)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise ExpressionError(f"{self.source!r}: comparison {type(op).__name__} is not allowed")
            self._check(node.left)
            for c in node.comparators:
                self._check(c)
        elif isinstance(node, ast.IfExp):
            for v in (node.test, node.body, node.orelse):
                self._check(v)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for v in node.elts:
                self._check(v)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ExpressionError(
                    f"{self.source!r}: function {name!r} is not allowed (allowed: {', '.join(sorted(FUNCTIONS))})"
                )
            if node.keywords:
                raise ExpressionError(f"{self.source!r}: keyword arguments are not allowed")
            for a in node.args:
                self._check(a)
        else:
            raise ExpressionError(f"{self.source!r}: {type(node).__name__} is not allowed in an expression")

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        missing = self.names - set(env)
        if missing:
            raise ExpressionError(f"{self.source!r}: unknown name(s) {', '.join(sorted(missing))}")
        try:
            return self._eval(self._tree, env)
        except ExpressionError:
            raise
        except Exception as e:  # ZeroDivisionError, TypeError between operands, ...
            raise ExpressionError(f"{self.source!r}: {type(e).__name__}: {e}") from None

    def _eval(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            return CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, env), self._eval(node.right, env)
            if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > _MAX_POWER:
                raise ExpressionError(f"{self.source!r}: exponent {right} is too large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, env))
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                value: Any = True
                for v in node.values:
                    value = self._eval(v, env)
                    if not value:
                        return value
                return value
            value = False
            for v in node.values:
                value = self._eval(v, env)
                if value:
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, env)
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp, env)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self._eval(node.body, env) if self._eval(node.test, env) else self._eval(node.orelse, env)
        if isinstance(node, ast.List):
            return [self._eval(v, env) for v in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self._eval(v, env) for v in node.elts)
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(self._eval(a, env) for a in node.args))
        raise ExpressionError(f"{self.source!r}: cannot evaluate {type(node).__name__}")  # unreachable

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"
