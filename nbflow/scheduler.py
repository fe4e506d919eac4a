"""The asyncio driver: feeds stimuli to :class:`Transitions`, carries out its instructions.

One :class:`Scheduler` drives one run on the scheduler loop. It owns the
executors' lifecycle, the timers (retry delays, timeouts) and the asyncio
tasks of ``async def`` task bodies; the decisions all live in
``transitions.py``.

Mixed placement: each task runs on the executor of its *lane* (``lanes.py``);
where an input crosses from a remote executor to another one, the scheduler
fetches it first. Remote results go to the result cache only when the
executor says they are cheap to gather (:meth:`Executor.cacheable`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from . import cancellation
from .cache import ResultStore
from .cancellation import CancelBoard
from .capture import capturing
from .errors import TaskTimeoutError
from .executors.base import Executor, Outcome, WorkItem, split_value
from .messages import (
    CacheAnswer,
    Cancel,
    CancelRunning,
    CancelTask,
    ChainAhead,
    CheckCondition,
    ConditionAnswer,
    Execute,
    Instruction,
    Item,
    LookupCache,
    RetryDue,
    RetryLater,
    RunFinished,
    SplitAnswer,
    SplitResult,
    Start,
    StoreResult,
    Take,
    TimedOut,
)
from .lanes import assign_lanes, crossing_inputs
from .transitions import Transitions
from .values import Failed

logger = logging.getLogger(__name__)

#: seconds of chaining work (see :meth:`Scheduler._dispatch`) before the loop gets a turn
CHAIN_SLICE = 0.005
#: the stimulus that hands out every ready ``async def`` item (it carries no state)
_TAKE_ASYNC = Take(0, asynchronous=True)


class Scheduler:
    """Runs one :class:`Transitions` to completion on the current event loop."""

    def __init__(self, sm: Transitions, executor: Executor, store: ResultStore) -> None:
        self.sm = sm
        self.executor = executor
        self.store = store
        #: the run's executors; lane i of the state machine runs on executors[i]
        self.executors, self._lane_of = assign_lanes(sm.plan.tasks, executor)
        if len(self.executors) > 1:
            sm.set_lanes(self._lane_of)
        chaining = {lane for lane, ex in enumerate(self.executors) if ex.chains}
        if chaining:
            sm.enable_chaining(chaining)
        self._remote = [ex for ex in self.executors if ex.remote]
        self._takes = [Take(0, lane) for lane in range(len(self.executors))]
        #: the attempts told to stop, for tasks that ask (``nf.cancelled()``)
        self.board = CancelBoard()
        #: task index -> (input name, lane) of inputs that must be fetched across lanes
        self._crossing: dict[int, list[tuple[str, int]]] = {}
        #: (item, attempt) of items whose crossing inputs are being fetched
        self._resolving: set[tuple[Item, int]] = set()
        self._background_tasks: set[asyncio.Task[None]] = set()
        self._to_store: dict[int, list[tuple[str, Any]]] = {}
        self._pending: deque[Instruction] = deque()
        self._timers: dict[tuple[Item, int], asyncio.TimerHandle] = {}
        self._async_tasks: dict[tuple[Item, int], asyncio.Task[None]] = {}
        self._done: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._cancel_requested = False
        self._cancel_tasks: list[int] = []
        #: cache lookups waiting for a worker thread (a slow store; see _lookup_batches)
        self._lookups: list[LookupCache] = []
        self._looking_up = False
        self._run_if_params: dict[int, tuple[set[str], bool]] = {}

    async def execute(self) -> str:
        """Run to the end; returns the final status."""
        loop = self._loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        try:
            for ex in self.executors:
                await ex.start(self._on_outcomes)
        except BaseException:
            self._process(self.sm.handle(Cancel()))
            for ex in self.executors:
                await ex.close()
            raise
        self._crossing = crossing_inputs(self.sm.plan, self.executors, self._lane_of)
        try:
            self._process(self.sm.handle(Start()))
            for index in self._cancel_tasks:
                self._process(self.sm.handle(CancelTask(index)))
            if self._cancel_requested:
                self._process(self.sm.handle(Cancel()))
            status = await self._done
        finally:
            for handle in self._timers.values():
                handle.cancel()
            for task in self._async_tasks.values():
                task.cancel()
            if self._background_tasks:  # e.g. remote results on their way into the cache
                await asyncio.wait(list(self._background_tasks), timeout=30)
            for ex in self.executors:
                await ex.close()
        return status

    def executor_of(self, task: int) -> Executor:
        """The executor that runs task ``task`` (by index)."""
        return self.executors[self._lane_of[task]]

    def cancel(self) -> None:
        """Cancel the run (call on the loop)."""
        self._cancel_requested = True
        if self._done is not None:
            self._process(self.sm.handle(Cancel()))

    def cancel_task(self, task: int) -> None:
        """Cancel one task, by index (call on the loop); the rest of the run goes on."""
        if self.sm.status == "pending":  # not started yet: right after the start
            self._cancel_tasks.append(task)
        else:
            self._process(self.sm.handle(CancelTask(task)))

    # -- stimuli from executors, timers, async tasks --------------------------------------

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        sm = self.sm
        timers = self._timers
        for o in outcomes:
            if timers:  # only tasks with timeout= have one
                handle = timers.pop(o.id, None)
                if handle is not None:
                    handle.cancel()
            self._pending.extend(sm.handle(o))
        self._process(())

    def _on_timeout(self, item: Item, attempt: int) -> None:
        self._timers.pop((item, attempt), None)
        self._process(self.sm.handle(TimedOut(item, attempt)))

    def _on_retry(self, item: Item, attempt: int) -> None:
        self._process(self.sm.handle(RetryDue(item, attempt)))

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
            if self.store.slow_get:  # a disk: answered from a worker thread, in batches
                self._lookups.append(ins)
                if not self._looking_up:
                    self._looking_up = True
                    self._background(self._lookup_batches())
                return
            hit, value = self._get(ins.key)
            self._pending.extend(sm.handle(CacheAnswer(ins.item, hit, value)))
        elif isinstance(ins, StoreResult):
            if self._remote and self._store_remote(ins.key, ins.value):
                return
            try:
                self.store.put(ins.key, ins.value)
            except Exception:  # a full disk or an unpicklable result: the run goes on
                logger.warning("could not cache a result under %s", ins.key, exc_info=True)
        elif isinstance(ins, CheckCondition):
            self._check_condition(ins)
        elif isinstance(ins, SplitResult):
            self._split(ins)
        elif isinstance(ins, RetryLater):
            assert self._loop is not None
            self._loop.call_later(ins.delay, self._on_retry, ins.item, ins.attempt)
        elif isinstance(ins, CancelRunning):
            self.board.cancel(ins.items)  # nf.cancelled() is now True for them
            ids: dict[int, list[tuple[Item, int]]] = {}
            for item, attempt in ins.items:
                handle = self._timers.pop((item, attempt), None)
                if handle is not None:
                    handle.cancel()
                task = self._async_tasks.pop((item, attempt), None)
                if task is not None:
                    task.cancel()
                elif (item, attempt) in self._resolving:
                    self._resolving.discard((item, attempt))
                else:
                    ids.setdefault(self._lane_of[item[0]], []).append((item, attempt))
            for lane, lane_ids in ids.items():
                self.executors[lane].cancel(lane_ids)
        elif isinstance(ins, RunFinished):
            if self._done is not None and not self._done.done():
                self._done.set_result(ins.status)
        else:  # pragma: no cover - a new instruction type without a handler
            raise TypeError(f"unknown instruction {ins!r}")

    def _get(self, key: str) -> tuple[bool, Any]:
        try:
            return self.store.get(key)
        except Exception:
            logger.warning("cache lookup failed for %s; recomputing", key, exc_info=True)
            return False, None

    def _get_many(self, keys: list[str]) -> list[tuple[bool, Any]]:
        return [self._get(key) for key in keys]

    async def _lookup_batches(self) -> None:
        """Answer the queued lookups of a slow store, a batch per worker-thread call."""
        assert self._loop is not None
        try:
            while self._lookups:
                batch, self._lookups = self._lookups, []
                answers = await self._loop.run_in_executor(
                    None, self._get_many, [ins.key for ins in batch])
                for ins, (hit, value) in zip(batch, answers):
                    self._pending.extend(self.sm.handle(CacheAnswer(ins.item, hit, value)))
                self._process(())
        finally:
            self._looking_up = False

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of this run (awaited before the executors close)."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    def _dispatch(self) -> None:
        """Hand ready items to the executors, then what can be chained onto them, and so on.

        Chaining a large static graph takes a while (dask serializes as it submits), so
        after :data:`CHAIN_SLICE` seconds the rest waits for the next loop iteration:
        the client sends what it has meanwhile and outcomes keep flowing in.
        """
        sm = self.sm
        self._dispatch_ready()
        deadline = time.perf_counter() + CHAIN_SLICE
        while sm.chain_candidates:
            if time.perf_counter() > deadline:
                assert self._loop is not None
                self._loop.call_soon(self._process, ())
                return
            self._pending.extend(sm.handle(ChainAhead()))
            while self._pending:  # the cache lookups of chained tasks
                self._handle(self._pending.popleft())
            self._dispatch_ready()

    def _dispatch_ready(self) -> None:
        """Hand ready items to the executor (up to its free slots) and to the loop (async)."""
        sm = self.sm
        ready = sm.ready
        if ready.size(0, asynchronous=True):
            for ex in sm.handle(_TAKE_ASYNC):
                self._start_async(ex)
        for lane, executor in enumerate(self.executors):
            if not ready.size(lane):
                continue
            free = executor.free_slots()
            if free > 0:
                take = self._takes[lane]  # reused: the machine keeps no stimulus
                take.n = free
                batch = sm.handle(take)
                if not batch:
                    continue
                if self._crossing:
                    crossing = [e for e in batch if e.item[0] in self._crossing]
                    if crossing:
                        batch = [e for e in batch if e.item[0] not in self._crossing]
                        self._submit_after_fetch(executor, [self._work_item(e) for e in crossing])
                if batch:
                    executor.submit([self._work_item(e) for e in batch])

    def _submit_after_fetch(self, executor: Executor, items: list[WorkItem]) -> None:
        """Fetch the inputs that cross from another executor, then submit (in a task)."""
        for item in items:
            self._resolving.add(item.id)
        self._background(self._fetch_and_submit(executor, items))

    async def _fetch_and_submit(self, executor: Executor, items: list[WorkItem]) -> None:
        try:
            await self._fetch_crossing([(it.id[0][0], it.kwargs) for it in items])
        except Exception as exc:
            now = time.time()
            outcomes = []
            for it in items:
                if it.id in self._resolving:
                    self._resolving.discard(it.id)
                    error = RuntimeError(f"the inputs of task {it.label!r} could not be fetched "
                                         f"from where they were computed: {exc}")
                    error.__cause__ = exc
                    failure = Failed.from_exception(it.task, error, it.branch, it.attempt)
                    outcomes.append(Outcome(it.id, False, failure, now, now, "kernel"))
            if outcomes:
                self._on_outcomes(outcomes)
            return
        ready = [it for it in items if it.id in self._resolving]
        for it in ready:
            self._resolving.discard(it.id)
        if ready and executor.started:
            executor.submit(ready)

    async def _fetch_crossing(self, calls: list[tuple[int, dict[str, Any]]]) -> None:
        """Replace, in place, the kwargs that cross lanes by their values (one fetch per lane)."""
        wanted: dict[int, list[tuple[dict[str, Any], str]]] = {}
        for t, kwargs in calls:
            for name, lane in self._crossing.get(t, ()):
                if name in kwargs:
                    wanted.setdefault(lane, []).append((kwargs, name))
        for lane, slots in wanted.items():
            values = await self.executors[lane].fetch_many([kw[name] for kw, name in slots])
            for (kw, name), value in zip(slots, values):
                kw[name] = value

    def _store_remote(self, key: str, value: Any) -> bool:
        """Queue a remote result for the cache (gathered in batches); False if not remote."""
        lane = next((i for i, ex in enumerate(self.executors) if ex.remote and ex.owns(value)), -1)
        if lane < 0:
            return False
        queue = self._to_store.setdefault(lane, [])
        queue.append((key, value))
        if len(queue) == 1:
            self._background(self._flush_store(lane))
        return True

    async def _flush_store(self, lane: int) -> None:
        await asyncio.sleep(0.01)  # let the results finishing about now join this batch
        pending = self._to_store.pop(lane, [])
        try:
            answers = await self.executors[lane].cacheable([v for _, v in pending])
        except Exception:
            logger.warning("could not gather results for the cache", exc_info=True)
            return
        for (key, _), (keep, value) in zip(pending, answers):
            if keep:
                try:
                    self.store.put(key, value)
                except Exception:
                    logger.warning("could not cache a result under %s", key, exc_info=True)

    def _work_item(self, ex: Execute) -> WorkItem:
        t, b = ex.item
        pt = self.sm.plan.tasks[t]
        options = pt.task.options
        if options.timeout is not None:
            assert self._loop is not None
            self._timers[(ex.item, ex.attempt)] = self._loop.call_later(
                options.timeout, self._on_timeout, ex.item, ex.attempt
            )
        return WorkItem(
            (ex.item, ex.attempt), pt.name, b, ex.attempt, pt.task.fn, ex.kwargs,
            options.timeout, options.priority, options.resources, self.board,
        )

    # -- async task bodies ---------------------------------------------------------------------

    def _start_async(self, ex: Execute) -> None:
        assert self._loop is not None
        key = (ex.item, ex.attempt)
        self._async_tasks[key] = self._loop.create_task(self._run_async(ex))

    async def _run_async(self, ex: Execute) -> None:
        t, b = ex.item
        pt = self.sm.plan.tasks[t]
        timeout = pt.task.options.timeout
        started = time.time()
        # This asyncio task runs in its own context copy, so the capture is its own.
        cancellation.current.set((self.board, (ex.item, ex.attempt)))
        output_cm = capturing()
        output = output_cm.__enter__()
        try:
            value = await asyncio.wait_for(pt.task.fn(**ex.kwargs), timeout)
            ok = True
        except asyncio.CancelledError:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            label = pt.name if b is None else f"{pt.name}[{b}]"
            error: Exception = exc
            if timeout is not None and time.time() - started >= timeout * 0.99:
                error = TaskTimeoutError(label, timeout)
            value, ok = Failed.from_exception(pt.name, error, b, ex.attempt), False
        except Exception as exc:
            value, ok = Failed.from_exception(pt.name, exc, b, ex.attempt), False
        finally:
            output_cm.__exit__(None, None, None)
            self._async_tasks.pop((ex.item, ex.attempt), None)
        outcome = Outcome((ex.item, ex.attempt), ok, value, started, time.time(), "scheduler loop",
                          output or None)
        self._on_outcomes([outcome])

    # -- run_if and map splitting ------------------------------------------------------------------

    def _check_condition(self, ins: CheckCondition) -> None:
        t, b = ins.item
        pt = self.sm.plan.tasks[t]
        predicate = pt.task.options.run_if
        assert predicate is not None
        names, takes_all = self._predicate_params(t, predicate)
        kwargs = ins.kwargs if takes_all else {k: v for k, v in ins.kwargs.items() if k in names}
        executor = self.executor_of(t)
        if executor.remote or t in self._crossing:
            self._background(self._check_remote(ins.item, predicate, kwargs, executor))
            return
        self._pending.extend(self.sm.handle(ConditionAnswer(ins.item, _call_predicate(
            pt.name, b, predicate, kwargs))))

    async def _check_remote(self, item: Item, predicate: Callable[..., Any],
                            kwargs: dict[str, Any], executor: Executor) -> None:
        """``run_if`` next to the data: on the task's executor (a dask worker), after
        fetching only the inputs that cross from another executor."""
        t, b = item
        name = self.sm.plan.tasks[t].name
        answer: bool | Failed
        try:
            await self._fetch_crossing([(t, kwargs)])
            answer = bool(await executor.apply(predicate, kwargs))
        except Exception as exc:
            answer = _predicate_failure(name, b, exc)
        self._process(self.sm.handle(ConditionAnswer(item, answer)))

    def _predicate_params(self, t: int, predicate: Callable[..., Any]) -> tuple[set[str], bool]:
        cached = self._run_if_params.get(t)
        if cached is None:
            params = inspect.signature(predicate).parameters.values()
            takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
            cached = ({p.name for p in params}, takes_all)
            self._run_if_params[t] = cached
        return cached

    def _split(self, ins: SplitResult) -> None:
        name = self.sm.plan.tasks[ins.source].name
        if self.executor_of(ins.source).remote:
            self._background(self._split_remote(ins))
            return
        try:
            items: list[Any] | Failed = split_value(ins.value)
        except Exception as exc:  # not iterable, or its iteration raised
            items = Failed.from_exception(name, _map_error(name, exc))
        self._pending.extend(self.sm.handle(SplitAnswer(ins.source, items)))

    async def _split_remote(self, ins: SplitResult) -> None:
        name = self.sm.plan.tasks[ins.source].name
        executor = self.executor_of(ins.source)
        # Branches on the same executor cut their items out where the result is; a
        # consumer elsewhere gets plain items (one fetch of the whole result).
        local = any(self.executor_of(c) is not executor for c in ins.consumers)
        try:
            items: list[Any] | Failed
            if local:
                items = split_value(await executor.fetch(ins.value))
            else:
                items = await executor.split(ins.value)
        except Exception as exc:
            items = Failed.from_exception(name, _map_error(name, exc))
        self._process(self.sm.handle(SplitAnswer(ins.source, items)))


def _call_predicate(task: str, branch: int | None, predicate: Callable[..., Any],
                    kwargs: dict[str, Any]) -> bool | Failed:
    try:
        return bool(predicate(**kwargs))
    except Exception as exc:
        return _predicate_failure(task, branch, exc)


def _predicate_failure(task: str, branch: int | None, exc: Exception) -> Failed:
    error = RuntimeError(f"run_if of task {task!r} raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return Failed.from_exception(task, error, branch)


def _map_error(task: str, exc: BaseException) -> Exception:
    error = TypeError(f"tasks that map over {task!r}: {exc}")
    error.__cause__ = exc
    return error
