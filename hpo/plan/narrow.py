"""Narrow a search space around the best trials of a study ("phase 2 of the plan" in one command).

For each parameter, over the top trials where it was active: numeric ranges shrink to cover the top
values with a margin (a fraction of their spread, in log space for log-scaled parameters; at least a
fraction of the original range when the top trials agree), clipped to the original bounds and aligned
to the step; categories and booleans that never appear in the top are dropped. Parameters that no
top trial used keep their original definition. The top trials become baselines of the new space
(``phase1_trial_N``), with the original baselines that still fit. The result is validated as a space
of the study's task before it is written.

:func:`narrowed_yaml` writes it: where the study's space file (the record's ``space_file``) is still there,
by editing a round-trip copy of it, so its comments, key order and layout stay and only the narrowed
params, the baselines and the description are rewritten; else (an inline space, a file gone or unreadable)
as a new YAML document.
"""

from __future__ import annotations

import copy
import logging
import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from hpo.store.record import BASELINE, OVERRIDES

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


def narrow_space(ostudy: "optuna.Study", top: int, margin: float = 0.1) -> tuple[dict, dict]:
    """Return (the narrowed space as a YAML-able dict, facts about what changed)."""
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    stored.require()
    space = copy.deepcopy(stored.spec["space"])
    trials = stored.best(top)
    params = space.get("params") or {}
    facts: dict[str, Any] = {"top": [t.number for t in trials], "changed": {}, "unchanged": []}
    new_params: dict[str, Any] = {}
    for name, p in params.items():
        p = {"type": "categorical", "choices": p} if isinstance(p, list) else dict(p)
        values = [t.params[name] for t in trials if name in t.params]
        if not values:
            new_params[name] = p
            facts["unchanged"].append(name)
            continue
        before = _describe(p)
        if p["type"] in ("float", "int"):
            p.update(_narrow_numeric(p, values, margin))
        elif p["type"] == "categorical":
            p["choices"] = [c for c in p["choices"] if any(_same(c, v) for v in values)]
        elif p["type"] == "bool":
            seen = sorted({bool(v) for v in values})
            if len(seen) == 1:
                p = {"type": "categorical", "choices": seen, **({"when": p["when"]} if p.get("when") is not None else {})}
        after = _describe(p)
        if after != before:
            facts["changed"][name] = {"from": before, "to": after}
        new_params[name] = p
    space["params"] = new_params

    # baselines: the top trials, and the original ones that still fit
    from hpo.spec.space import ParamDef, resolve_extends

    defs = {n: ParamDef(n, q["type"], q.get("low"), q.get("high"), q.get("log", False), q.get("step"), tuple(q.get("choices", ()) or ()))
            for n, q in new_params.items()}
    kept, dropped = {}, []
    original = space.get("baselines") or {}
    resolved = resolve_extends(original)  # only to check the values; `extends:` is kept as written
    for name, values in resolved.items():
        if all(defs[k].contains(v) for k, v in values.items() if k in defs):
            kept[name] = original[name]
        else:
            dropped.append(name)
    for name in list(kept):  # a plan whose parent was dropped cannot be kept
        parent, seen = kept[name].get("extends"), set()
        while parent is not None and parent not in seen:
            seen.add(parent)
            if parent in dropped:
                kept.pop(name)
                dropped.append(name)
                break
            parent = original.get(parent, {}).get("extends")
    by_plan = {t.user_attrs.get(BASELINE) for t in trials}
    for t in trials:
        if t.user_attrs.get(BASELINE) in kept:
            continue  # that plan is kept under its own name
        kept[f"phase1_trial_{t.number}"] = {**(t.user_attrs.get(OVERRIDES) or {}), **t.params}
    facts["top_plans"] = sorted(n for n in by_plan if n)
    space["baselines"] = kept
    facts["dropped_baselines"] = dropped
    space["description"] = (
        f"Narrowed from study {ostudy.study_name!r} around its top {len(trials)} trial(s) "
        f"(#{', #'.join(map(str, facts['top']))}) with margin {margin:g}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}. " + (space.get("description") or "")
    ).strip()
    return space, facts


def _narrow_numeric(p: dict, values: list, margin: float) -> dict:
    low, high, log, step = p["low"], p["high"], p.get("log", False), p.get("step")
    is_int = p["type"] == "int"
    f = (math.log if log else float)
    inv = (math.exp if log else float)
    lo, hi = f(min(values)), f(max(values))
    span = hi - lo
    full = f(high) - f(low)
    pad = max(margin * span, margin * full / 2)
    lo, hi = inv(lo - pad), inv(hi + pad)
    lo, hi = max(lo, low), min(hi, high)
    if is_int:
        s = int(step or 1)
        lo = low + math.floor((lo - low) / s) * s
        hi = low + math.ceil((hi - low) / s) * s
        lo, hi = int(max(lo, low)), int(min(hi, high))
        if (hi - lo) % s:
            hi = lo + ((hi - lo) // s) * s
    elif step:
        lo = low + math.floor((lo - low) / step + 1e-9) * step
        hi = low + math.ceil((hi - low) / step - 1e-9) * step
        lo, hi = _round(max(lo, low)), _round(min(hi, high))
    else:
        lo, hi = _sig(lo), _sig(hi)
        lo, hi = max(lo, low), min(hi, high)
    return {"low": lo, "high": hi}


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _round(x: float) -> float:
    return round(x, 10)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _describe(p: dict) -> str:
    if p["type"] in ("float", "int"):
        return f"[{p['low']}, {p['high']}]" + (" log" if p.get("log") else "")
    if p["type"] == "bool":
        return "true/false"
    return "{" + ", ".join(map(str, p["choices"])) + "}"


def narrowed_yaml(ostudy: "optuna.Study", space: dict, header: str = "") -> tuple[str, str | None]:
    """(the text of the narrowed ``space``, the space file it was edited from, or None where it was written anew)."""
    from pathlib import Path

    from hpo.errors import SpecError
    from hpo.spec.yaml_io import MAX_BYTES, dump_yaml, edit_yaml
    from hpo.store.stored import StoredStudy

    stored = StoredStudy(ostudy)
    source = stored.record.get("space_file")
    if source and Path(source).is_file():
        written = (stored.spec.get("space") or {}).get("params") or {}
        params = {}  # a parameter written as a list of choices stays one (``hidden: [8, 16]``)
        for name, q in (space.get("params") or {}).items():
            shorthand = isinstance(written.get(name), list) and isinstance(q, dict) and set(q) == {"type", "choices"}
            params[name] = list(q["choices"]) if shorthand and q["type"] == "categorical" else q
        space = {**space, "params": params} if "params" in space else space
        try:
            with open(source, "rb") as f:
                text = f.read(MAX_BYTES + 1).decode("utf-8")
            edited = edit_yaml(text, space, source)
        except (OSError, UnicodeDecodeError, SpecError) as e:
            logger.warning("%s: not edited in place (%s); the narrowed space is written anew", source, e)
            edited = None
        if edited is not None:
            return header + edited, source
    return header + dump_yaml(space), None
