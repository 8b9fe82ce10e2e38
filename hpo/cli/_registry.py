"""The command registry of the ``hpo`` CLI: :func:`command` registers a subcommand into :data:`COMMANDS`, and the
argument groups that several commands share (:func:`study_args`, :func:`store_args`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as the subcommand ``name``; ``configure`` adds its arguments."""

    def deco(fn: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(name, help, configure, fn)
        return fn

    return deco


def study_args(p: argparse.ArgumentParser) -> None:
    """The study file and its ``--set`` overrides (run, worker, create, validate)."""
    p.add_argument("study", help="study file (studies/*.yaml)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the study file, e.g. --set task.dataset.path=data/x.json (repeatable)")


def store_args(p: argparse.ArgumentParser) -> None:
    """Where the study is stored (run, worker, create)."""
    p.add_argument("--storage", help="storage URL (default: the study's, else sqlite:///runs/hpo.db)")
    p.add_argument("--study-name", help="name of the study in the store (default: the file's name:)")
