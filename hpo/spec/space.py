"""A compiled search space: typed parameters in declaration order, and the rules to sample them.

Sampling is define-by-run (Optuna's model): parameters are walked in the order the file declares
them; one whose ``when:`` is false is skipped, so it is neither sampled nor stored. A condition that
names a parameter which is itself inactive is false. Then ``derived:`` values are computed in order,
and ``constraints:`` are checked before any training (a constraint that names an inactive
parameter does not apply).

The same walk resolves a config without a trial (:meth:`CompiledSpace.resolve`), for baselines,
``hpo train --set`` and export, so there is one definition of what a config is.
:func:`resolve_extends` is the one reading of a baseline's ``extends:`` (the loader and ``hpo narrow``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hpo.errors import name_rule
from hpo.spec.expr import Expression, ExpressionError

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class ParamDef:
    name: str
    kind: str  # float | int | categorical | bool
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    when: Expression | None = None

    def suggest(self, trial: "optuna.Trial") -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "bool":
            return trial.suggest_categorical(self.name, (False, True))
        return trial.suggest_categorical(self.name, self.choices)

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "bool":
            return CategoricalDistribution((False, True))
        return CategoricalDistribution(self.choices)

    def contains(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "categorical":
            return any(_same(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def grid_values(self) -> list | None:
        """Every value of the parameter, or None when there are infinitely many."""
        if self.kind == "bool":
            return [False, True]
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [round(self.low + i * self.step, 12) for i in range(n + 1)]
        return None

    def describe(self) -> str:
        if self.kind in ("float", "int"):
            extra = " log" if self.log else (f" step {self.step}" if self.step and self.step != 1 else "")
            return f"[{self.low}, {self.high}]{extra}"
        if self.kind == "bool":
            return "true/false"
        return "{" + ", ".join(map(str, self.choices)) + "}"


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )


@dataclass(frozen=True)
class Constraint:
    expr: Expression
    message: str | None = None

    def describe(self) -> str:
        return self.message or self.expr.source


@dataclass(frozen=True)
class Baseline:
    name: str
    params: dict  # values of the active parameters
    overrides: dict  # values of other keys (fixed / training) for this trial only
    ablation: dict | None = None  # an ablation run's {knob, value, seed} (hpo.spec.ablations)


@dataclass
class CompiledSpace:
    params: list[ParamDef]
    fixed: dict[str, Any] = field(default_factory=dict)
    derived: list[tuple[str, Expression]] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    baselines: dict[str, Baseline] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # the study's training defaults (explicit)
    implicit: dict[str, Any] = field(default_factory=dict)  # dataclass defaults, visible to expressions

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> ParamDef:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    # -- the one walk ---------------------------------------------------------------------
    def _walk(self, value_of: Callable[[ParamDef], Any], overrides: Mapping[str, Any] | None) -> tuple[dict, dict]:
        explicit: dict[str, Any] = {**self.defaults, **self.fixed, **(overrides or {})}
        env: dict[str, Any] = {**self.implicit, **explicit}
        params: dict[str, Any] = {}
        for p in self.params:
            if p.when is not None and not is_true(p.when, env, self.param_names, params):
                explicit.pop(p.name, None)
                env[p.name] = None if p.name not in self.implicit else self.implicit[p.name]
                continue
            value = value_of(p)
            params[p.name] = value
            explicit[p.name] = env[p.name] = value
        for name, expr in self.derived:
            explicit[name] = env[name] = _tidy(expr.evaluate(env))
        return explicit, params

    def sample(self, trial: "optuna.Trial", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Suggest the active parameters on ``trial``; return the trial's full explicit config."""
        config, _ = self._walk(lambda p: p.suggest(trial), overrides)
        return config

    def resolve(self, params: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, *, strict: bool = True) -> dict[str, Any]:
        """The full config for given parameter values. ``strict``: every active parameter must be
        given (KeyError names the missing ones) and no inactive one."""
        missing: list[str] = []

        def value_of(p: ParamDef) -> Any:
            if p.name not in params:
                missing.append(p.name)
                return None
            return params[p.name]

        config, used = self._walk(value_of, overrides)
        if strict and missing:
            raise KeyError(f"missing values for the active parameter(s) {', '.join(missing)}")
        if strict:
            unused = [k for k in params if k in self.param_names and k not in used]
            if unused:
                raise KeyError(f"values given for inactive parameter(s) {', '.join(unused)}")
        return config

    def active(self, values: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> list[str]:
        """Names of the parameters that are active for ``values`` (given values, others ignored)."""
        out: list[str] = []
        self._walk(lambda p: (out.append(p.name), values.get(p.name))[1], overrides)
        return out

    def violated(self, config: Mapping[str, Any]) -> list[str]:
        """The constraints ``config`` does not meet."""
        env = {**self.implicit, **config}
        bad = []
        for c in self.constraints:
            if any(env.get(n) is None and n in self.param_names and n not in config for n in c.expr.names):
                continue  # names an inactive parameter
            try:
                ok = c.expr.evaluate(env)
            except ExpressionError as e:
                bad.append(f"{c.describe()} ({e})")
                continue
            if not ok:
                bad.append(c.describe())
        return bad

    def grid(self) -> dict[str, list]:
        out = {}
        for p in self.params:
            values = p.grid_values()
            if values is None:
                raise ValueError(f"parameter {p.name!r} is a float without step: a grid needs a finite set of values")
            out[p.name] = values
        return out

    def split_baseline(self, values: Mapping[str, Any]) -> tuple[dict, dict]:
        """Split a baseline's values into (active params, overrides of other keys)."""
        overrides = {k: v for k, v in values.items() if k not in self.param_names}
        active = set(self.active(values, overrides))
        return {k: values[k] for k in self.param_names if k in active and k in values}, overrides


def resolve_extends(
    baselines: Mapping[str, Mapping[str, Any]],
    *,
    report: Callable[[str, str, Any], None] | None = None,
    merge: Callable[[dict, dict], dict] | None = None,
) -> dict[str, dict]:
    """Each baseline's values with ``extends:`` resolved: its own values over its parent's, recursively
    (in resolution order, parents first). ``merge(merged, own)`` may adjust a child's merged values.

    A parent that is not a baseline or that closes a cycle is reported as ``report(name, rule, parent)``
    and that baseline (and every one extending it) is left out; without ``report`` such a parent is
    ignored and the baseline keeps its own values.
    """
    out: dict[str, dict] = {}
    failed: set[str] = set()

    def resolve(name: str, stack: tuple) -> dict | None:
        if name in out:
            return out[name]
        if name in failed:
            return None
        own = dict(baselines[name])
        parent_name = own.pop("extends", None)
        values = own
        if parent_name is not None:
            rule = None
            if parent_name not in baselines:
                rule = name_rule("baseline", parent_name, baselines)
            elif parent_name in stack or parent_name == name:
                rule = "must not form a cycle: " + " -> ".join([*stack, name, parent_name])
            if rule is None:
                parent = resolve(parent_name, (*stack, name))
                if parent is None:
                    failed.add(name)
                    return None
                merged = {**parent, **own}
                values = merge(merged, own) if merge is not None else merged
            elif report is not None:
                report(name, rule, parent_name)
                failed.add(name)
                return None
        out[name] = values
        return values

    for n in baselines:
        resolve(n, ())
    return out


def is_true(expr: Expression, env: Mapping[str, Any], param_names: Sequence[str], active: Mapping[str, Any]) -> bool:
    """A ``when:`` condition: false if it names a parameter that is inactive."""
    for n in expr.names:
        if n in param_names and n not in active:
            return False
    return bool(expr.evaluate(env))


def _tidy(value: Any) -> Any:
    """Derived floats without binary noise (1 - 0.8 is 0.2, not 0.19999999999999996)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value
