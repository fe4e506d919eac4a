"""``batch_size=N``: a task that maps a stream takes its items N at a time.

Branch j of such a task gets items ``j*N`` to ``j*N + N - 1`` of the stream,
joined into one batch by :func:`join`; the last batch may be smaller. A branch
starts as soon as its N items exist (the last one when the stream ends).

How items are joined, by the type of the first item:

============================  ================================================
pandas ``DataFrame``          ``pandas.concat(items, ignore_index=True)``
pandas ``Series``             ``pandas.concat(items, ignore_index=True)``
numpy ``ndarray``             ``numpy.concatenate(items)`` (along the first axis)
pyarrow ``Table``             ``pyarrow.concat_tables(items)``
polars ``DataFrame``          ``polars.concat(items)``
``list`` / ``tuple``          one list / tuple with the items' elements in order
anything else                 the list of the items themselves
============================  ================================================

So a stream of DataFrames of 10 rows with ``batch_size=5`` gives branches of 50
rows, and a stream of numbers with ``batch_size=5`` gives lists of 5 numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["join", "n_batches"]


def n_batches(items: int, size: int) -> int:
    """How many batches of ``size`` (the last maybe smaller) ``items`` items make."""
    return -(-items // size)


def join(items: Sequence[Any]) -> Any:
    """One batch of ``items``, joined by the type of the first (see the module docstring)."""
    if not items:
        return []
    first = items[0]
    joiner = _joiner(type(first))
    return joiner(items) if joiner is not None else list(items)


def _joiner(kind: type) -> Callable[[Sequence[Any]], Any] | None:
    module = kind.__module__.partition(".")[0]
    name = kind.__name__
    if module == "pandas" and name in ("DataFrame", "Series"):
        import pandas

        return lambda items: pandas.concat(list(items), ignore_index=True)
    if module == "numpy" and name == "ndarray":
        import numpy

        return lambda items: numpy.concatenate(list(items))
    if module == "pyarrow" and name == "Table":
        import pyarrow

        return lambda items: pyarrow.concat_tables(list(items))
    if module == "polars" and name == "DataFrame":
        import polars

        return lambda items: polars.concat(list(items))
    if issubclass(kind, list):
        return lambda items: list(itertools.chain.from_iterable(items))
    if issubclass(kind, tuple):
        return lambda items: tuple(itertools.chain.from_iterable(items))
    return None


class JoinBatch:
    """A ``batch_size`` task's function, joining its batch (a list of items) first.

    The join runs where the task runs (a worker thread, process or dask worker),
    never on the scheduler's thread; an error joining fails the branch.
    """

    def __init__(self, fn: Callable[..., Any], source: str) -> None:
        self.fn = fn
        self.source = source
        self.__name__ = getattr(fn, "__name__", source)

    def __call__(self, **kwargs: Any) -> Any:
        kwargs[self.source] = join(kwargs[self.source])
        return self.fn(**kwargs)
