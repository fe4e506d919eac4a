"""Cache keys: hashes of code, parameter values and upstream keys, equal in every process.

A disk cache only hits if a later process computes the same key, so a value
is hashed through the pickle of a canonical form of it. Sets and frozensets
iterate in an order that depends on the process's hash seed (``PYTHONHASHSEED``:
str and bytes elements), so the canonical form lists their elements sorted by
their own pickles; lists, tuples and dicts are looked into, at any depth, for
sets to sort. A dict keeps its order: it is part of its value (``list(d)``), so
``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` give different keys. Other objects
(instances of your classes, arrays, frames) are hashed through their own pickle;
a set inside one of those is not sorted.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable
from typing import Any

import cloudpickle

__all__ = ["canonical", "hash_bytes", "hash_value", "task_key"]

#: types whose pickle does not depend on the hash seed and that contain nothing
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None)})


def hash_bytes(*parts: str | bytes) -> str:
    """blake2b (128 bit) of the parts, as hex; parts are separated, not concatenated."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def hash_value(value: Any) -> str:
    """A hash of a value, the same in every process; raises ``ValueError`` if it cannot be pickled.

    Equal values of plain types (numbers, strings, lists, dicts in the same order,
    sets, numpy arrays, dataframes) give equal hashes, in this process and in any other.
    """
    try:
        data = pickle.dumps(canonical(value), protocol=5)
    except Exception:  # a lambda inside, or a list that contains itself (RecursionError)
        data = _pickle(value)
    return hash_bytes(data)


def _pickle(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        try:
            return cloudpickle.dumps(value, protocol=5)  # type: ignore[no-any-return]
        except Exception as exc:
            msg = f"cannot hash {type(value).__name__} value for the cache: {exc}"
            raise ValueError(msg) from exc


def task_key(code_key: str, params_key: str, extra: str, upstream_keys: Iterable[str]) -> str:
    """The cache key of a (non-mapped) task or the base key of a mapped one."""
    return hash_bytes(code_key, params_key, extra, *upstream_keys)


class _Canonical:
    """A set, frozenset or container with one inside, as it is hashed: its kind and items.

    It pickles as a reference to this class plus a tuple, so its pickle is the same in
    every process (the items are already in canonical order).
    """

    __slots__ = ("kind", "items")

    def __init__(self, kind: str, items: tuple[Any, ...]) -> None:
        self.kind = kind
        self.items = items

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Canonical, (self.kind, self.items))


def canonical(value: Any) -> Any:
    """``value`` with every set sorted (see the module docstring); ``value`` itself when it
    holds no set, so a large list of numbers is not copied."""
    t = type(value)
    if t in _ATOMS:
        return value
    if t is set or t is frozenset:
        items = [canonical(v) for v in value]
        encoded = sorted((pickle.dumps(v, protocol=5), i) for i, v in enumerate(items))
        return _Canonical(t.__name__, tuple(items[i] for _, i in encoded))
    if t is list or t is tuple:
        if all(type(v) in _ATOMS for v in value):
            return value
        items = [canonical(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return _Canonical(t.__name__, tuple(items))
    if t is dict:
        pairs = [(canonical(k), canonical(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items())):
            return value
        return _Canonical("dict", tuple(pairs))
    return value
