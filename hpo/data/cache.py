"""A content-addressed disk cache for processed datasets (graphs, token ids, windows).

A study runs many trials on the same data: parsing and graph building happen once per study, keyed by
the *content* of the input files and every setting that changes the result. A trial only builds its
model and loaders. Entries are written atomically and built under a file lock, so concurrent workers
build each entry once. Cache files are pickles written by this process's user: the cache directory is
trusted like the code itself (never point it at files from elsewhere).

Each entry file starts with a magic tag and the sha256 of the pickle that follows; the digest is
checked before unpickling, so a truncated or garbled entry (a full disk, a crash of another tool, a
bad copy) is detected, removed and rebuilt once with a warning instead of failing every trial.

Keys are made in one place, :func:`data_key`: the content digest of the input files, the family's data
version, the dataset settings without paths, and the data config *without its fidelity knobs* (fields
that only pick or order the data a trial trains on, such as a fraction of training pairs or a window
stride: they are applied after the cached entry is loaded, so every fidelity shares one entry). A field
is a fidelity knob when the family names it (``fidelity=``, e.g. ``Task.fidelity_knobs``) or when its
dataclass field metadata says ``{"fidelity": True}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
CACHE_FORMAT = 3  # bump when the layout of cached entries or keys changes (2: digest header; 3: keys by data_key)
MAGIC = f"HPOCACHE{CACHE_FORMAT}\n".encode()  # then 32 bytes: sha256 of the pickle, then the pickle


class CorruptEntry(Exception):
    """A cache entry file that is not what was written."""


def fingerprint(obj: Any) -> str:
    """A stable sha256 of a JSON-able description (dict keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def fidelity_fields(data_cfg: Any, fidelity: Iterable[str] = ()) -> set[str]:
    """The fidelity knobs of a data config: the names in ``fidelity`` plus fields marked ``{"fidelity": True}``."""
    marked = {f.name for f in dataclasses.fields(data_cfg) if f.metadata.get("fidelity")} if dataclasses.is_dataclass(data_cfg) else set()
    return marked | set(fidelity)


def data_key(data_cfg: Any = None, *, fidelity: Iterable[str] = (), fields: Iterable[str] | None = None,
             version: int = 0, digest: str | None = None, dataset: Any = None, **extra: Any) -> dict:
    """The cache key of a processed dataset.

    Args:
        data_cfg: the data config (a dataclass, or None); every field but the fidelity knobs is in the key
            (``fields``: only these, for an entry that depends on some settings alone).
        fidelity: names of the config's fidelity knobs (left out; see the module docstring).
        version: the family's version of what it caches (bump it when the built content changes).
        digest: the content digest of the input files (:meth:`DataCache.content_digest`).
        dataset: the dataset settings without paths (``DatasetSpec.settings()``).
        extra: anything else the entry depends on (the target name, a parent entry's key).
    """
    data = None
    if data_cfg is not None:
        values = dataclasses.asdict(data_cfg) if dataclasses.is_dataclass(data_cfg) else dict(vars(data_cfg))
        skip = fidelity_fields(data_cfg, fidelity)
        keep = set(fields) if fields is not None else set(values)
        data = {k: v for k, v in values.items() if k in keep and k not in skip}
    return {"version": version, "digest": digest, "dataset": dataset, "data": data, **extra}


@dataclasses.dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    build_seconds: float = 0.0
    load_seconds: float = 0.0
    rebuilt: int = 0  # corrupt entries found on disk and rebuilt

    @property
    def lookups(self) -> int:
        return self.memory_hits + self.disk_hits + self.misses

    @property
    def hit_rate(self) -> float:
        return (self.memory_hits + self.disk_hits) / self.lookups if self.lookups else 0.0


class DataCache:
    """Memory + disk cache. ``root=None`` keeps entries in memory only.

    Not shared between processes except through the disk; one instance per worker process.
    """

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, Any] = {}
        self._file_hashes: dict[tuple, str] = {}
        self.stats = CacheStats()

    def file_digest(self, paths: Iterable[str | os.PathLike]) -> str:
        """sha256 over the bytes of files (directories: every file below, sorted), memoised by mtime."""
        h = hashlib.sha256()
        for p in sorted(_expand(paths)):
            st = p.stat()
            key = (str(p), st.st_size, st.st_mtime_ns)
            if key not in self._file_hashes:
                fh = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        fh.update(chunk)
                self._file_hashes[key] = fh.hexdigest()
            h.update(p.name.encode())
            h.update(self._file_hashes[key].encode())
        return h.hexdigest()

    def content_digest(self, paths: Iterable[str | os.PathLike]) -> str | None:
        """:meth:`file_digest` of ``paths``; None when there are none or one is missing (its reader says so)."""
        paths = list(paths)
        if not paths or not all(Path(p).exists() for p in paths):
            return None
        return self.file_digest(paths)

    def get_or_build(self, namespace: str, key: dict, build: Callable[[], T]) -> T:
        """Return the entry for ``key`` in ``namespace``, building (and storing) it on a miss."""
        digest = fingerprint({"format": CACHE_FORMAT, "namespace": namespace, "key": key})
        mem_key = f"{namespace}/{digest}"
        if mem_key in self._memory:
            self.stats.memory_hits += 1
            return self._memory[mem_key]
        if self.root is None:
            value = self._build(build, namespace)
        else:
            path = self.root / namespace / f"{digest[:32]}.pkl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(path.with_suffix(".lock")):
                value, found = _MISS, path.exists()
                if found:
                    t0 = time.perf_counter()
                    try:
                        value = _read_entry(path)
                    except Exception as e:  # truncated, garbled, or from an older layout: rebuild it once
                        logger.warning("cache entry %s is corrupt (%s); rebuilding it", path, e)
                        self.stats.rebuilt += 1
                        path.unlink(missing_ok=True)
                    else:
                        self.stats.load_seconds += time.perf_counter() - t0
                        self.stats.disk_hits += 1
                        logger.debug("cache hit %s", path)
                if value is _MISS:
                    value = self._build(build, namespace)
                    _write_entry(path, value)
                    (path.with_suffix(".json")).write_text(json.dumps(key, indent=1, default=str))
        self._memory[mem_key] = value
        return value

    def _build(self, build: Callable[[], T], namespace: str) -> T:
        t0 = time.perf_counter()
        value = build()
        dt = time.perf_counter() - t0
        self.stats.misses += 1
        self.stats.build_seconds += dt
        logger.info("built %s in %.2fs", namespace, dt)
        return value


_MISS = object()


def _write_entry(path: Path, value: Any) -> None:
    """Write an entry atomically: magic, sha256 of the pickle, the pickle (temp file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as f:
            f.write(MAGIC + bytes(32))
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)  # streamed: no second copy in memory
            f.flush()
            f.seek(len(MAGIC) + 32)
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            f.seek(len(MAGIC))
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_entry(path: Path) -> Any:
    """Read an entry, checking its digest before unpickling; :class:`CorruptEntry` if it does not match."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 32)
        if len(head) < len(MAGIC) + 32 or not head.startswith(MAGIC):
            raise CorruptEntry(f"no cache header (a file of {path.stat().st_size} bytes)")
        want = head[len(MAGIC):]
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if h.digest() != want:
            raise CorruptEntry("its content does not match its digest (truncated or garbled)")
        f.seek(len(head))
        return pickle.load(f)


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(q for q in p.rglob("*") if q.is_file())
        else:
            out.append(p)
    return out


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
