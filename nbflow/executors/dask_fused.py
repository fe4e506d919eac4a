"""What runs on a dask worker for a fused chain: several tasks in one dask task.

A chain ``a -> b -> c`` of tasks that :mod:`nbflow.fusion` found fusible goes to
dask as one task, :func:`run_chain`: it calls ``a`` with its inputs, then each
next task with the previous result (and its own parameters). Each inner task
is reported on its own, as :func:`.dask_worker.run_item` reports an item, under
the key ``<fused key>#<position>``, so the scheduler sees every inner task
start, end and print as if it had run alone.

The fused task returns the tuple of every inner result so far: an inner task's
result is ``[_PICK, fused future, position]`` to the client, so nothing that
needs an intermediate result (``run.results``, the cache) loses it. A failure
stops the chain: the failed task's report carries its exception (pickled), the
tasks after it do not run, and the fused task still returns (the results
before it stay usable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import jobdir
from . import pickling
from .dask_worker import Call, _picked, _reporter, _sendable_report, _still_wanted, run_one


class Step:
    """An inner task after the first: its function, its own inputs, the chained input.

    An object with ``__reduce__``, not a tuple, so that dask finds nothing to parse in it.
    """

    __slots__ = ("fn", "task", "names", "values", "chained", "job")

    def __init__(self, fn: Any, task: str, names: tuple[str, ...], values: tuple[Any, ...],
                 chained: str, job: jobdir.WorkerJob | None = None) -> None:
        #: the function (a :class:`~.dask_worker.Packed` on its way to the worker)
        self.fn = fn
        self.task = task
        #: names and values of the inputs that are not the chained one (parameters)
        self.names, self.values = names, values
        #: the input that receives the previous inner task's result
        self.chained = chained
        self.job = job

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Step, (self.fn, self.task, self.names, self.values, self.chained, self.job)


def inner_key(key: str, position: int) -> str:
    """The report key of the inner task at ``position`` of the fused task ``key``."""
    return f"{key}#{position}"


def _error_bytes(error: BaseException) -> bytes | None:
    """``error`` pickled for the report (None when it does not pickle)."""
    try:
        return pickling.dumps(error)
    except Exception:
        return None


def run_chain(fn: Callable[..., Any], call: Call, steps: tuple[Step, ...], topic: str,
              key: str, *values: Any) -> tuple[Any, ...]:
    """Run a fused chain on a worker: the first task on ``values`` (as
    :func:`~.dask_worker.run_item` would), then each step; report each; return the
    results so far (see the module doc)."""
    from distributed import get_worker

    worker = get_worker()
    wanted = _still_wanted(worker, key)
    reporter = _reporter(worker)
    if call.picks:
        values = tuple(_picked(values, call.picks))
    kwargs = dict(zip(call.names, values))
    task, job = call.task, call.job
    results: list[Any] = []
    for position in range(len(steps) + 1):
        if position:
            step = steps[position - 1]
            fn, task, job = step.fn, step.task, step.job
            kwargs = dict(zip(step.names, step.values))
            kwargs[step.chained] = results[-1]
        if position and not wanted():
            break  # cancelled: the rest is not wanted (and reports nothing)
        report, value, error = run_one(fn, task, kwargs, job, wanted)
        report["key"] = inner_key(key, position)
        if error is not None:
            report["error"] = _error_bytes(error)
        reporter.add(topic, _sendable_report(report))
        if error is not None:
            break
        results.append(value)
    return tuple(results)
