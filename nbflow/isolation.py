"""Private copies of values, so that no task can change what another task (or run) sees.

Within a run one upstream result is handed to every task that consumes it, and
the memory store keeps results across runs. A task that changes its input in
place (``a.append(99)``) would change it under its siblings (racily, on threads)
and under every later run that takes it from the cache. So:

- every task call gets private copies of its upstream results
  (:func:`private_arguments`, called where the state machine builds the
  arguments, ``inputs.arguments``), as it would in another process; flow
  parameters are the caller's objects and are passed as they are;
- the memory store keeps a :class:`Snapshot` of each result, taken when it is
  stored, and hands out a new copy on every hit.

A copy is a pickle round trip (plain containers are copied at C speed; it is what
the process executor does anyway), or ``copy.deepcopy`` for types that define
``__deepcopy__`` (numpy arrays, pandas and xarray objects: one memory copy) and
for values that pickle refuses (lambdas, classes defined in a function). Numbers,
strings, bytes, None, and tuples and frozensets of them are immutable: not
copied. A value that can be neither pickled nor deep-copied (a lock, an open
file, a generator, a connection) is handed over as it is: it is a resource,
not data. References to results kept elsewhere (dask futures) and nbflow's
own values (``Failed``, ``Skipped``, chained inputs) stay as they are, at any
depth. ``benchmarks/isolation.py`` measures what the copies cost.
"""

from __future__ import annotations

import copy
import copyreg
import datetime
import decimal
import fractions
import io
import itertools
import logging
import pathlib
import pickle
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

from .executors.base import ResultOf, ResultsOf
from .executors.dask_refs import is_future
from .values import Failed, Skipped

__all__ = ["Snapshot", "is_immutable", "private_arguments", "private_copy"]

logger = logging.getLogger(__name__)

#: types whose instances cannot change (and hold nothing that can)
_IMMUTABLE: frozenset[type] = frozenset({
    int, float, complex, bool, str, bytes, type(None), range, type(Ellipsis),
    datetime.date, datetime.datetime, datetime.time, datetime.timedelta, datetime.timezone,
    decimal.Decimal, fractions.Fraction, pathlib.PurePosixPath, pathlib.PureWindowsPath,
    type(pathlib.Path()), types.FunctionType, types.BuiltinFunctionType, type,
})
#: nbflow's own values and references: handed over as they are, wherever they are
_KEPT = (Failed, Skipped, ResultOf, ResultsOf)
#: tuples and frozensets up to this size are looked into to see if they are immutable
_LOOK_INTO = 64


def is_immutable(value: Any, depth: int = 3) -> bool:
    """True for a value that cannot change: an immutable scalar, or a small tuple or
    frozenset of immutable values (looked into ``depth`` levels deep)."""
    t = type(value)
    if t in _IMMUTABLE:
        return True
    if (t is tuple or t is frozenset) and depth > 0 and len(value) <= _LOOK_INTO:
        return all(is_immutable(v, depth - 1) for v in value)
    return False


def private_arguments(kwargs: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A new kwargs dict in which the values of ``names`` (upstream results) are private
    copies; the others (parameters: the caller's own objects) are handed over as they
    are, as in a plain call."""
    out = dict(kwargs)
    for name in names:
        value = out[name]
        if type(value) not in _IMMUTABLE:
            out[name] = private_copy(value)
    return out


def private_copy(value: Any) -> Any:
    """A copy of ``value`` that shares nothing mutable with it (see the module docstring)."""
    if is_immutable(value) or isinstance(value, _KEPT) or is_future(value):
        return value
    if hasattr(type(value), "__deepcopy__"):
        try:
            return copy.deepcopy(value)
        except Exception:
            pass
    try:
        return _round_trip(value)
    except Exception:
        pass
    try:
        return copy.deepcopy(value)
    except Exception:
        logger.debug("a %s value cannot be copied; it is handed over as it is",
                     type(value).__name__, exc_info=True)
        return value


# Objects kept as they are during a round trip, by token; each round trip removes its own.
_kept: dict[int, Any] = {}
_tokens = itertools.count()
_local = threading.local()


def _kept_object(token: int) -> Any:
    return _kept[token]


def _keep(obj: Any) -> tuple[Any, ...]:
    """Pickle ``obj`` as a token, so the copy gets the object itself."""
    token = next(_tokens)
    _kept[token] = obj
    _local.tokens.append(token)
    return _kept_object, (token,)


_tables: dict[Any, dict[Any, Any]] = {}


def _dispatch_table() -> dict[Any, Any]:
    """copyreg's reducers, plus :func:`_keep` for futures and nbflow's own values.

    A pickler's ``dispatch_table`` is looked up in C by exact type, so it costs
    nothing for plain data (a ``reducer_override`` method costs a Python call per object).
    """
    distributed = sys.modules.get("distributed")  # a future exists only if it is imported
    future = getattr(distributed, "Future", None)
    table = _tables.get(future)
    if table is None:
        table = dict(copyreg.dispatch_table)
        for t in (*_KEPT, future):
            if t is not None:
                table[t] = _keep
        _tables[future] = table
    return table


def _round_trip(value: Any) -> Any:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.dispatch_table = _dispatch_table()
    tokens: list[int] = []
    _local.tokens = tokens
    try:
        pickler.dump(value)
        return pickle.loads(buffer.getbuffer())
    finally:
        for token in tokens:
            _kept.pop(token, None)


class Snapshot:
    """A value as it was when it was stored; :meth:`value` gives a new copy every time.

    The snapshot is the pickle (one serialization now, one per hit), or a deep copy for
    types that copy themselves or that pickle refuses, or the value itself when it is
    immutable or cannot be copied at all.
    """

    __slots__ = ("_how", "_data")

    def __init__(self, value: Any) -> None:
        self._how, self._data = "same", value
        if is_immutable(value):
            return
        if not hasattr(type(value), "__deepcopy__"):
            try:
                self._how, self._data = "pickle", pickle.dumps(value, protocol=5)
                return
            except Exception:
                pass
        try:
            self._how, self._data = "deepcopy", copy.deepcopy(value)
        except Exception:
            logger.debug("a %s value cannot be copied; the cache keeps it as it is",
                         type(value).__name__, exc_info=True)

    def value(self) -> Any:
        """A new copy of the stored value (the value itself if it is immutable)."""
        if self._how == "pickle":
            return pickle.loads(self._data)
        if self._how == "deepcopy":
            return copy.deepcopy(self._data)
        return self._data

    def __repr__(self) -> str:
        return f"Snapshot({self._how}, {type(self._data).__name__})"
