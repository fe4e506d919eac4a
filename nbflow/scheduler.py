"""The asyncio driver: feeds stimuli to :class:`Transitions`, carries out its instructions.

One :class:`Scheduler` drives one run on the scheduler loop. It owns the
executor's lifecycle, the timers (retry delays, timeouts) and the asyncio
tasks of ``async def`` task bodies; the decisions all live in
``transitions.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from .cache import ResultStore
from .capture import capturing
from .errors import TaskTimeoutError
from .executors.base import Executor, Outcome, WorkItem, split_value
from .transitions import (
    CancelRunning,
    CheckCondition,
    Execute,
    Instruction,
    Item,
    LookupCache,
    RetryLater,
    RunFinished,
    SplitResult,
    StoreResult,
    Transitions,
)
from .values import Failed

logger = logging.getLogger(__name__)


class Scheduler:
    """Runs one :class:`Transitions` to completion on the current event loop."""

    def __init__(self, sm: Transitions, executor: Executor, store: ResultStore) -> None:
        self.sm = sm
        self.executor = executor
        self.store = store
        self._pending: deque[Instruction] = deque()
        self._timers: dict[tuple[Item, int], asyncio.TimerHandle] = {}
        self._async_tasks: dict[tuple[Item, int], asyncio.Task[None]] = {}
        self._done: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._cancel_requested = False
        self._run_if_params: dict[int, tuple[set[str], bool]] = {}

    async def execute(self) -> str:
        """Run to the end; returns the final status."""
        loop = self._loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        try:
            await self.executor.start(self._on_outcomes)
        except BaseException:
            self._process(self.sm.cancel())
            raise
        try:
            self._process(self.sm.start())
            if self._cancel_requested:
                self._process(self.sm.cancel())
            status = await self._done
        finally:
            for handle in self._timers.values():
                handle.cancel()
            for task in self._async_tasks.values():
                task.cancel()
            await self.executor.close()
        return status

    def cancel(self) -> None:
        """Cancel the run (call on the loop)."""
        self._cancel_requested = True
        if self._done is not None:
            self._process(self.sm.cancel())

    # -- stimuli from executors, timers, async tasks --------------------------------------

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        sm = self.sm
        timers = self._timers
        for o in outcomes:
            item, attempt = cast(tuple[Item, int], o.id)
            if timers:  # only tasks with timeout= have one
                handle = timers.pop((item, attempt), None)
                if handle is not None:
                    handle.cancel()
            self._pending.extend(sm.finished(item, attempt, o.ok, o.value, o.started, o.ended,
                                             o.where, o.output))
        self._process(())

    def _on_timeout(self, item: Item, attempt: int) -> None:
        self._timers.pop((item, attempt), None)
        self._process(self.sm.timed_out(item, attempt))

    def _on_retry(self, item: Item, attempt: int) -> None:
        self._process(self.sm.retry_due(item, attempt))

    # -- carrying out instructions -----------------------------------------------------------

    def _process(self, instructions: Iterable[Instruction]) -> None:
        """Carry out instructions (and the ones they lead to), then hand out ready work."""
        self._pending.extend(instructions)
        if self._busy:  # re-entered from an instruction: the outer call drains the queue
            return
        self._busy = True
        try:
            while self._pending:
                self._handle(self._pending.popleft())
            self._dispatch()
        finally:
            self._busy = False

    def _handle(self, ins: Instruction) -> None:
        sm = self.sm
        if isinstance(ins, LookupCache):
            try:
                hit, value = self.store.get(ins.key)
            except Exception:
                logger.warning("cache lookup failed for %s; recomputing", ins.key, exc_info=True)
                hit, value = False, None
            self._pending.extend(sm.cache_answer(ins.item, hit, value))
        elif isinstance(ins, StoreResult):
            try:
                self.store.put(ins.key, ins.value)
            except Exception:  # a full disk or an unpicklable result: the run goes on
                logger.warning("could not cache a result under %s", ins.key, exc_info=True)
        elif isinstance(ins, CheckCondition):
            self._check_condition(ins)
        elif isinstance(ins, SplitResult):
            self._split(ins.source)
        elif isinstance(ins, RetryLater):
            assert self._loop is not None
            self._loop.call_later(ins.delay, self._on_retry, ins.item, ins.attempt)
        elif isinstance(ins, CancelRunning):
            ids = []
            for item, attempt in ins.items:
                handle = self._timers.pop((item, attempt), None)
                if handle is not None:
                    handle.cancel()
                task = self._async_tasks.pop((item, attempt), None)
                if task is not None:
                    task.cancel()
                else:
                    ids.append((item, attempt))
            self.executor.cancel(ids)
        elif isinstance(ins, RunFinished):
            if self._done is not None and not self._done.done():
                self._done.set_result(ins.status)
        else:  # pragma: no cover - a new instruction type without a handler
            raise TypeError(f"unknown instruction {ins!r}")

    def _dispatch(self) -> None:
        """Hand ready items to the executor (up to its free slots) and to the loop (async)."""
        sm = self.sm
        for ex in sm.take_async():
            self._start_async(ex)
        free = self.executor.free_slots()
        if free > 0:
            batch = sm.take(free)
            if batch:
                self.executor.submit([self._work_item(ex) for ex in batch])

    def _work_item(self, ex: Execute) -> WorkItem:
        t, b = ex.item
        rec = self.sm.records[t]
        options = rec.pt.task.options
        if options.timeout is not None:
            assert self._loop is not None
            self._timers[(ex.item, ex.attempt)] = self._loop.call_later(
                options.timeout, self._on_timeout, ex.item, ex.attempt
            )
        return WorkItem(
            (ex.item, ex.attempt), rec.name, b, ex.attempt, rec.pt.task.fn, ex.kwargs,
            options.timeout, options.priority, options.resources,
        )

    # -- async task bodies ---------------------------------------------------------------------

    def _start_async(self, ex: Execute) -> None:
        assert self._loop is not None
        key = (ex.item, ex.attempt)
        self._async_tasks[key] = self._loop.create_task(self._run_async(ex))

    async def _run_async(self, ex: Execute) -> None:
        t, b = ex.item
        rec = self.sm.records[t]
        timeout = rec.pt.task.options.timeout
        started = time.time()
        # This asyncio task runs in its own context copy, so the capture is its own.
        output_cm = capturing()
        output = output_cm.__enter__()
        try:
            value = await asyncio.wait_for(rec.pt.task.fn(**ex.kwargs), timeout)
            ok = True
        except asyncio.CancelledError:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            label = rec.name if b is None else f"{rec.name}[{b}]"
            error: Exception = exc
            if timeout is not None and time.time() - started >= timeout * 0.99:
                error = TaskTimeoutError(label, timeout)
            value, ok = Failed.from_exception(rec.name, error, b, ex.attempt), False
        except Exception as exc:
            value, ok = Failed.from_exception(rec.name, exc, b, ex.attempt), False
        finally:
            output_cm.__exit__(None, None, None)
            self._async_tasks.pop((ex.item, ex.attempt), None)
        outcome = Outcome((ex.item, ex.attempt), ok, value, started, time.time(), "scheduler loop",
                          output or None)
        self._on_outcomes([outcome])

    # -- run_if and map splitting ------------------------------------------------------------------

    def _check_condition(self, ins: CheckCondition) -> None:
        t, b = ins.item
        rec = self.sm.records[t]
        predicate = rec.pt.task.options.run_if
        assert predicate is not None
        names, takes_all = self._predicate_params(t, predicate)
        kwargs = ins.kwargs if takes_all else {k: v for k, v in ins.kwargs.items() if k in names}
        if self.executor.remote:
            assert self._loop is not None
            self._loop.create_task(self._check_remote(ins.item, predicate, kwargs))
            return
        self._pending.extend(self.sm.condition_answer(ins.item, _call_predicate(
            rec.name, b, predicate, kwargs)))

    async def _check_remote(self, item: Item, predicate: Callable[..., Any],
                            kwargs: dict[str, Any]) -> None:
        t, b = item
        values = {k: await self.executor.fetch(v) for k, v in kwargs.items()}
        answer = _call_predicate(self.sm.records[t].name, b, predicate, values)
        self._process(self.sm.condition_answer(item, answer))

    def _predicate_params(self, t: int, predicate: Callable[..., Any]) -> tuple[set[str], bool]:
        cached = self._run_if_params.get(t)
        if cached is None:
            params = inspect.signature(predicate).parameters.values()
            takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
            cached = ({p.name for p in params}, takes_all)
            self._run_if_params[t] = cached
        return cached

    def _split(self, source: int) -> None:
        rec = self.sm.records[source]
        if self.executor.remote:
            assert self._loop is not None
            self._loop.create_task(self._split_remote(source))
            return
        try:
            items: list[Any] | Failed = split_value(rec.result)
        except TypeError as exc:
            items = Failed.from_exception(rec.name, _map_error(rec.name, exc))
        self._pending.extend(self.sm.split_answer(source, items))

    async def _split_remote(self, source: int) -> None:
        rec = self.sm.records[source]
        try:
            items: list[Any] | Failed = await self.executor.split(rec.result)
        except Exception as exc:
            items = Failed.from_exception(rec.name, _map_error(rec.name, exc))
        self._process(self.sm.split_answer(source, items))


def _call_predicate(task: str, branch: int | None, predicate: Callable[..., Any],
                    kwargs: dict[str, Any]) -> bool | Failed:
    try:
        return bool(predicate(**kwargs))
    except Exception as exc:
        error = RuntimeError(f"run_if of task {task!r} raised {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return Failed.from_exception(task, error, branch)


def _map_error(task: str, exc: Exception) -> Exception:
    error = TypeError(f"tasks that map over {task!r}: {exc}")
    error.__cause__ = exc
    return error
