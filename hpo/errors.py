"""The exception hierarchy of fusion-hpo.

Every error a user can cause derives from :class:`HpoError`. The CLI prints such errors as one
line (the traceback only with ``--debug``) and exits with :attr:`HpoError.exit_code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


class HpoError(Exception):
    """Root of all fusion-hpo errors."""

    exit_code = 1


def show(value: Any, limit: int = 80) -> str:
    """Render a user-supplied value for an error message (``repr`` of strings, cut if long)."""
    text = repr(value) if isinstance(value, str) else str(value)
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Problem:
    """One violated rule in a spec: where, what must hold, and what was found."""

    path: str  # dotted key path inside the file, e.g. "params.lr.low"
    message: str  # what must hold, e.g. "must be > 0 with log: true"
    got: Any = None
    has_got: bool = True
    file: str | None = None  # the file it is in, when not the file of the whole error

    def render(self, file: str | None) -> str:
        file = self.file or file
        where = f"{file}: " if file else ""
        key = f"{self.path}: " if self.path else ""
        got = f", but got {show(self.got)}" if self.has_got else ""
        return f"{where}{key}{self.message}{got}"


class SpecError(HpoError):
    """A malformed study, search space or config file. Raised before any trial runs."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem], file: str | None = None) -> None:
        self.problems = list(problems)
        self.file = file
        super().__init__("\n".join(p.render(file) for p in self.problems))

    def with_file(self, file: str) -> "SpecError":
        return SpecError(self.problems, file=self.file or file)

    def lines(self) -> list[str]:
        return [p.render(self.file) for p in self.problems]


class UsageError(HpoError):
    """A wrong command line or a reference to something that does not exist (study, trial)."""

    exit_code = 2


class UnknownNameError(HpoError, KeyError):
    """A name looked up in a registry that has no such entry."""

    exit_code = 2

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        self.message = unknown_name_message(kind, name, self.choices)
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def closest(name: str, choices: Iterable[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def name_rule(kind: str, name: Any, choices: Iterable[str]) -> str:
    """What must hold for a name looked up among ``choices`` (with the closest one), without the value."""
    choices = sorted(map(str, choices))
    if not choices:
        return f"must name a known {kind}, but none is available"
    msg = f"must name a known {kind}: {', '.join(choices)}"
    near = closest(str(name), choices)
    return msg + (f" (did you mean {near!r}?)" if near else "")


def unknown_name_message(kind: str, name: Any, choices: Iterable[str]) -> str:
    return f"{name_rule(kind, name, choices)}, but got {show(name)}"


class DataError(HpoError):
    """Input data that cannot be read or does not have what the study asks for."""

    exit_code = 2


class TrialFailed(HpoError):
    """A trial that cannot produce a result (crash, out of memory). Recorded as FAIL with the reason."""


class Pruned(HpoError):
    """Raised by an epoch callback to stop a trial that is worse than others at the same epoch."""

    def __init__(self, epoch: int, reason: str = "") -> None:
        self.epoch = epoch
        super().__init__(reason or f"pruned at epoch {epoch}")


class TestSplitAccessError(HpoError):
    """The held-out test split was read while tuning. Tuning must never read it."""


class StoreError(HpoError):
    """A study store that cannot be used as it is (read-only, full, corrupt, refused, or unreachable
    past the reconnect timeout). Raised at once, instead of retrying, with one line saying why."""

    exit_code = 2
