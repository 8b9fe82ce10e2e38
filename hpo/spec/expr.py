"""A safe evaluator for the expressions in search spaces (``when:``, ``derived:``, ``constraints:``).

Expressions are Python-like: names of config keys, numbers, strings, ``True``/``False``/``None``
(also ``true``/``false``/``null``), arithmetic ``+ - * / // % **``, comparisons (chained too),
``and``/``or``/``not``, ``x if c else y``, ``in`` over lists/tuples, and calls of a few pure
functions (:data:`FUNCTIONS`). Nothing else parses: no attributes, subscripts, lambdas or
comprehensions, so a spec can never run code. Never ``eval``.

Every expression is bounded (:mod:`hpo.spec.expr_bounds`), so a crafted spec cannot hang or exhaust memory: its length
(:data:`MAX_LENGTH` characters), its nesting (:data:`MAX_DEPTH` levels, checked without recursion before
anything walks the tree), exponents (:data:`MAX_POWER`, also across nested powers such as
``(x**1000)**1000``), integer results (:data:`MAX_INT_BITS` bits), string/list/tuple results
(:data:`MAX_SEQUENCE` items; ``'a' * 10**9`` is refused before it is built) and ``round``'s digits.
Parts without names are evaluated once when the expression is parsed, so ``10**10**10`` is refused
by ``hpo validate`` whatever the trials would sample. ``%`` is arithmetic only (no string formatting).
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Mapping

from hpo.spec.expr_bounds import (
    BINOPS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_POWER,
    ExpressionBoundError,
    ExpressionError,
    bounded_binop,
    bounded_round,
    bounded_str,
    check_size,
    nesting_depth,
)


def _short(source: str) -> str:
    from hpo.errors import show

    return show(source, 60)


FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": bounded_round,
    "int": int,
    "float": float,
    "bool": bool,
    "str": bounded_str,
    "len": len,
    "log2": math.log2,
    "log10": math.log10,
    "sqrt": math.sqrt,
    "ceil": math.ceil,
    "floor": math.floor,
}
CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}

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


class Expression:
    """A parsed, checked expression. ``names`` are the config keys it reads."""

    def __init__(self, source: str | bool | int | float) -> None:
        self.source = str(source).strip() if not isinstance(source, bool) else ("True" if source else "False")
        if not self.source:
            raise ExpressionError("empty expression")
        if len(self.source) > MAX_LENGTH:
            raise ExpressionBoundError(f"an expression must have at most {MAX_LENGTH} characters, but this one has {len(self.source)}")
        try:
            tree = ast.parse(self.source, mode="eval")
        except SyntaxError as e:
            if "too many nested parentheses" in str(e.msg):
                raise ExpressionBoundError(f"parentheses must nest at most 200 levels deep (Python's parser), "
                                           f"but {_short(self.source)} nests deeper") from None
            raise ExpressionError(f"cannot parse expression {_short(self.source)}: {e.msg}") from None
        except (RecursionError, MemoryError):  # Python's own parser on deep nesting
            raise ExpressionBoundError(f"an expression must nest at most {MAX_DEPTH} levels deep, but {_short(self.source)} nests deeper") from None
        depth = nesting_depth(tree.body)
        if depth > MAX_DEPTH:
            raise ExpressionBoundError(f"an expression must nest at most {MAX_DEPTH} levels deep, but got {depth} or more")
        self._tree = tree.body
        self.names: set[str] = set()
        self._check(self._tree)
        self._folded: dict[int, Any] | None = {}  # values of constant parts while folding (each computed once)
        try:
            self._fold(self._tree)
        finally:
            self._folded = None

    def _fold(self, node: ast.AST) -> tuple[bool, Any]:
        """Evaluate the parts without names once (bounded), so that a constant over a bound is refused
        when the spec is read. Returns (constant?, value). Only bound errors are raised here; other
        errors (1/0) are the evaluation's."""
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
        results = [self._fold(c) for c in children]
        if isinstance(node, ast.Name):
            return (node.id in CONSTANTS, CONSTANTS.get(node.id))
        if isinstance(node, ast.Call):
            results = results[1:]  # the function's name is not a value
        if not all(const for const, _ in results):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                self._check_power_chain(node)
            return (False, None)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            self._check_power_chain(node)
        try:
            value = self._eval(node, {})
        except ExpressionBoundError as e:
            raise ExpressionBoundError(f"{_short(self.source)}: {e}") from None
        except ExpressionError:
            return (False, None)
        except Exception:  # 1 / 0 and the like: reported when evaluated
            return (False, None)
        self._folded[id(node)] = value
        return (True, value)

    def _check_power_chain(self, node: ast.BinOp) -> None:
        """Nested powers multiply their exponents: (x**1000)**1000 is x**1000000."""
        total, cur = 1.0, node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, ast.Pow):
            try:
                exp = self._eval(cur.right, {}) if not _names_in(cur.right) else None
            except Exception:
                exp = None
            if isinstance(exp, (int, float)) and not isinstance(exp, bool):
                total *= max(abs(exp), 1)
            cur = cur.left
            while isinstance(cur, ast.UnaryOp):
                cur = cur.operand
        if total > MAX_POWER:
            raise ExpressionBoundError(
                f"exponents must be at most {MAX_POWER} in magnitude (nested powers multiply), but {_short(self.source)} "
                f"raises to {total:g}")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool, type(None))):
                raise ExpressionError(f"{_short(self.source)}: constant {node.value!r} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id not in CONSTANTS and node.id not in FUNCTIONS:
                self.names.add(node.id)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in BINOPS:
                raise ExpressionError(f"{_short(self.source)}: operator {type(node.op).__name__} is not allowed")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise ExpressionError(f"{_short(self.source)}: operator {type(node.op).__name__} is not allowed")
            self._check(node.operand)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise ExpressionError(f"{_short(self.source)}: comparison {type(op).__name__} is not allowed")
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
                    f"{_short(self.source)}: function {name!r} is not allowed (allowed: {', '.join(sorted(FUNCTIONS))})"
                )
            if node.keywords:
                raise ExpressionError(f"{_short(self.source)}: keyword arguments are not allowed")
            for a in node.args:
                self._check(a)
        else:
            raise ExpressionError(f"{_short(self.source)}: {type(node).__name__} is not allowed in an expression")

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        missing = self.names - set(env)
        if missing:
            raise ExpressionError(f"{_short(self.source)}: unknown name(s) {', '.join(sorted(missing))}")
        try:
            return self._eval(self._tree, env)
        except ExpressionBoundError as e:
            raise ExpressionBoundError(f"{_short(self.source)}: {e}") from None
        except ExpressionError:
            raise
        except (RecursionError, MemoryError):
            raise ExpressionBoundError(f"{_short(self.source)}: too large to evaluate") from None
        except Exception as e:  # ZeroDivisionError, TypeError between operands, ...
            raise ExpressionError(f"{_short(self.source)}: {type(e).__name__}: {e}") from None

    def _eval(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        if self._folded and id(node) in self._folded:
            return self._folded[id(node)]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            return CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, env), self._eval(node.right, env)
            return bounded_binop(type(node.op), left, right)
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
            return check_size([self._eval(v, env) for v in node.elts], "a list")
        if isinstance(node, ast.Tuple):
            return check_size(tuple(self._eval(v, env) for v in node.elts), "a tuple")
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(self._eval(a, env) for a in node.args))
        raise ExpressionError(f"{_short(self.source)}: cannot evaluate {type(node).__name__}")  # unreachable

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _names_in(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id not in CONSTANTS for n in ast.walk(node))
