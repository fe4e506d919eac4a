"""Result stores: where task results are kept between runs, by cache key.

A task's key (:mod:`nbflow.cache_keys`) is a hash of its code, its parameter
values and its upstream keys, so a re-run reuses exactly the results whose
inputs did not change. A task with ``cache=False`` (or one whose parameters
cannot be hashed) has no key: it always runs, and so does everything
downstream of it, because nbflow cannot tell whether its new result equals the
old one.

A stored result is never shared with whoever uses it: the memory store keeps a
snapshot and hands out a new copy on every hit (:mod:`nbflow.isolation`), and
the disk store loads a new object from its file. A disk entry is loaded only
when its MAC matches (:mod:`nbflow.cache_auth`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import cloudpickle

from . import cache_auth
from .cache_auth import SigningKey
from .cache_keys import hash_bytes, hash_value, task_key
from .isolation import Snapshot, private_copy
from .writer_thread import WriterThread

__all__ = [
    "DiskStore", "MemoryStore", "ResultStore", "default_store", "entry_files", "hash_bytes",
    "hash_value", "remove_entries", "task_key",
]

logger = logging.getLogger(__name__)


class ResultStore(ABC):
    """Where results are kept between runs, by cache key."""

    #: True when ``get`` may take long (it reads files): the scheduler then calls it
    #: in a worker thread, in batches, so its loop keeps going meanwhile
    slow_get: bool = False

    @abstractmethod
    def get(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when the key is stored, else ``(False, None)``."""

    @abstractmethod
    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing any older value)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every stored result."""

    @abstractmethod
    def __len__(self) -> int: ...

    def has(self, key: str, task: str | None = None) -> bool:
        """True when ``key`` is stored and would load (checked without loading the value
        where the store can); ``task`` (``name`` or ``name[branch]``) names it in warnings."""
        return self.get(key)[0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has(key)


class MemoryStore(ResultStore):
    """Results in a dict, for the life of the process (the default for a Flow).

    Each result is kept as a :class:`~nbflow.isolation.Snapshot` taken when it is
    stored, and every hit gets a new copy: a task or a notebook cell that changes
    the value it got cannot change what the next run takes from the cache.
    """

    def __init__(self) -> None:
        self._data: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Any]:
        try:
            snapshot = self._data[key]
        except KeyError:
            return False, None
        return True, snapshot.value()

    def has(self, key: str, task: str | None = None) -> bool:
        return key in self._data

    def put(self, key: str, value: Any) -> None:
        snapshot = Snapshot(value)
        with self._lock:
            self._data[key] = snapshot

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._data)} results)"


class DiskStore(ResultStore):
    """Results as files in a directory, so a later run (another process) can reuse them.

    Each result is one file, ``DIR/<key[:2]>/<key>.nbr``: a header line with the
    MAC of the payload, then the payload (a cloudpickle). The MAC is keyed with
    the signing key (``NBFLOW_CACHE_KEY``, else the per-user key file; see
    :mod:`nbflow.cache_auth`), so an entry that anyone else wrote or changed
    (forged, damaged, signed with another key, or written by an older nbflow)
    is refused before it is unpickled: the task is recomputed and its new
    result replaces the file. Writes go to a temporary file in the same
    directory, which is then renamed over the target (``os.replace`` is
    atomic), so a reader never sees half a file.

    ``put`` hands the pickling and writing to a background thread, so the
    scheduler's loop does not wait for the disk; ``get`` answers from the
    values still being written first (with a copy), and the scheduler calls it
    in a worker thread (:attr:`slow_get`). The writer thread is not a daemon: the
    interpreter waits for pending writes before it exits. ``flush()`` waits
    for them explicitly.

    Parameters
    ----------
    path
        The cache directory (created when missing).
    signing_key
        The key that signs and checks entries; by default read from
        ``NBFLOW_CACHE_KEY`` or the key file when the store is made (a problem
        with it raises :class:`~nbflow.errors.CacheKeyError` then).
    """

    #: the first bytes of every result file this version writes
    MAGIC = cache_auth.MAGIC + b"%d " % cache_auth.VERSION
    slow_get = True

    def __init__(self, path: str | os.PathLike[str], *,
                 signing_key: SigningKey | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        key = signing_key or cache_auth.load_key()
        assert key is not None  # load_key creates the key file when it is missing
        self.signing_key = key
        self.path.mkdir(parents=True, exist_ok=True)
        #: results handed to ``put`` and not yet on disk (``get`` reads them from here)
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._writer = WriterThread("nbflow-disk-store")

    def file(self, key: str) -> Path:
        """Where the result of ``key`` is (or would be) stored."""
        return self.path / key[:2] / f"{key}.nbr"

    def get(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            pending = key in self._pending
            value = self._pending.get(key)
        if pending:  # still being written: a copy, as a file would give
            return True, private_copy(value)
        path = self.file(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False, None
        try:
            payload = cache_auth.open_entry(self.signing_key, key, data)
        except cache_auth.Refused as why:
            _refused(path, key, why)
            return False, None
        try:
            return True, pickle.loads(payload)
        except Exception:
            logger.warning("nbflow cache: %s cannot be unpickled here; recomputing", path,
                           exc_info=True)
            return False, None

    def __contains__(self, key: object) -> bool:
        """True when ``key`` has an entry this store accepts (its MAC checks), found without
        unpickling it: a run asks this first and reads a value only when it needs it."""
        if not isinstance(key, str):
            return False
        with self._lock:
            if key in self._pending:
                return True
        path = self.file(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        try:
            cache_auth.open_entry(self.signing_key, key, data)
        except cache_auth.Refused as why:
            logger.warning("nbflow cache: refused %s (cache key %s): %s. It is not loaded; "
                           "the task with this key is recomputed and its result replaces "
                           "the file", path, key, why)
            return False
        return True

    def has(self, key: str, task: str | None = None) -> bool:
        """True when ``key`` is being written, or its file is an entry signed with this
        store's key (its MAC is checked, the value is not unpickled)."""
        with self._lock:
            if key in self._pending:
                return True
        path = self.file(key)
        try:
            cache_auth.check_file(self.signing_key, key, path)
        except FileNotFoundError:
            return False
        except cache_auth.Refused as why:
            _refused(path, key, why, task)
            return False
        return True

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._pending[key] = value
        self._writer.put(functools.partial(self._store, key))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every result given to ``put`` is on disk; False on timeout."""
        return self._writer.flush(timeout)

    def _store(self, key: str) -> None:
        """Write the latest value ``put`` under ``key`` (on the writer thread)."""
        with self._lock:
            if key not in self._pending:
                return  # a put of the same key before this one's turn: written already
            value = self._pending[key]
        try:
            self._write(key, value)
        except Exception:  # unpicklable result, full disk: the run goes on uncached
            logger.warning("nbflow cache: could not store a result under %s", key,
                           exc_info=True)
        finally:
            with self._lock:
                # only forget it if no newer put of the same key is queued
                if self._pending.get(key) is value:
                    del self._pending[key]

    def _write(self, key: str, value: Any) -> None:
        payload = cloudpickle.dumps(value, protocol=5)
        target = self.file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        header = cache_auth.seal(self.signing_key, key, payload)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".nbr")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def lineage_file(self, run_id: str) -> Path:
        """Where the lineage of run ``run_id``'s results is written: ``DIR/lineage/<run_id>.json``
        (see :func:`nbflow.history.lineage.write_beside_cache`). No result entry: ``nbflow
        cache clear`` keeps it."""
        return self.path / "lineage" / f"{run_id}.json"

    def write_lineage(self, run_id: str, text: str) -> Path:
        """Write ``text`` (JSON) to :meth:`lineage_file` through a temporary file and a
        rename, so a reader never sees half of it; returns the file."""
        target = self.lineage_file(run_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

    def files(self) -> list[Path]:
        """Every result file in the directory: nbflow entries only, not the temporary ones."""
        return entry_files(self.path)

    def size(self) -> int:
        """Bytes used by the result files."""
        return sum(p.stat().st_size for p in self.files())

    def clear(self) -> None:
        """Delete every nbflow entry (and leftover temporary entry); nothing else."""
        self.flush()
        remove_entries(self.path)

    def __len__(self) -> int:
        with self._lock:
            pending = {k for k in self._pending if not self.file(k).exists()}
        return len(self.files()) + len(pending)

    def __repr__(self) -> str:
        return f"DiskStore({str(self.path)!r})"


def _refused(path: Path, key: str, why: Exception, task: str | None = None) -> None:
    of = f"task {task!r}, " if task else ""
    logger.warning("nbflow cache: refused %s (%scache key %s): %s. It is not loaded; the task "
                   "is recomputed and its result replaces the file", path, of, key, why)


def entry_files(path: Path, temporary: bool = False) -> list[Path]:
    """The nbflow entries in cache directory ``path``, recognised by their name
    (``<key[:2]>/<key>.nbr``) and their header; ``temporary``: those of unfinished writes.

    A file that merely has an entry's name is not one: a mistyped ``--cache-dir``
    must not make nbflow count or delete someone else's files.
    """
    found = []
    for p in path.glob("??/*.nbr"):
        hidden = p.name.startswith(".tmp-")
        if hidden != temporary or (not hidden and not p.stem.startswith(p.parent.name)):
            continue
        try:
            with p.open("rb") as f:
                head = f.read(cache_auth.HEADER_MAX)
        except OSError:
            continue
        if cache_auth.parse_header(head) is not None and p.is_file():
            found.append(p)
    return sorted(found)


def remove_entries(path: Path) -> list[Path]:
    """Delete the nbflow entries in ``path`` (and temporary ones), then the sub-directories
    left empty; returns the entries deleted. Other files and directories are kept."""
    removed = []
    for p in entry_files(path) + entry_files(path, temporary=True):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
    for d in path.glob("??"):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
    return removed


def default_store() -> ResultStore:
    """The store of a flow created without ``cache=``: a :class:`DiskStore` in the
    ``cache_dir`` setting (``NBFLOW_CACHE_DIR``) when it is set, else a :class:`MemoryStore`."""
    from . import config

    path = config.get("cache_dir")
    return DiskStore(path) if path else MemoryStore()
