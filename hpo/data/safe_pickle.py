"""Read pickles that should hold only plain data and numpy arrays, without running any code they name.

Datasets of this field ship pickles (DCRNN's ``adj_mx.pkl``: ``[sensor_ids, id_to_index, adj]``;
DeepDTA's ``Y``: an affinity matrix). ``pickle.load`` on them would execute whatever a crafted file
names. :func:`load_data_pickle` runs the pickle machine opcode by opcode (the pure-Python unpickler of
the standard library, with its dangerous opcodes replaced) and admits:

- globals: only the exact ``(module, name)`` pairs of :data:`ALLOWED_GLOBALS` - the numpy array and
  dtype reconstructors, the numpy dtype classes (listed one by one), ``OrderedDict``, ``set``,
  ``frozenset`` and ``_codecs.encode`` (protocol 0-2 bytes). No wildcard, no dotted name (protocol 4's
  ``STACK_GLOBAL("numpy.dtypes", "__builtins__.get")`` would otherwise walk to ``builtins.get``), no
  other private name; the module is never imported by name;
- calls (``REDUCE``): only of the reconstructors in :data:`CALLABLE`, each checking its arguments
  (``_reconstruct`` builds a plain ``numpy.ndarray``, ``_codecs.encode`` encodes text as latin-1, ...);
  a class that is admitted as a value (``numpy.ndarray``, a dtype class) is not thereby callable;
- ``BUILD`` (``__setstate__``) only on numpy arrays and dtypes;
- never ``INST``, ``OBJ``, ``NEWOBJ``, ``NEWOBJ_EX`` (they construct arbitrary classes), the extension
  registry (``EXT1/2/4``) or persistent ids.

Anything else raises :class:`UnsafePickleError` (a :class:`hpo.errors.DataError`) naming the file,
before the object it would have built exists; nothing the pickle names is ever called.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from typing import Any, Callable

from hpo.errors import DataError

_DTYPE_CLASSES = (
    # numpy >= 1.25 pickles a dtype *class* as numpy.dtypes.<Name>; instances pickle as numpy.dtype(...)
    "BoolDType", "Int8DType", "UInt8DType", "Int16DType", "UInt16DType", "Int32DType", "UInt32DType",
    "Int64DType", "UInt64DType", "LongLongDType", "ULongLongDType", "ByteDType", "UByteDType", "ShortDType",
    "UShortDType", "IntDType", "UIntDType", "LongDType", "ULongDType",
    "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType",
    "Complex64DType", "Complex128DType", "CLongDoubleDType",
    "BytesDType", "StrDType", "VoidDType", "DateTime64DType", "TimeDelta64DType", "ObjectDType", "StringDType",
)

#: every (module, name) a data pickle may name, exactly
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # numpy < 2 writes numpy.core, numpy >= 2 numpy._core
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in protocol 0-2 pickles
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytes"),  # empty bytes in protocol 0-2 pickles
        ("__builtin__", "set"),  # python 2 pickles (and protocol 0-2 of python 3)
        ("__builtin__", "frozenset"),
        ("__builtin__", "bytes"),
    }
    | {("numpy.dtypes", n) for n in _DTYPE_CLASSES}
)

_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}


class UnsafePickleError(DataError):
    """The pickle asks for something plain data never needs (a global, a call, an opcode)."""


class _Refused(Exception):
    """Raised inside the unpickler; turned into :class:`UnsafePickleError` with the file name."""

    def __init__(self, where: str, got: str) -> None:
        super().__init__(where, got)
        self.where, self.got = where, got


def _np_core():
    import numpy as np

    return getattr(np, "_core", None) or np.core  # numpy >= 2: _core; 1.x: core


def _resolve(module: str, name: str) -> Any:
    """The object an admitted pair names (never imported from the pickle's module string)."""
    import numpy as np

    if module == "numpy":
        return {"ndarray": np.ndarray, "dtype": np.dtype}[name]
    if module.endswith(".multiarray"):
        return getattr(_np_core().multiarray, name)
    if module.endswith(".numeric"):
        return getattr(_np_core().numeric, name)
    if module == "numpy.dtypes":
        import numpy.dtypes as nd

        cls = getattr(nd, name, None)
        if cls is None:
            raise _Refused(f"global {module}.{name}", f"a dtype class this numpy ({np.__version__}) does not have")
        return cls
    if module == "_codecs":
        return codecs.encode
    if module == "collections":
        return collections.OrderedDict
    return {"set": set, "frozenset": frozenset, "bytes": bytes}[name]


# -- the calls a data pickle may make, each checking its arguments ---------------------------------
def _call_reconstruct(fn: Callable, args: tuple) -> Any:
    import numpy as np

    if len(args) != 3 or args[0] is not np.ndarray or not isinstance(args[1], tuple) or not isinstance(args[2], (bytes, str)):
        raise _Refused("call of _reconstruct", f"arguments other than (numpy.ndarray, shape, typecode): {_show(args)}")
    if any(not isinstance(d, int) or d < 0 for d in args[1]) or int(np.prod(args[1], dtype=object)) > 1:
        # numpy pickles _reconstruct(ndarray, (0,), b'b') and sets the real shape and data with BUILD
        raise _Refused("call of _reconstruct", f"a placeholder shape other than (0,): {_show(args[1])}")
    return fn(*args)


def _call_scalar(fn: Callable, args: tuple) -> Any:
    import numpy as np

    if len(args) not in (1, 2) or not isinstance(args[0], np.dtype) or args[0].hasobject:
        raise _Refused("call of scalar", f"arguments other than (a numeric dtype, bytes): {_show(args)}")
    if len(args) == 2 and not isinstance(args[1], (bytes, str)):
        raise _Refused("call of scalar", f"a value other than bytes: {_show(args[1])}")
    return fn(*args)


def _call_frombuffer(fn: Callable, args: tuple) -> Any:
    import numpy as np

    if (len(args) != 4 or not isinstance(args[0], (bytes, bytearray, memoryview, pickle.PickleBuffer))
            or not isinstance(args[1], np.dtype) or args[1].hasobject or not isinstance(args[2], tuple)
            or args[3] not in ("C", "F")):
        raise _Refused("call of _frombuffer", f"arguments other than (buffer, numeric dtype, shape, order): {_show(args)}")
    return fn(*args)


def _call_dtype(fn: Callable, args: tuple) -> Any:
    if not 1 <= len(args) <= 3 or not isinstance(args[0], str) or not all(a in (0, 1) and isinstance(a, int) for a in args[1:]):
        raise _Refused("call of numpy.dtype", f"arguments other than (type code, align, copy): {_show(args)}")
    return fn(*args)


def _call_encode(fn: Callable, args: tuple) -> Any:
    if len(args) not in (1, 2) or not isinstance(args[0], str) or (len(args) == 2 and str(args[1]).lower() not in _LATIN1):
        raise _Refused("call of _codecs.encode", f"arguments other than (text, 'latin1'): {_show(args)}")
    return fn(args[0], "latin1")


def _call_bytes(fn: Callable, args: tuple) -> Any:
    if args and (len(args) > 1 or not isinstance(args[0], (bytes, bytearray))):  # bytes(10**12) would allocate
        raise _Refused("call of bytes", f"arguments other than none or bytes: {_show(args)}")
    return fn(*args)


def _call_container(fn: Callable, args: tuple) -> Any:
    if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset, dict))):
        raise _Refused(f"call of {fn.__name__}", f"arguments other than one list: {_show(args)}")
    return fn(*args)


def _callables() -> dict[Any, Callable[[Callable, tuple], Any]]:
    core = _np_core()
    import numpy as np

    return {
        core.multiarray._reconstruct: _call_reconstruct,
        core.multiarray.scalar: _call_scalar,
        core.numeric._frombuffer: _call_frombuffer,
        np.dtype: _call_dtype,
        codecs.encode: _call_encode,
        collections.OrderedDict: _call_container,
        set: _call_container,
        frozenset: _call_container,
        bytes: _call_bytes,
    }


def _show(v: Any, limit: int = 120) -> str:
    if isinstance(v, (bytes, bytearray, str)) and len(v) > limit:  # never render a huge payload
        return f"{type(v).__name__} of length {len(v)}: {v[:limit]!r}..."
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(x, limit // 2) for x in v[:8]) + (", ..." if len(v) > 8 else "") + ")"
    try:
        text = repr(v)
    except Exception:  # a repr that fails is no reason to fail differently
        text = f"<{type(v).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _refuse_opcode(name: str, why: str) -> Callable:
    def load(self: "_RestrictedUnpickler") -> None:
        raise _Refused(f"opcode {name}", why)

    return load


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python machine: every opcode is ours to check
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, *, encoding: str) -> None:
        super().__init__(file, encoding=encoding, fix_imports=True)
        self._calls = _callables()

    def find_class(self, module: str, name: str) -> Any:
        module, name = str(module), str(name)
        if (module, name) not in ALLOWED_GLOBALS:
            dotted = " (a dotted name walks to other objects)" if "." in name else ""
            raise _Refused(f"global {module}.{name}", f"a reference to {module}.{name}{dotted}")
        return _resolve(module, name)

    def load_global(self) -> None:  # GLOBAL: two text lines; a cut one is a truncated file, not a name
        module, name = self.readline(), self.readline()
        if not module.endswith(b"\n") or not name.endswith(b"\n"):
            raise EOFError("the file ends inside a GLOBAL opcode")
        self.append(self.find_class(module[:-1].decode("utf-8"), name[:-1].decode("utf-8")))

    dispatch[pickle.GLOBAL[0]] = load_global

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        check = self._calls.get(func) if _hashable(func) else None
        if check is None or not isinstance(args, tuple):
            raise _Refused("opcode REDUCE", f"a call of {_show(func, 80)}, which builds no plain data")
        stack[-1] = check(func, args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_build(self) -> None:
        import numpy as np

        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if not (type(inst) is np.ndarray or isinstance(inst, np.dtype)):
            raise _Refused("opcode BUILD", f"state set on a {type(inst).__name__} (only numpy arrays and dtypes take state)")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    for _op, _why in (
        (pickle.INST, "an instance of an arbitrary class"), (pickle.OBJ, "an instance of an arbitrary class"),
        (pickle.NEWOBJ, "an instance of an arbitrary class"), (pickle.NEWOBJ_EX, "an instance of an arbitrary class"),
        (pickle.EXT1, "an extension-registry global"), (pickle.EXT2, "an extension-registry global"),
        (pickle.EXT4, "an extension-registry global"), (pickle.PERSID, "a persistent id"),
        (pickle.BINPERSID, "a persistent id"),
    ):
        dispatch[_op[0]] = _refuse_opcode(pickle._Unpickler.dispatch[_op[0]].__name__[5:].upper(), _why)
    del _op, _why


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


_MUST = "a data pickle must hold only numpy arrays and plain data"


def _load(file: Any, label: str, encoding: str) -> Any:
    try:
        return _RestrictedUnpickler(file, encoding=encoding).load()
    except _Refused as e:
        raise UnsafePickleError(f"{label}: {e.where}: {_MUST} (nothing it names is run), but got {e.got}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, OverflowError, struct_error()) as e:
        raise DataError(f"{label}: file: must be a complete, readable pickle, but got {type(e).__name__}: "
                        f"{str(e)[:200] or 'truncated'}") from None
    except MemoryError:
        raise DataError(f"{label}: file: the pickle must fit in memory, but got a MemoryError rebuilding it") from None


def struct_error() -> type:
    import struct

    return struct.error


def load_data_pickle(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Load a data pickle from ``path`` (python 2 pickles need ``encoding="latin1"``, the default)."""
    with open(path, "rb") as f:
        return _load(f, str(path), encoding)


def loads_data_pickle(data: bytes, encoding: str = "latin1", label: str = "<bytes>") -> Any:
    return _load(io.BytesIO(data), label, encoding)
