"""A space's and a study's named baselines -> checked :class:`hpo.spec.space.Baseline` plans.

``extends:`` is resolved by :func:`hpo.spec.space.resolve_extends` (inherited parameters that the
child's own switches turn off are dropped); then every value must lie in its parameter's range (or
be a valid value of its config key), give every active parameter and no inactive one, meet the
constraints and make a valid config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from hpo.errors import name_rule
from hpo.spec.expr import ExpressionError
from hpo.spec.key_types import KeyTypes
from hpo.spec.space import Baseline, CompiledSpace, resolve_extends

if TYPE_CHECKING:
    from hpo.tasks.base import Task

Adder = Callable[..., None]


def compile_baselines(raw: Mapping[str, dict], space: CompiledSpace, task_cls: type["Task"], types: KeyTypes,
                      adder: Callable[[str], Adder]) -> dict[str, Baseline]:
    """``adder(name)`` is the problem reporter of the file the baseline is written in."""
    known = task_cls.config_keys()

    def drop_switched_off(merged: dict, own: dict) -> dict:
        # parameters inherited from the parent that this baseline's switches turn off are dropped
        overrides = {k: v for k, v in merged.items() if k not in space.param_names}
        active = set(space.active(merged, overrides))
        return {k: v for k, v in merged.items() if k not in space.param_names or k in active or k in own}

    resolved = resolve_extends(raw, merge=drop_switched_off,
                               report=lambda name, rule, parent: adder(name)(f"baselines.{name}.extends", rule, parent))
    out: dict[str, Baseline] = {}
    for name in raw:
        if name not in resolved:
            continue
        values = resolved[name]
        add = adder(name)
        path = f"baselines.{name}"
        bad = False
        for key, value in values.items():
            if key in space.param_names:
                p = space.param(key)
                if not p.contains(value):
                    add(f"{path}.{key}", f"must lie in params.{key}'s range {p.describe()} (widen the range to measure this baseline inside the study)", value)
                    bad = True
            elif key in dict(space.derived):
                add(f"{path}.{key}", "is derived from other keys and cannot be set", value)
                bad = True
            elif key not in known:
                add(f"{path}.{key}", name_rule(f"config key of task {task_cls.name}", key, known), key)
                bad = True
            else:
                msg = types.check(key, value)
                if msg:
                    add(f"{path}.{key}", msg, value)
                    bad = True
        if bad:
            continue
        baseline = _plan(name, values, space, task_cls, add)
        if baseline is not None:
            out[name] = baseline
    return out


def _plan(name: str, values: dict[str, Any], space: CompiledSpace, task_cls: type["Task"], add: Adder) -> Baseline | None:
    """The baseline of checked values, if it resolves to a valid config (else its problems are added)."""
    path = f"baselines.{name}"
    bad = False
    params, overrides = space.split_baseline(values)
    for k in [k for k in values if k in space.param_names and k not in params]:
        p = space.param(k)
        add(f"{path}.{k}", f"is inactive in this baseline (its condition `{p.when.source}` is false), so it must not be given", values[k])
        bad = True
    try:
        config = space.resolve(params, overrides)
    except KeyError as e:
        add(path, f"must give every active parameter: {e.args[0]}", has_got=False)
        return None
    except ExpressionError as e:
        add(path, f"derived values cannot be computed: {e}", has_got=False)
        return None
    for c in space.violated(config):
        add(path, f"must meet the constraint `{c}`", has_got=False)
        bad = True
    try:
        task_cls.split_config(config)
    except (ValueError, TypeError, KeyError) as e:
        add(path, f"must make a valid config: {e}", has_got=False)
        bad = True
    return None if bad else Baseline(name, params, overrides)
