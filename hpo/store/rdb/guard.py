"""The Optuna versions whose storage internals :mod:`hpo.store.rdb` was checked against.

The resilient storage overrides and calls private parts of ``optuna.storages.RDBStorage``
(``_create_new_trial``, ``_get_prepared_new_trial``, ``_set_trial_*_without_commit``, ``_set_trial_param``
with ``previous_distribution``, ``_get_stale_trial_ids``, the ``_rdb.models`` tables, the heartbeat thread,
the artifact meta record, the steps of ``Study.ask``), unchanged from 4.9.0 to 5.x. Another Optuna could change them silently, so
importing the package checks the installed version first and refuses one outside the range with one line.
"""

from __future__ import annotations

from hpo.errors import HpoError

CHECKED_RANGE = ((4, 9), (6,))  # >= 4.9, < 6: the versions the overrides were read against (pyproject.toml)


def installed_optuna_version() -> str:
    import optuna

    return optuna.__version__


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version string: ``5.3.1rc1`` -> ``(5, 3, 1)``."""
    import re

    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def check_optuna_version(version: str | None = None) -> None:
    """Raise :class:`~hpo.errors.HpoError` unless ``version`` (default: the installed one) is in
    :data:`CHECKED_RANGE`."""
    version = installed_optuna_version() if version is None else version
    low, high = CHECKED_RANGE
    release = _release(version)
    if not (low <= release < high):
        raise HpoError(f"optuna: must be >={'.'.join(map(str, low))},<{'.'.join(map(str, high))} (the versions whose "
                       f"storage internals hpo/store/rdb was checked against), but got {version}; install a version "
                       "in that range (constraints.txt pins the tested one)")
