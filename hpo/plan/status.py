"""Where a staged plan stands, read from the store alone (no study file needed): one row per stage study.

:func:`plan_status` finds the plan's stage studies (named ``PLAN/STAGE`` or ``PLAN/STAGE~N``, with the study
user attr ``STAGE`` naming the plan) in stage order (index, then visit) and gives each one's state, trial
counts as the budget sees them (warm-start copies counted apart), best primary value over its own trials
and recorded decision. :func:`plan_status_lines` is the same for people (``hpo status``).
"""

from __future__ import annotations

from typing import Any

from hpo.store.record import CURVES, RECORD_ATTR, SPEC, STAGE


def format_value(value: Any) -> str:
    """``3.912`` / ``n/a``."""
    return f"{value:.5g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def stage_studies(storage_url: str, plan_name: str) -> list[tuple[str, dict]]:
    """(study name, ``STAGE`` attr) of the plan's stage studies in the store, in stage order."""
    from hpo.store.storage import open_storage

    found = []
    for s in open_storage(storage_url, heartbeat=False).get_all_studies():
        attr = s.user_attrs.get(STAGE)
        if s.study_name.startswith(plan_name + "/") and isinstance(attr, dict) and attr.get("plan") == plan_name:
            found.append((s.study_name, attr))
    return sorted(found, key=lambda item: (item[1].get("index", 0), item[1].get("visit", 1), item[0]))


def plan_status(storage_url: str, plan_name: str) -> list[dict]:
    """One dict per stage study of ``plan_name``: ``name``, ``study``, ``index``, ``visit``, ``state``,
    ``complete``, ``pruned``, ``failed``, ``running``, ``waiting``, ``told``, ``best`` (primary objective,
    own trials), ``decision`` (None until done), ``stopped_because``. Empty when the store holds none."""
    import optuna

    from hpo.plan.decide import best_value
    from hpo.store.stored import primary_of
    from hpo.run.budget import budget_of
    from hpo.store.storage import light_trials, open_storage

    storage = open_storage(storage_url, heartbeat=False)
    rows = []
    for name, attr in stage_studies(storage_url, plan_name):
        ostudy = optuna.load_study(study_name=name, storage=storage)
        trials = light_trials(ostudy, without_user_attrs=(CURVES,))
        spec = (ostudy.user_attrs.get(RECORD_ATTR) or {}).get(SPEC) or {}
        index = primary_of(spec, len(ostudy.directions))
        b = budget_of(trials)
        rows.append({
            "name": attr.get("name"), "study": name, "index": attr.get("index"), "visit": attr.get("visit", 1),
            "state": attr.get("state"), "complete": b.complete, "pruned": b.pruned, "failed": b.failed,
            "running": b.running, "waiting": b.waiting, "told": b.told,
            "best": best_value(trials, index, ostudy.directions[index].name.lower()),
            "decision": attr.get("decision"), "stopped_because": attr.get("stopped_because"),
        })
    return rows


def plan_status_lines(storage_url: str, plan_name: str) -> list[str]:
    """``plan NAME: N stage studies`` then one line per stage study, e.g.
    ``  1. quick    toy/quick    done     6 complete, 1 pruned, 0 failed · best 0.4123 · next: refine (default)``."""
    from hpo.plan.decide import DONE, describe_decision

    rows = plan_status(storage_url, plan_name)
    if not rows:
        return [f"plan {plan_name}: no stage study in the store yet (`hpo run` creates them)"]
    lines = [f"plan {plan_name}: {len(rows)} stage stud{'y' if len(rows) == 1 else 'ies'}"]
    for r in rows:
        counts = f"{r['complete']} complete, {r['pruned']} pruned, {r['failed']} failed"
        if r["running"] or r["waiting"]:
            counts += f", {r['running']} running, {r['waiting']} queued"
        if r["told"]:
            counts += f" (+{r['told']} warm-start)"
        tail = describe_decision(r["decision"]) if r["state"] == DONE else "in progress"
        lines.append(f"  {(r['index'] or 0) + 1}. {r['name']:<14s} {r['study']:<28s} {r['state']:<8s} {counts} · "
                     f"best {format_value(r['best'])} · {tail}")
    return lines
