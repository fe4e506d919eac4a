"""Cache keys and result stores.

A task's key is a hash of its code, its parameter values and its upstream
keys, so a re-run reuses exactly the results whose inputs did not change.
A task with ``cache=False`` (or one whose parameters cannot be hashed) has no
key: it always runs, and so does everything downstream of it, because nbflow
cannot tell whether its new result equals the old one.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import cloudpickle


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
