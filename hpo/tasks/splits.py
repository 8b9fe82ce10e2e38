"""The train / val / test parts of a loaded dataset, and the lock that keeps the test part unread while tuning."""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

from hpo.errors import TestSplitAccessError, unknown_name_message


class Splits:
    """The train / val / test parts of a dataset, plus facts about it (``info``).

    The parts are whatever the task's ``loader`` understands. The test part can be locked
    (:meth:`locked_test`) so that any read raises; the objective locks it for every trial.
    """

    NAMES = ("train", "val", "test")

    def __init__(self, train: Any, val: Any, test: Any, info: Mapping[str, Any] | None = None) -> None:
        self._parts = {"train": train, "val": val, "test": test}
        self.info = dict(info or {})
        self._lock_depth = 0
        self.test_reads = 0

    def __getitem__(self, name: str) -> Any:
        if name not in self._parts:
            raise KeyError(unknown_name_message("split", name, self.NAMES))
        if name == "test":
            if self._lock_depth:
                raise TestSplitAccessError("the test split was read during tuning; only `hpo reevaluate` may read it")
            self.test_reads += 1
        return self._parts[name]

    def size(self, name: str) -> int:
        part = self._parts[name]
        return len(part) if part is not None and hasattr(part, "__len__") else 0

    @contextlib.contextmanager
    def locked_test(self):
        self._lock_depth += 1
        try:
            yield self
        finally:
            self._lock_depth -= 1
