"""Run task bodies in worker processes (``spawn``), serialised with cloudpickle.

cloudpickle serialises functions by value, so tasks defined in ``__main__``,
a notebook or a closure work. Each task function is pickled once per run;
arguments and results travel as cloudpickle bytes.

Starting worker processes costs about a second, so runs share one pool per
size for the life of the process (:func:`shutdown_pools` closes them). A
running item that is cancelled or times out cannot be stopped on its own
(``concurrent.futures`` has no per-call kill): its pool is retired, and its
processes are terminated as soon as no run uses it any more; the next run
gets a fresh pool.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .. import config, jobdir
from ..capture import capturing, install
from ..values import Failed
from . import pickling
from .base import Executor, Outbox, Outcome, WorkItem, is_one_shot, settle


class _Pools:
    """Process pools shared by runs, one per size, counted by the runs that use them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_size: dict[int, concurrent.futures.ProcessPoolExecutor] = {}
        self._users: dict[concurrent.futures.ProcessPoolExecutor, int] = {}

    def acquire(self, size: int) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            pool = self._by_size.get(size)
            if pool is None:
                pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=size, mp_context=multiprocessing.get_context("spawn"))
                self._by_size[size] = pool
            self._users[pool] = self._users.get(pool, 0) + 1
            return pool

    def release(self, pool: concurrent.futures.ProcessPoolExecutor, retire: bool) -> None:
        """A run is done with ``pool``; ``retire`` when it left work running or broke it."""
        with self._lock:
            users = self._users.get(pool, 1) - 1
            self._users[pool] = users
            if retire:
                for size, shared in list(self._by_size.items()):
                    if shared is pool:
                        del self._by_size[size]  # later runs get a fresh pool
            stop = users <= 0 and pool not in self._by_size.values()
            if stop:
                del self._users[pool]
        if stop:
            _stop(pool)

    def pids(self) -> set[int]:
        with self._lock:
            pools = [*self._by_size.values(), *self._users]
        # concurrent.futures has no public list of a pool's processes (see _stop)
        return {pid for pool in pools for pid in (getattr(pool, "_processes", None) or {})}

    def shutdown(self) -> None:
        with self._lock:
            pools = list(self._users) + [p for p in self._by_size.values() if p not in self._users]
            self._by_size.clear()
            self._users.clear()
        for pool in pools:
            _stop(pool)


def _stop(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Shut a pool down and terminate its processes (work left in them must stop).

    concurrent.futures has no public way to reach the processes, and shutdown()
    forgets them, hence the private attribute, read first.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


_pools = _Pools()
atexit.register(_pools.shutdown)


def shutdown_pools() -> None:
    """Stop every shared worker pool (the next run starts a new one); for tests and exit."""
    _pools.shutdown()


def pool_pids() -> set[int]:
    """The process ids of the shared pools' workers (kept across runs on purpose)."""
    return _pools.pids()


def _run_pickled(fn_bytes: bytes, kwargs_bytes: bytes, task: str, branch: int | None,
                 attempt: int, job: jobdir.WorkerJob | None = None) -> bytes:
    """Worker side: unpickle, call, pickle the outcome (errors included, whatever they are).

    Every :class:`BaseException` of the task is its outcome: one that escaped here would
    reach the pool as a broken call, or (``SystemExit``) end the worker. ``job`` is the
    run's job directory.
    """
    started = time.time()
    install()
    _stop_commands_on_terminate()
    label = task if branch is None else f"{task}[{branch}]"
    jobdir.on_worker.set(job)
    with capturing() as captured:
        try:
            fn = pickling.loads(fn_bytes)
            kwargs = pickling.loads(kwargs_bytes)
            value: Any = fn(**kwargs)
            if is_one_shot(value):
                value = settle(value, label)
            ok = True
        except BaseException as exc:
            value = Failed.from_exception(task, exc, branch, attempt)
            ok = False
    ended = time.time()
    where = f"pid {os.getpid()}"
    output = captured or None
    if not ok:
        value = _sendable_failure(value)
    try:
        data: bytes = pickling.dumps((ok, value, started, ended, where, output))
        return data
    except Exception as exc:  # the result cannot travel back
        err = RuntimeError(f"the result of task {label!r} cannot be pickled: {exc}")
        failure = Failed.from_exception(task, err, branch, attempt)
        data = pickling.dumps((False, failure, started, ended, where, output))
        return data


def _stop_commands_on_terminate() -> None:
    """Make SIGTERM (how a pool is stopped) stop this worker's commands and containers
    first: they run in process groups of their own, which the worker's end would leave."""
    if signal.getsignal(signal.SIGTERM) is _terminated:
        return
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: Any) -> None:
    """Kill this worker's commands (without waiting on them: the interrupted code may be),
    then end as SIGTERM would have. A second SIGTERM meanwhile is ignored, not nested."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..childproc import kill_all

    kill_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _sendable_failure(failure: Failed) -> Failed:
    """``failure``, or a stand-in with the same type name, message and traceback text when
    its exception would not survive the trip back (it does not pickle, or its class
    cannot be rebuilt from what it pickles, like one whose ``__init__`` takes two
    arguments but passes one message to ``Exception``)."""
    try:
        pickling.loads(pickling.dumps(failure))
        return failure
    except Exception as exc:
        error = failure.error
        kind = f"{type(error).__module__}.{type(error).__qualname__}"
        stand_in = RuntimeError(f"{kind}: {error} (the exception itself could not be sent back "
                                f"from the worker process: {type(exc).__name__}: {exc})")
        return Failed(failure.task, stand_in, failure.traceback, failure.branch, failure.attempt)


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
        self._broken = False
        #: an outcome came back from the pool in this run (so its workers could start)
        self._served = False

    async def _start(self) -> None:
        assert self._loop is not None
        self._size = config.max_workers(self.max_workers)
        self._pool = _pools.acquire(self._size)
        self._outbox = Outbox(self._loop, self._deliver)

    def free_slots(self) -> int:
        return 2 * self._size - len(self._futures)

    def _pickled_fn(self, fn: Callable[..., Any]) -> bytes:
        cached = self._fn_bytes.get(id(fn))
        if cached is None or cached[0] is not fn:
            cached = (fn, pickling.dumps(fn))
            self._fn_bytes[id(fn)] = cached
        return cached[1]

    def _submit(self, items: Sequence[WorkItem]) -> None:
        assert self._pool is not None and self._outbox is not None
        for item in items:
            try:
                fn_bytes = self._pickled_fn(item.fn)
                kwargs_bytes = pickling.dumps(item.kwargs)
            except Exception as exc:
                now = time.time()
                error = TypeError(_unsendable(item, exc))
                failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
                self._outbox.put(Outcome(item.id, False, failure, now, now, "parent"))
                self._futures[item.id] = concurrent.futures.Future()
                continue
            job = None if item.board is None or item.board.job is None else item.board.job.for_worker()
            future = self._pool.submit(
                _run_pickled, fn_bytes, kwargs_bytes, item.task, item.branch, item.attempt, job
            )
            self._futures[item.id] = future
            future.add_done_callback(functools.partial(self._done, self._pool, item))

    def _done(self, pool: concurrent.futures.ProcessPoolExecutor, item: WorkItem,
              future: concurrent.futures.Future[bytes]) -> None:
        """Called in the pool's thread when an item's future ends: report its outcome."""
        assert self._outbox is not None
        if future.cancelled():
            return
        try:
            ok, value, started, ended, where, output = pickling.loads(future.result())
            self._served = True
        except BaseException as exc:  # a worker died (BrokenProcessPool) or the payload broke
            now = time.time()
            error = RuntimeError(self._lost(pool, item, exc))
            error.__cause__ = exc
            failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
            ok, value, started, ended, where = False, failure, now, now, "process pool"
            output = None
        self._outbox.put(Outcome(item.id, ok, value, started, ended, where, output))

    def _lost(self, pool: concurrent.futures.ProcessPoolExecutor, item: WorkItem,
              exc: BaseException) -> str:
        """Why ``item``'s outcome did not come back from its worker, as a one-line message."""
        if not isinstance(exc, concurrent.futures.process.BrokenProcessPool):
            return (f"the outcome of task {item.label!r} could not be read back from its worker "
                    f"process: {type(exc).__name__}: {exc}")
        self._broken = True
        codes = _exit_codes(pool)
        died = ", ".join(_describe_exit(code) for code in codes) or "ended abruptly"
        msg = (f"a worker process of the pool died while task {item.label!r} ran or waited "
               f"({died}); the pool is replaced for the next run")
        if not self._served and (not codes or codes == [1]) and _main_is_script():
            msg += (". If this is a script, put the code that runs the flow under "
                    "`if __name__ == '__main__':` (worker processes are spawned and import "
                    "the main module)")
        return msg

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
        for future in self._futures.values():  # not started yet: never will
            future.cancel()
        # Work left running (cancelled or timed out) cannot be stopped on its own: retire
        # the pool, so its processes are terminated once no other run uses it.
        _pools.release(pool, retire=bool(self._abandoned) or self._broken)


def _exit_codes(pool: concurrent.futures.ProcessPoolExecutor) -> list[int]:
    """The exit codes of the pool's processes that ended on their own (not terminated yet).

    concurrent.futures keeps its processes in a private attribute (see :func:`_stop`); the
    pool calls back about a dead worker before it terminates the others.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    codes = []
    for process in processes:
        # Its sentinel is ready once it ended, maybe a moment before it can be reaped.
        if process.exitcode is None and multiprocessing.connection.wait([process.sentinel], 0):
            process.join(1)
        code = process.exitcode
        if code is not None and code not in (0, -signal.SIGTERM):
            codes.append(code)
    return codes


def _describe_exit(code: int) -> str:
    """``killed by signal SIGSEGV`` or ``exit code 3``."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _main_is_script() -> bool:
    """True when the main module is a file that spawned workers import (not a notebook)."""
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None))


def _unsendable(item: WorkItem, exc: Exception) -> str:
    """Which part of ``item`` (its function or an input) cannot go to a worker process."""
    checks: list[tuple[str, Any]] = [("function", item.fn)]
    checks += [(f"input {name!r}", value) for name, value in item.kwargs.items()]
    for what, value in checks:
        try:
            pickling.dumps(value)
        except Exception as problem:
            return pickling.unsendable_message(item.label, what, value, problem, "a process")
    return f"cannot send task {item.label!r} to a process: {exc}"
