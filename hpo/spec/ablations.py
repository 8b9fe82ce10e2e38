"""Ablations: one knob at a time around a named baseline (``ablations:`` of a study or stage), expanded into
named trials that run first like baselines.

Each value of each knob is one run, ``ablation.KNOB=VALUE``, extending the baseline with that one change;
with ``seeds:`` every run (and the baseline itself, ``ablation.baseline``) is repeated per training seed,
``...seedS``. Without seeds the baseline's own trial is the reference row. Every run carries user attr
``ablation`` = {knob, value, seed} (``knob`` None for the reference), which the report groups by
(:mod:`hpo.analysis.ablation`). Values are checked as the baseline's would be (type, the parameter's range).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Collection

from hpo.errors import name_rule

if TYPE_CHECKING:
    from hpo.spec.schema import AblationSpec
    from hpo.tasks import Task

PREFIX = "ablation."
REFERENCE = PREFIX + "baseline"
Adder = Callable[..., None]


def run_name(knob: str | None, value: Any = None, seed: int | None = None) -> str:
    """``ablation.lr=0.0003.seed1``; ``ablation.baseline.seed1`` for the reference (knob None)."""
    name = REFERENCE if knob is None else f"{PREFIX}{knob}={_show(value)}"
    return name + (f".seed{seed}" if seed is not None else "")


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def expand_ablations(spec: "AblationSpec", baselines: Collection[str], task_cls: type["Task"], add: Adder,
                     prefix: str = "ablations") -> tuple[dict[str, dict], dict[str, dict], dict[str, str]]:
    """(the runs as baseline mappings, name -> {knob, value, seed}, name -> the key path of its value in the file).

    The reference row without seeds is the baseline itself: it appears in the metadata (under the
    baseline's own name) but not among the new runs."""
    runs: dict[str, dict] = {}
    meta: dict[str, dict] = {}
    paths: dict[str, str] = {}
    if spec.baseline not in baselines:
        add(f"{prefix}.baseline", name_rule("baseline of the study or its space", spec.baseline, baselines), spec.baseline)
        return runs, meta, paths
    known = task_cls.config_keys()
    seeds: list[int | None] = list(spec.seeds) or [None]
    if len(set(spec.seeds)) != len(spec.seeds):
        add(f"{prefix}.seeds", "must not list a seed twice", spec.seeds)
    if "seed" in spec.knobs:
        add(f"{prefix}.knobs.seed", "must not be a knob: list training seeds under ablations.seeds", has_got=False)
        return runs, meta, paths
    for seed in seeds:
        if seed is None:
            meta[spec.baseline] = {"knob": None, "value": None, "seed": None}
        else:
            name = run_name(None, seed=seed)
            runs[name] = {"extends": spec.baseline, "seed": seed}
            meta[name] = {"knob": None, "value": None, "seed": seed}
            paths[name] = f"{prefix}.seeds"
    for knob, values in spec.knobs.items():
        if knob not in known:
            add(f"{prefix}.knobs.{knob}", name_rule(f"config key of task {task_cls.name}", knob, known), knob)
            continue
        if not values:
            add(f"{prefix}.knobs.{knob}", "must list at least one value", values)
            continue
        shown = [_show(v) for v in values]
        for v in {s for s in shown if shown.count(s) > 1}:
            add(f"{prefix}.knobs.{knob}", "must not list a value twice", v)
        for i, value in enumerate(values):
            for seed in seeds:
                name = run_name(knob, value, seed)
                runs[name] = {"extends": spec.baseline, knob: value, **({"seed": seed} if seed is not None else {})}
                meta[name] = {"knob": knob, "value": value, "seed": seed}
                paths[name] = f"{prefix}.knobs.{knob}.{i}"
    return runs, meta, paths
