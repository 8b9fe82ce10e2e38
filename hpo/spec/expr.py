"""A safe evaluator for the expressions in search spaces (``when:``, ``derived:``, ``constraints:``).

Expressions are Python-like: names of config keys, numbers, strings, ``True``/``False``/``None``
(also ``true``/``false``/``null``), arithmetic ``+ - * / // % **``, comparisons (chained too),
``and``/``or``/``not``, ``x if c else y``, ``in`` over lists/tuples, and calls of a few pure
functions (:data:`FUNCTIONS`). Nothing else parses: no attributes, subscripts, lambdas or
comprehensions, so a spec can never run code. Never ``eval``.

Every expression is bounded, so a crafted spec cannot hang or exhaust memory: its length
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


def _short(source: str) -> str:
    from hpo.errors import show

    return show(source, 60)


def _round(x: Any, ndigits: Any = None) -> Any:
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


def _check_size(x: Any, what: str) -> Any:
    if isinstance(x, (str, list, tuple)) and _size(x) > MAX_SEQUENCE:
        raise ExpressionBoundError(f"strings and lists must have at most {MAX_SEQUENCE} items, but {what} makes {_size(x)}")
    return x


def _str(x: Any = "") -> str:
    return _check_size(str(_check_size(x, "the argument of str()")), "str()")


def _bounded_binop(op: type, left: Any, right: Any) -> Any:
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
    return _BINOPS[op](left, right)


def _num(x: Any) -> str:
    text = str(x)
    return text if len(text) <= 20 else text[:17] + "..."


def _depth(tree: ast.AST) -> int:
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


FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": _round,
    "int": int,
    "float": float,
    "bool": bool,
    "str": _str,
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
        depth = _depth(tree.body)
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
            if type(node.op) not in _BINOPS:
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
            return _bounded_binop(type(node.op), left, right)
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
            return _check_size([self._eval(v, env) for v in node.elts], "a list")
        if isinstance(node, ast.Tuple):
            return _check_size(tuple(self._eval(v, env) for v in node.elts), "a tuple")
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(self._eval(a, env) for a in node.args))
        raise ExpressionError(f"{_short(self.source)}: cannot evaluate {type(node).__name__}")  # unreachable

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _names_in(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id not in CONSTANTS for n in ast.walk(node))
