"""``hpo schema``: the JSON Schema of study or search-space files, for editors (VS Code's YAML extension and other
yaml-language-server clients complete keys and flag typos as you type). The shipped YAML names the committed
schemas in ``schemas/`` on its first line (``# yaml-language-server: $schema=../schemas/study.schema.json``);
regenerate them with ``hpo schema --kind study --out schemas/study.schema.json`` (and ``--kind space``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpo.cli._registry import command
from hpo.cli._output import out


def _schema_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", metavar="NAME", help="only this task's config and dataset keys (default: every registered task's)")
    p.add_argument("--kind", choices=["study", "space"], default="study",
                   help="a schema for study files (default) or for search-space files")
    p.add_argument("--out", metavar="FILE", help="write it here (default: standard output)")


@command("schema", "a JSON Schema (draft 2020-12) of study or search-space files, with the tasks' keys and help texts",
         _schema_args)
def cmd_schema(args: argparse.Namespace) -> int:
    from hpo.errors import UnknownNameError, UsageError
    from hpo.spec.json_schema import dumps, json_schema
    from hpo.tasks import available_task_names, get_task

    names = available_task_names()
    if args.task is not None:
        if ":" in args.task:  # package.module:TaskClass, as task.family may name it
            try:
                get_task(args.task)
            except (ImportError, AttributeError, TypeError) as e:
                raise UsageError(f"--task: must name a Task class as package.module:TaskClass, but got {args.task!r} ({e})") from None
        elif args.task not in names:
            raise UnknownNameError("task", args.task, names)
        names = [args.task]
    if args.out is not None:
        target = Path(args.out)
        try:
            is_dir, parent_ok = target.is_dir(), target.parent.is_dir()
        except OSError as e:  # e.g. a name too long
            raise UsageError(f"--out: must be a writable file, but got {args.out!r} ({e.strerror})") from None
        if is_dir:
            raise UsageError(f"--out: must be a file, but got the folder {args.out!r}")
        if not parent_ok:
            raise UsageError(f"--out: its folder must exist, but got {str(target.parent)!r}")
    text = dumps(json_schema(args.kind, [get_task(n) for n in names]))
    if args.out is None:
        sys.stdout.write(text)
        return 0
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--out: must be a writable file, but got {args.out!r} ({e.strerror})") from None
    out(f"wrote the {args.kind} schema ({', '.join(names)}) to {args.out}")
    return 0
