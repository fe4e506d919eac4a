"""References to results that stay on a dask cluster: futures and branch inputs.

The dask executor hands the scheduler dask futures as results, and mapped
branches get ``[_PICK, future, i]`` inputs (item ``i`` of a result, cut out on
a worker; see :mod:`.dask_worker`). These helpers tell such references from
plain values, and turn branch inputs of values that are already here into
their items. A future is recognised by its shape (``Future`` with ``key`` and
``client``), so this module imports nothing from distributed.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExecutorError, ResultUnavailableError
from ..values import Failed, Skipped
from . import dask_worker
from .base import ResultOf, ResultsOf

__all__ = ["client_of", "has_future", "is_data_ref", "is_future", "unavailable", "unpick"]


def is_future(value: Any) -> bool:
    """True for a ``distributed.Future``."""
    return type(value).__name__ == "Future" and hasattr(value, "key") and hasattr(value, "client")


def has_future(value: Any) -> bool:
    """True for a future, or a list or tuple with one inside (at any depth)."""
    if is_future(value):
        return True
    if type(value) in (list, tuple):
        return any(has_future(v) for v in value)
    return False


def is_data_ref(value: Any) -> bool:
    """True for a value that nbflow does not pickle itself when it submits an item.

    Futures and branch inputs travel as dask references, :class:`~nbflow.Failed` and
    :class:`~nbflow.Skipped` are nbflow's own, and chained inputs become futures.
    """
    return has_future(value) or isinstance(value, (Failed, Skipped, ResultOf, ResultsOf))


def unpick(value: Any) -> Any:
    """``value`` with branch inputs (alone or in a list) replaced by their items."""
    if dask_worker.is_pick(value):
        return dask_worker.pick(value)
    if type(value) is list and any(dask_worker.is_pick(v) for v in value):
        return [dask_worker.pick(v) for v in value]
    return value


def client_of(refs: list[Any]) -> Any:
    """The ``distributed.Client`` of the first future found in ``refs``.

    Raises
    ------
    ExecutorError
        When ``refs`` hold no future (callers check :func:`has_future` first).
    """
    stack = list(refs)
    while stack:
        v = stack.pop()
        if is_future(v):
            return v.client
        if type(v) in (list, tuple):
            stack.extend(v)
    raise ExecutorError("no dask future to fetch")  # pragma: no cover


def unavailable(refs: list[Any], client: Any, exc: BaseException) -> ResultUnavailableError:
    """The error for results whose futures dask cancelled while they were fetched.

    dask cancels every future of a client whose scheduler went away (and a future
    whose data it lost for good). The task succeeded, so its state says nothing
    about the loss: the message says why, and that a new run computes it again.
    """
    key = str(getattr(exc, "key", "") or _first_key(refs))
    task = key.rsplit("-", 1)[0] if "-" in key else key or "?"  # keys: task-<run><n>
    status = str(getattr(client, "status", ""))
    if status != "running":
        address = getattr(getattr(client, "scheduler", None), "address", None) or "?"
        why = f"its value was on the dask cluster at {address}, which is gone (client {status})"
    else:
        why = f"dask dropped its value ({exc})"
    error = ResultUnavailableError(task, "lost")
    error.args = (f"Task {task!r} has no result: {why}. Run the flow again to compute it.",)
    return error


def _first_key(refs: list[Any]) -> str:
    """The key of the first future in ``refs`` (inside lists and branch inputs too)."""
    stack = list(reversed(refs))
    while stack:
        v = stack.pop()
        if is_future(v):
            return str(v.key)
        if type(v) in (list, tuple):
            stack.extend(reversed(v))
    return ""
