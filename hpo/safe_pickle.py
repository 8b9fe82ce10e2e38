"""Read pickles that should hold only plain data and numpy arrays, without running arbitrary code.

Datasets of this field ship pickles (DCRNN's ``adj_mx.pkl``: ``[sensor_ids, id_to_index, adj]``;
DeepDTA's ``Y``: an affinity matrix). ``pickle.load`` on them would execute whatever a crafted file
names. :func:`load_data_pickle` admits only the globals needed to rebuild numpy arrays and dtypes;
any other global (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

from hpo.errors import DataError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.dtypes", None),  # any numpy.dtypes.*DType class (numpy >= 1.25 pickles dtypes this way)
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written for python 2 compatibility
    ("collections", "OrderedDict"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "frozenset"),
}


class UnsafePickleError(DataError):
    """The pickle names a global that plain data never needs."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module, None) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name} from a data pickle (only numpy arrays and plain data are admitted)")


def load_data_pickle(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Load a data pickle from ``path`` (python 2 pickles need ``encoding="latin1"``, the default)."""
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding=encoding).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise DataError(f"{path}: not a readable pickle ({e})") from None


def loads_data_pickle(data: bytes, encoding: str = "latin1") -> Any:
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
