"""Data content is checked once per study, before any trial, in this one path.

Data files come from strangers. A malformed file must be refused with a clear message *before the
first trial* — never found trial by trial (each failing the same way), never silently dropped,
truncated or turned into a NaN loss that blames the hyperparameters. :func:`check_study_data` reads the
dataset exactly as a trial would (``task.load`` through the same data cache, so the first trial then
finds it built) for every distinct data config the study names up front (the defaults and each
baseline), checks what holds for every task (each split has records), and returns every problem as a
line ``file: where: what must hold, but got X``. ``hpo validate`` and ``hpo run`` / ``create`` /
``worker`` call it; the CLI prints the lines and exits with 2, the store untouched.

The families' parsers raise :class:`hpo.errors.DataError` with such lines, using the helpers here
for checks they share (:func:`require_finite`, :func:`where`), so the wording is the same everywhere.
A record a format documents as skippable (a JARVIS ``"na"`` target) is skipped by the parser and
counted in the log; anything else malformed is an error.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from hpo.errors import DataError, show

if TYPE_CHECKING:
    from hpo.spec import Study
    from hpo.tasks import Splits, Task

logger = logging.getLogger(__name__)

MAX_LISTED = 5  # offending records named in one message


def where(index: int, kind: str = "record", ident: Any = None) -> str:
    """``record 17`` / ``row 3 (id JVASP-1)``: how a message names one item of a file (1-based rows and
    lines, 0-based records and indices as the file's own tools count them: say which in ``kind``)."""
    return f"{kind} {index}" + (f" (id {ident})" if ident is not None else "")


def require_finite(values: Any, file: str | os.PathLike, what: str, *, kind: str = "record", ids: Sequence | None = None,
                   offset: int = 0) -> None:
    """Raise :class:`DataError` naming the first non-finite entries of ``values`` (NaN, inf, or not a
    number at all). ``kind``/``offset`` say how entries are counted in the file (``row``, 1-based...)."""
    import numpy as np

    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        bad = []
        for i, v in enumerate(values):
            try:
                float(v)
            except (TypeError, ValueError):
                bad.append(i)
        items = ", ".join(where(i + offset, kind, ids[i] if ids is not None else None) + f" = {show(values[i])}"
                          for i in bad[:MAX_LISTED])
        raise DataError(f"{file}: {what} must be numbers, but got {items}" + more_suffix(len(bad))) from None
    flat = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    bad_rows = np.nonzero(~np.isfinite(flat).all(axis=1))[0]
    if bad_rows.size:
        items = ", ".join(where(int(i) + offset, kind, ids[int(i)] if ids is not None else None)
                          + f" = {_first_bad(flat[int(i)])}" for i in bad_rows[:MAX_LISTED])
        raise DataError(f"{file}: {what} must be finite numbers, but got {items}" + more_suffix(int(bad_rows.size)))


def _first_bad(row) -> str:
    import numpy as np

    v = row[~np.isfinite(row)]
    return str(float(v[0])) if v.size else "?"


def more_suffix(n: int) -> str:
    """`` (and N more)`` after a list cut at :data:`MAX_LISTED` items."""
    return f" (and {n - MAX_LISTED} more)" if n > MAX_LISTED else ""


def check_splits(splits: "Splits", file: str) -> list[str]:
    """What must hold for the splits of every task: none is empty."""
    problems = []
    for name in splits.NAMES:
        n = splits.size(name)
        if n == 0:
            problems.append(f"{file}: the {name} split must hold at least one record, but got 0 "
                            "(the dataset is too small for its split fractions, or a split file lists none)")
    return problems


def dataset_label(task: "Task") -> str:
    """How messages name the dataset of a task: its own ``label()``, its file or folder, else ``task.dataset``."""
    label = getattr(task.dataset, "label", None)
    if callable(label):
        return str(label())
    path = next((getattr(task.dataset, k) for k in ("path", "folder", "dir") if getattr(task.dataset, k, None)), None)
    return str(path) if path else "task.dataset"


def data_configs(study: "Study") -> list[Any]:
    """The distinct data configs a study names up front: the defaults and each baseline's."""
    space = study.space
    configs = [{**space.defaults, **space.fixed}]
    for b in space.baselines.values():
        try:
            configs.append(space.resolve(b.params, b.overrides, strict=False))
        except Exception:  # an expression that fails on a baseline is the spec check's to report
            continue
    out, seen = [], set()
    for config in configs:
        try:
            data_cfg = study.task_cls.split_config(config)[2]
        except (ValueError, TypeError, KeyError):
            continue  # an invalid config is the spec check's to report
        key = repr(data_cfg)
        if key not in seen:
            seen.add(key)
            out.append(data_cfg)
    return out


def check_task_data(task: "Task", data_cfgs: Iterable[Any]) -> list[str]:
    """Read the dataset as a trial would, for each data config; every problem as one line."""
    label = dataset_label(task)
    problems: list[str] = []
    for cfg in data_cfgs:
        try:
            splits = task.load(cfg)
        except DataError as e:
            problems.extend(line for line in str(e).splitlines() if line.strip())
            break  # the same file fails the same way for the next config
        except MemoryError:
            problems.append(f"{label}: must fit in memory to be processed, but reading it ran out of memory")
            break
        except Exception as e:  # a parser that crashed: still say which file, before any trial
            logger.debug("reading %s crashed", label, exc_info=True)
            problems.append(f"{label}: must be a readable dataset of format {getattr(task.dataset, 'format', '?')!r}, "
                            f"but reading it failed: {type(e).__name__}: {str(e)[:300]}")
            break
        problems.extend(check_splits(splits, label))
    return list(dict.fromkeys(problems))


def check_study_data(study: "Study", cache_dir: str | os.PathLike | None = "runs/cache") -> None:
    """Raise :class:`DataError` (exit 2) with every problem of the study's data, before any trial."""
    from hpo.data.cache import DataCache

    task = study.make_task(DataCache(cache_dir))
    problems = check_task_data(task, data_configs(study))
    problems = problems or check_val_subset(study, task)
    if problems:
        raise DataError("\n".join(problems))


def check_val_subset(study: "Study", task) -> list[str]:
    """``training.val_subset`` (a count) must not exceed the val split of the study's default config (the data
    already read: served by the cache); the line names the key that set it."""
    space = study.space
    config = {**space.defaults, **space.fixed}
    try:
        train_cfg, _, data_cfg = study.task_cls.split_config(config)
    except (ValueError, TypeError, KeyError):
        return []  # an invalid config is the spec check's to report
    if getattr(train_cfg, "val_subset", None) is None:
        return []
    problem = train_cfg.val_subset_problem(task.load(data_cfg).size("val"))
    if problem is None:
        return []
    where = f"{study.space_file}: fixed.val_subset" if "val_subset" in space.fixed and study.space_file else (
        f"{study.file}: {'space.fixed' if 'val_subset' in space.fixed else 'training'}.val_subset")
    return [f"{where}: {problem}"]
