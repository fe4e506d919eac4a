"""Cache keys and result stores.

A task's key is a hash of its code, its parameter values and its upstream
keys, so a re-run reuses exactly the results whose inputs did not change.
A task with ``cache=False`` (or one whose parameters cannot be hashed) has no
key: it always runs, and so does everything downstream of it, because nbflow
cannot tell whether its new result equals the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import queue
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cloudpickle

logger = logging.getLogger(__name__)


def hash_bytes(*parts: str | bytes) -> str:
    """blake2b (128 bit) of the parts, as hex; parts are separated, not concatenated."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def hash_value(value: Any) -> str:
    """A stable hash of a value's pickle; raises ``ValueError`` if it cannot be pickled.

    Equal values of plain types (numbers, strings, lists, dicts, numpy arrays,
    dataframes) give equal hashes within a process and across processes.
    """
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:
        try:
            data = cloudpickle.dumps(value, protocol=5)
        except Exception as exc:
            msg = f"cannot hash {type(value).__name__} value for the cache: {exc}"
            raise ValueError(msg) from exc
    return hash_bytes(data)


def task_key(code_key: str, params_key: str, extra: str, upstream_keys: Iterable[str]) -> str:
    """The cache key of a (non-mapped) task or the base key of a mapped one."""
    return hash_bytes(code_key, params_key, extra, *upstream_keys)


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

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key)[0]


class MemoryStore(ResultStore):
    """Results in a dict, for the life of the process (the default for a Flow)."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Any]:
        try:
            return True, self._data[key]
        except KeyError:
            return False, None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._data)} results)"


class DiskStore(ResultStore):
    """Results as files in a directory, so a later run (another process) can reuse them.

    Each result is one file, ``DIR/<key[:2]>/<key>.nbr``: a header line with
    a checksum of the payload, then the payload (a cloudpickle). Writes go to
    a temporary file in the same directory, which is then renamed over the
    target (``os.replace`` is atomic), so a reader never sees half a file. A
    file whose checksum does not match (truncated, corrupt) is reported,
    deleted and treated as missing: the task is recomputed, never loaded.

    ``put`` hands the pickling and writing to a background thread, so the
    scheduler's loop does not wait for the disk; ``get`` answers from the
    values still being written first, and the scheduler calls it in a worker
    thread (:attr:`slow_get`). The writer thread is not a daemon: the
    interpreter waits for pending writes before it exits. ``flush()`` waits
    for them explicitly.

    Parameters
    ----------
    path
        The cache directory (created when missing).
    """

    #: the first bytes of every result file; a file without them is not a result
    MAGIC = b"nbflow-result 1 "
    slow_get = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, Any] = {}
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None

    def file(self, key: str) -> Path:
        """Where the result of ``key`` is (or would be) stored."""
        return self.path / key[:2] / f"{key}.nbr"

    def get(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            if key in self._pending:
                return True, self._pending[key]
        path = self.file(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False, None
        payload = _check_payload(data)
        if payload is None:
            logger.warning("nbflow cache: %s is truncated or corrupt (checksum mismatch); "
                           "deleting it, the task will be recomputed", path)
            with contextlib.suppress(OSError):
                path.unlink()
            return False, None
        try:
            return True, pickle.loads(payload)
        except Exception:
            logger.warning("nbflow cache: %s cannot be unpickled here; recomputing", path,
                           exc_info=True)
            return False, None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._pending[key] = value
            self._queue.put(key)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop,
                                                name="nbflow-disk-store", daemon=False)
                self._writer.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every result given to ``put`` is on disk; False on timeout."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)
            return not writer.is_alive()
        return True

    def _write_loop(self) -> None:
        while True:
            try:
                key = self._queue.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._writer = None
                        return
                continue
            with self._lock:
                value = self._pending.get(key)
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
        header = self.MAGIC + hash_bytes(payload).encode() + b" " + str(len(payload)).encode()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".nbr")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header + b"\n")
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def files(self) -> list[Path]:
        """Every result file in the directory (not the temporary ones)."""
        return sorted(p for p in self.path.glob("??/*.nbr") if not p.name.startswith("."))

    def size(self) -> int:
        """Bytes used by the result files."""
        return sum(p.stat().st_size for p in self.files())

    def clear(self) -> None:
        self.flush()
        for p in self.path.glob("??/*.nbr"):  # temporary files too
            with contextlib.suppress(OSError):
                p.unlink()
        for d in self.path.glob("??"):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty

    def __len__(self) -> int:
        with self._lock:
            pending = {k for k in self._pending if not self.file(k).exists()}
        return len(self.files()) + len(pending)

    def __repr__(self) -> str:
        return f"DiskStore({str(self.path)!r})"


def _check_payload(data: bytes) -> bytes | None:
    """The payload of a result file, or None when the header or checksum is wrong."""
    header, sep, payload = data.partition(b"\n")
    if not sep or not header.startswith(DiskStore.MAGIC):
        return None
    try:
        digest, length = header[len(DiskStore.MAGIC):].split(b" ")
        if int(length) != len(payload):
            return None
    except ValueError:
        return None
    if hash_bytes(payload).encode() != digest:
        return None
    return payload


def default_store() -> ResultStore:
    """The store of a flow created without ``cache=``: a :class:`DiskStore` in the
    ``cache_dir`` setting (``NBFLOW_CACHE_DIR``) when it is set, else a :class:`MemoryStore`."""
    from . import config

    path = config.get("cache_dir")
    return DiskStore(path) if path else MemoryStore()
