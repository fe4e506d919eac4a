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
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from . import cancellation, config, fusion
from .cache import ResultStore
from .cancellation import CancelBoard
from .capture import capturing
from .container_python import InImage
from .errors import TaskTimeoutError
from .executors.base import Executor, Outcome, WorkItem, is_one_shot, settle
from .isolation import private_arguments
from .messages import (
    CacheAnswer,
    Cancel,
    CancelRunning,
    CancelTask,
    ChainAhead,
    CheckCondition,
    Execute,
    Instruction,
    Item,
    LookupCache,
    RetryDue,
    RetryLater,
    RunFinished,
    SplitResult,
    Start,
    StartStream,
    StopStream,
    StoreResult,
    StreamEnded,
    Take,
    TimedOut,
    Yielded,
)
from .batching import JoinBatch
from .lanes import assign_lanes, crossing_inputs
from .stream_pump import Pumps, pump_kind
from .streams import consumed
from .task import Task
from .loading import CachedValues
from .placement import MixedPlacement
from .questions import Questions
from .transitions import Transitions
from .values import Failed

logger = logging.getLogger(__name__)

#: seconds of chaining work (see :meth:`Scheduler._dispatch`) before the loop gets a turn
CHAIN_SLICE = 0.005
#: the same when chains fuse: the hops of a chain fuse only when handed over in one slice
FUSE_SLICE = 0.1
#: the stimulus that hands out every ready ``async def`` item (it carries no state)
_TAKE_ASYNC = Take(0, asynchronous=True)


#: seconds the end of a run waits for stopped generators to close (their finally blocks)
PUMP_JOIN_WAIT = 30.0


def _wrap(task: Task) -> Callable[..., Any]:
    """The function an executor calls for ``task``: its own, in its image
    (``container_python``), joining its batch first (``batching``)."""
    fn = task.fn
    options = task.options
    if options.image is not None and task.command is None:  # a Python task in a container
        fn = InImage(task.name, fn, options.image, options.timeout)
    if options.batch_size is not None and options.map is not None:
        fn = JoinBatch(fn, options.map)
    return fn


def _join(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class Scheduler(Questions, MixedPlacement):
    """Runs one :class:`Transitions` to completion on the current event loop."""

    def __init__(self, sm: Transitions, executor: Executor, store: ResultStore) -> None:
        self.sm = sm
        self.executor = executor
        self.store = store
        #: cached results read only when something needs them (``loading.py``)
        self.cached = CachedValues(store)
        #: the run's executors; lane i of the state machine runs on executors[i]
        self.executors, self._lane_of = assign_lanes(sm.plan.tasks, executor)
        if len(self.executors) > 1:
            sm.set_lanes(self._lane_of)
        chaining = {lane for lane, ex in enumerate(self.executors) if ex.chains}
        if chaining:
            sm.enable_chaining(chaining)
        fusing = {lane for lane in chaining if self.executors[lane].fuses}
        #: task index -> the upstream it may run fused with (``fusion.py``); None: no fusion
        self._fuse_onto = (fusion.fusible_onto(sm.records, sm.chain, sm.ready.lane_of, fusing)
                           if fusing and sm.chain is not None and fusion.enabled() else None)
        #: lane -> items handed out by one dispatch, submitted together at its end
        self._outbox: dict[int, list[WorkItem]] = {}
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
        #: task functions as executors call them, wrapped once per run (see _wrap)
        self._wrapped: dict[str, Callable[..., Any]] = {}
        self._async_tasks: dict[tuple[Item, int], asyncio.Task[None]] = {}
        #: the threads of streaming tasks' generators (``stream_pump.py``)
        self._pumps = Pumps()
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
            threads, pumping = self._pumps.stop_all()
            if pumping:  # their generators' finally blocks run before the run is over
                await asyncio.wait(pumping, timeout=PUMP_JOIN_WAIT)
            if threads:
                await asyncio.to_thread(_join, threads, PUMP_JOIN_WAIT)
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
        if self.board.run_cancelled and not self._cancel_requested:
            # Run.cancel() told the bodies at once, and one that stopped came back before
            # the cancel got here (inline: it held the loop): cancel first, so its
            # "cancelled" error is a late answer, not a failure.
            self._cancel_requested = True
            self._pending.extend(sm.handle(Cancel()))
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
            if self._pumps:
                records = self.sm.records
                self._pumps.update(lambda t: consumed(records, records[t]))
        finally:
            self._busy = False

    def _handle(self, ins: Instruction) -> None:
        sm = self.sm
        if isinstance(ins, LookupCache):
            if self.cached.lazy:  # a disk: answered from a worker thread, in batches
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
        elif isinstance(ins, StartStream):
            self._start_stream(ins)
        elif isinstance(ins, StopStream):
            self._pumps.stop(ins.task)
        elif isinstance(ins, RunFinished):
            if self._done is not None and not self._done.done():
                self._done.set_result(ins.status)
        else:  # pragma: no cover - a new instruction type without a handler
            raise TypeError(f"unknown instruction {ins!r}")

    def _start_stream(self, ins: StartStream) -> None:
        assert self._loop is not None
        pt = self.sm.plan.tasks[ins.task]
        buffer = pt.task.options.buffer or int(config.get("stream_buffer"))
        for child in pt.children:  # a batch must be able to fill: room for one at least
            batch = self.sm.plan.tasks[child].task.options.batch_size
            if batch is not None and self.sm.plan.tasks[child].map_source == ins.task:
                buffer = max(buffer, batch)
        kind = pump_kind(pt.task.fn)
        self._pumps.start(kind(ins.task, pt.name, pt.task.fn, ins.kwargs, buffer, self._loop,
                               self._on_stream, self.board, ((ins.task, None), 1)))

    def _on_stream(self, stimulus: Yielded | StreamEnded) -> None:
        self._process(self.sm.handle(stimulus))

    def _get(self, key: str) -> tuple[bool, Any]:
        try:
            return self.store.get(key)
        except Exception:
            logger.warning("cache lookup failed for %s; recomputing", key, exc_info=True)
            return False, None

    def _probe_many(self, lookups: list[LookupCache]) -> list[tuple[bool, Any]]:
        """Answers for a slow store's lookups (in a worker thread): :class:`Stored` markers,
        read later if something needs them (see ``loading.py``)."""
        answers = []
        for ins in lookups:
            try:
                answers.append(self.cached.probe(ins.key, self._label(ins.item)))
            except Exception:
                logger.warning("cache lookup failed for %s; recomputing", ins.key, exc_info=True)
                answers.append((False, None))
        return answers

    def _label(self, item: Item) -> str:
        t, b = item
        name = self.sm.plan.tasks[t].name
        return name if b is None else f"{name}[{b}]"

    async def _lookup_batches(self) -> None:
        """Answer the queued lookups of a slow store, a batch per worker-thread call."""
        assert self._loop is not None
        try:
            while self._lookups:
                batch, self._lookups = self._lookups, []
                answers = await self._loop.run_in_executor(None, self._probe_many, batch)
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
        after :data:`CHAIN_SLICE` seconds (:data:`FUSE_SLICE` when chains fuse: the
        hops of a chain fuse only when handed over together) the rest waits for the next
        loop iteration:
        the client sends what it has meanwhile and outcomes keep flowing in.
        """
        sm = self.sm
        self._dispatch_ready()
        deadline = time.perf_counter() + (CHAIN_SLICE if self._fuse_onto is None else FUSE_SLICE)
        while sm.chain_candidates:
            if time.perf_counter() > deadline:
                assert self._loop is not None
                self._loop.call_soon(self._process, ())
                break
            self._pending.extend(sm.handle(ChainAhead()))
            while self._pending:  # the cache lookups of chained tasks
                self._handle(self._pending.popleft())
            self._dispatch_ready()
        if self._outbox:  # one batch per executor: a chain in it may be fused
            outbox, self._outbox = self._outbox, {}
            for lane, items in outbox.items():
                self.executors[lane].submit(items)

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
            free = executor.free_slots() - len(self._outbox.get(lane, ()))
            if free > 0:
                take = self._takes[lane]  # reused: the machine keeps no stimulus
                take.n = free
                batch = sm.handle(take)
                if not batch:
                    continue
                if self._crossing or self.cached.handed_out:
                    keep: list[Execute] = []
                    fetch: list[Execute] = []
                    for e in batch:
                        (fetch if self._must_fetch(e.item[0], e.kwargs) else keep).append(e)
                    if fetch:
                        batch = keep
                        self._submit_after_fetch(executor, [self._work_item(e) for e in fetch])
                if batch:
                    self._outbox.setdefault(lane, []).extend(self._work_item(e) for e in batch)

    def _work_item(self, ex: Execute) -> WorkItem:
        t, b = ex.item
        pt = self.sm.plan.tasks[t]
        options = pt.task.options
        if options.timeout is not None:
            assert self._loop is not None
            self._timers[(ex.item, ex.attempt)] = self._loop.call_later(
                options.timeout, self._on_timeout, ex.item, ex.attempt
            )
        fn = self._wrapped.get(pt.name) or self._wrapped.setdefault(pt.name, _wrap(pt.task))
        onto = None
        if self._fuse_onto is not None and (d := self._fuse_onto[t]) is not None:
            onto = fusion.chained_id(ex.kwargs, d)
        return WorkItem(
            (ex.item, ex.attempt), pt.name, b, ex.attempt, fn, ex.kwargs,
            options.timeout, options.priority, options.resources, self.board,
            self.sm.records[t].private, onto,
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
        label = pt.name if b is None else f"{pt.name}[{b}]"
        try:
            if self.cached.needs(ex.kwargs):
                await self._fetch_crossing([(t, ex.kwargs)])
            kwargs = private_arguments(ex.kwargs, self.sm.records[t].private)
            value = await asyncio.wait_for(pt.task.fn(**kwargs), timeout)
            if is_one_shot(value):
                value = settle(value, label)
            ok = True
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # nbflow cancelled it (the run or the task was cancelled)
            value, ok = Failed.from_exception(pt.name, exc, b, ex.attempt), False
        except (asyncio.TimeoutError, TimeoutError) as exc:
            error: BaseException = exc
            if timeout is not None and time.time() - started >= timeout * 0.99:
                error = TaskTimeoutError(label, timeout)
            value, ok = Failed.from_exception(pt.name, error, b, ex.attempt), False
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the task's, not ours
            value, ok = Failed.from_exception(pt.name, exc, b, ex.attempt), False
        finally:
            output_cm.__exit__(None, None, None)
            self._async_tasks.pop((ex.item, ex.attempt), None)
        outcome = Outcome((ex.item, ex.attempt), ok, value, started, time.time(), "scheduler loop",
                          output or None)
        self._on_outcomes([outcome])
