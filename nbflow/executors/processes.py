"""Run task bodies in worker processes (``spawn``), serialised with cloudpickle.

cloudpickle serialises functions by value, so tasks defined in ``__main__``,
a notebook or a closure work. Each task function is pickled once per run;
arguments and results travel as cloudpickle bytes. A running item that is
cancelled or times out is abandoned (its process finishes it and the result is
dropped): ``concurrent.futures`` cannot stop one call without breaking the pool.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import cloudpickle

from .. import config
from ..capture import capturing, install
from ..values import Failed
from .base import Executor, Outbox, Outcome, WorkItem


def _run_pickled(fn_bytes: bytes, kwargs_bytes: bytes, task: str, branch: int | None,
                 attempt: int) -> bytes:
    """Worker side: unpickle, call, pickle the outcome (errors included)."""
    started = time.time()
    install()
    with capturing() as captured:
        try:
            fn = cloudpickle.loads(fn_bytes)
            kwargs = cloudpickle.loads(kwargs_bytes)
            value: Any = fn(**kwargs)
            ok = True
        except Exception as exc:
            value = Failed.from_exception(task, exc, branch, attempt)
            ok = False
    ended = time.time()
    where = f"pid {os.getpid()}"
    output = captured or None
    try:
        data: bytes = cloudpickle.dumps((ok, value, started, ended, where, output))
        return data
    except Exception as exc:  # the result (or the exception) cannot travel back
        err = RuntimeError(f"the result of task {task!r} cannot be pickled: {exc}")
        if not ok:
            err = RuntimeError(f"{type(value.error).__name__}: {value.error}")
            failure = Failed(task, err, value.traceback, branch, attempt)
        else:
            failure = Failed.from_exception(task, err, branch, attempt)
        data = cloudpickle.dumps((False, failure, started, ended, where, output))
        return data


class ProcessExecutor(Executor):
    """A pool of ``max_workers`` spawned processes (default: the number of CPUs)."""

    name = "processes"

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self.max_workers = max_workers
        self._reset()

    def _reset(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._outbox: Outbox | None = None
        self._futures: dict[Hashable, concurrent.futures.Future[bytes]] = {}
        self._fn_bytes: dict[int, tuple[Callable[..., Any], bytes]] = {}
        self._size = 0
        self._abandoned = 0

    async def _start(self) -> None:
        assert self._loop is not None
        self._size = config.max_workers(self.max_workers)
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self._size, mp_context=multiprocessing.get_context("spawn")
        )
        self._outbox = Outbox(self._loop, self._deliver)

    def free_slots(self) -> int:
        return 2 * self._size - len(self._futures)

    def _pickled_fn(self, fn: Callable[..., Any]) -> bytes:
        cached = self._fn_bytes.get(id(fn))
        if cached is None or cached[0] is not fn:
            cached = (fn, cloudpickle.dumps(fn))
            self._fn_bytes[id(fn)] = cached
        return cached[1]

    def _submit(self, items: Sequence[WorkItem]) -> None:
        assert self._pool is not None and self._outbox is not None
        for item in items:
            try:
                fn_bytes = self._pickled_fn(item.fn)
                kwargs_bytes = cloudpickle.dumps(item.kwargs)
            except Exception as exc:
                now = time.time()
                error = TypeError(f"cannot send task {item.label!r} to a process: {exc}")
                failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
                self._outbox.put(Outcome(item.id, False, failure, now, now, "parent"))
                self._futures[item.id] = concurrent.futures.Future()
                continue
            future = self._pool.submit(
                _run_pickled, fn_bytes, kwargs_bytes, item.task, item.branch, item.attempt
            )
            self._futures[item.id] = future
            future.add_done_callback(functools.partial(self._done, item))

    def _done(self, item: WorkItem, future: concurrent.futures.Future[bytes]) -> None:
        assert self._outbox is not None
        if future.cancelled():
            return
        try:
            ok, value, started, ended, where, output = cloudpickle.loads(future.result())
        except Exception as exc:  # a worker died (BrokenProcessPool) or the payload broke
            now = time.time()
            msg = f"the worker process failed: {type(exc).__name__}: {exc}"
            if isinstance(exc, concurrent.futures.process.BrokenProcessPool):
                msg += (
                    ". If this is a script, put the code that runs the flow under "
                    "`if __name__ == '__main__':` (worker processes are spawned and import "
                    "the main module); if a task crashed the interpreter, it shows above."
                )
            error = RuntimeError(msg)
            failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
            ok, value, started, ended, where = False, failure, now, now, "process pool"
            output = None
        self._outbox.put(Outcome(item.id, ok, value, started, ended, where, output))

    def _deliver(self, outcomes: list[Outcome]) -> None:
        kept = [o for o in outcomes if self._futures.pop(o.id, None) is not None]
        if kept and self._on_done is not None and not self._closed:
            self._on_done(kept)

    def _cancel(self, ids: list[Hashable]) -> None:
        for id_ in ids:
            future = self._futures.pop(id_, None)
            if future is not None and not future.cancel():
                self._abandoned += 1

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Items may still run in worker processes (cancelled or timed out). Unlike a
        # thread, a process can be stopped: terminate the pool's workers so the work
        # really stops and the interpreter can exit. concurrent.futures has no public way
        # to reach them (and shutdown() forgets them), hence the private attribute, read
        # before shutting down.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        if self._abandoned:
            for process in processes:
                process.terminate()
