"""The scheduler's decisions as a state machine with no I/O.

:class:`Transitions` receives stimuli (a run starts, an item finished, a cache
lookup answered, a retry is due, a timeout fired, cancel) and answers with
*instructions* (look up the cache, evaluate ``run_if``, split a result for
mapping, store a result, retry later, cancel running items, the run ended).
Ready work is taken with :meth:`Transitions.take`, highest priority first.
The asyncio driver in ``scheduler.py`` carries the instructions out.

An *item* is ``(task index, branch)``; ``branch`` is None for a task that is
not mapped. A mapped task's branch i of an element-wise map (mapping over a
mapped task) starts as soon as branch i of its source finished: no barrier.

*Chaining* (for executors that :attr:`~nbflow.executors.Executor.chains`, dask):
a plain task whose upstreams are all running on the same executor is handed
over *ahead*, with :class:`~nbflow.executors.ResultOf` references to their
results, so the executor chains the hops itself instead of waiting for a round
trip through the kernel per hop. Its record stays ``pending`` (``chained``)
until its upstreams finished here; then it turns ``running`` and its outcome,
which may have arrived already, is applied. When an upstream attempt fails,
the chained tasks below it are cancelled and go the ordinary way (skipped, or
resubmitted after a retry).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .cache import hash_bytes, task_key
from .capture import Capture
from .errors import TaskTimeoutError
from .events import EventBus, RunEvent, TaskEvent
from .executors.base import ResultOf, ResultsOf
from .plan import Plan, PlannedTask
from .states import FINAL, OK, aggregate, ended_verb, run_status
from .values import Failed, Skipped
from .views import TaskView

logger = logging.getLogger(__name__)

Item = tuple[int, "int | None"]

TERMINAL = FINAL


# -- instructions (out) -------------------------------------------------------------------


@dataclass(slots=True)
class Execute:
    """Run one item's function with these keyword arguments."""

    item: Item
    attempt: int
    kwargs: dict[str, Any]


@dataclass(slots=True)
class LookupCache:
    """Look ``key`` up in the result store; answer with :meth:`Transitions.cache_answer`."""

    item: Item
    key: str


@dataclass(slots=True)
class CheckCondition:
    """Call the task's ``run_if`` with these arguments; answer with ``condition_answer``."""

    item: Item
    kwargs: dict[str, Any]


@dataclass(slots=True)
class SplitResult:
    """Split task ``source``'s result into items for mapping; answer with ``split_answer``."""

    source: int


@dataclass(slots=True)
class StoreResult:
    """Keep ``value`` in the result store under ``key``."""

    key: str
    value: Any


@dataclass(slots=True)
class RetryLater:
    """Call :meth:`Transitions.retry_due` for this item after ``delay`` seconds."""

    item: Item
    attempt: int
    delay: float


@dataclass(slots=True)
class CancelRunning:
    """Stop (or abandon) these running ``(item, attempt)`` pairs."""

    items: list[tuple[Item, int]]


@dataclass(slots=True)
class RunFinished:
    """Every task is in a final state."""

    status: str


Instruction = Execute | LookupCache | CheckCondition | SplitResult | StoreResult | RetryLater | CancelRunning | RunFinished


# -- per-task record ----------------------------------------------------------------------


class TaskRecord:
    """What the run knows about one task; read by :class:`~nbflow.Run` for status."""

    __slots__ = (
        "pt", "state", "waiting", "activated", "key", "result", "error", "attempt",
        "started", "ended", "where", "n", "items", "bstate", "battempt", "done",
        "counts", "in_flight", "deferred", "split_waiters", "skip_reason", "ew_children",
        "dep_idx", "up_idx", "output", "chained", "chain_lookup", "early",
    )

    def __init__(self, pt: PlannedTask) -> None:
        #: the planned task
        self.pt = pt
        #: task-level state (for a mapped task: the aggregate of its branches)
        self.state = "pending"
        #: dependencies not yet final (not counting an element-wise map source)
        self.waiting = 0
        #: set once dependencies allowed it to run (branches may follow)
        self.activated = False
        #: cache key of this task's inputs (None: not cacheable)
        self.key: str | None = None
        #: result; for a mapped task the list of branch results (Failed/Skipped in place)
        self.result: Any = None
        #: first failure
        self.error: Failed | None = None
        #: current attempt of a task that is not mapped
        self.attempt = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.where: str | None = None
        #: mapped: number of branches (None until known)
        self.n: int | None = None
        #: this task's result split into items, for tasks that map over it
        self.items: list[Any] | None = None
        #: mapped: state per branch
        self.bstate: list[str] | None = None
        #: mapped: attempt per branch that started
        self.battempt: dict[int, int] = {}
        #: mapped: branches in a final state
        self.done = 0
        #: mapped: final branch states counted
        self.counts: dict[str, int] = {}
        #: items handed to the executor and not finished
        self.in_flight = 0
        #: branches held back by max_parallel
        self.deferred: deque[int] = deque()
        #: mapped tasks waiting for this task's result to be split
        self.split_waiters: list[int] = []
        self.skip_reason = ""
        #: tasks that map element-wise over this one
        self.ew_children: list[int] = []
        #: dependencies that gate activation (all but an element-wise source)
        self.dep_idx: tuple[int, ...] = ()
        #: (input name, task index) of data upstreams
        self.up_idx: tuple[tuple[str, int], ...] = ()
        #: captured output of the last attempt, by branch (None for a task that is not mapped)
        self.output: dict[int | None, Capture] = {}
        #: chaining: 0 no, QUEUED in a ready heap ahead, SUBMITTED ahead (state still pending)
        self.chained = 0
        #: chaining: a cache lookup ahead of the upstreams is out
        self.chain_lookup = False
        #: chaining: an outcome that arrived before the upstreams finished here
        self.early: tuple[bool, Any, float, float, str | None, Capture | None] | None = None

    @property
    def name(self) -> str:
        return self.pt.task.name

    @property
    def ok(self) -> bool:
        return self.state in OK

    @property
    def attempts(self) -> int:
        """Attempts of the task, or the most of any branch."""
        if self.pt.mapped:
            return max(self.battempt.values(), default=0)
        return self.attempt


QUEUED, SUBMITTED = 1, 2


# -- the state machine ----------------------------------------------------------------


class Transitions:
    """Decisions of one run. Only its methods change its state."""

    def __init__(
        self,
        plan: Plan,
        run_id: str,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self.bus = bus if bus is not None else EventBus()
        self.clock = clock
        self.records = [TaskRecord(pt) for pt in plan.tasks]
        #: the public view of each task (by index), rebuilt on each change of its record
        self.views: list[TaskView] = [
            TaskView(pt.name, "pending", mapped=pt.mapped, forced=pt.forced) for pt in plan.tasks]
        self.unfinished = len(self.records)
        self.status = "pending"
        self.cancelling = False
        self._ready: list[tuple[int, int, int, int | None]] = []
        #: ready heaps by executor lane (lane 0 is ``_ready``); see :meth:`set_lanes`
        self._lanes: list[list[tuple[int, int, int, int | None]]] = [self._ready]
        self._lane_of: list[int] | None = None
        self._ready_async: list[tuple[int, int, int, int | None]] = []
        self._seq = 0
        #: chaining: per task, whether it may be submitted ahead (see enable_chaining)
        self._chainable: list[bool] | None = None
        #: chaining: tasks to check, because an upstream of theirs was just handed over
        self._chain_candidates: list[int] = []
        for rec in self.records:
            pt = rec.pt
            ew_source = pt.map_source if pt.elementwise else None
            rec.dep_idx = tuple(d for d in pt.deps if d != ew_source)
            rec.waiting = len(rec.dep_idx)
            rec.up_idx = tuple((u, plan.by_name[u].index) for u in pt.upstreams)
            if ew_source is not None:
                self.records[ew_source].ew_children.append(pt.index)

    # -- stimuli -----------------------------------------------------------------------

    def start(self) -> list[Instruction]:
        """The run begins: activate every task with no dependencies."""
        out: list[Instruction] = []
        self.status = "running"
        self._emit_run("running")
        if not self.records:
            return self._finish(out)
        for rec in self.records:
            if rec.waiting == 0:
                self._try_activate(rec, out)
        return out

    def set_lanes(self, lanes: list[int]) -> None:
        """Give each task (by index) an executor lane; :meth:`take` then serves one lane."""
        self._lane_of = lanes
        while len(self._lanes) <= max(lanes, default=0):
            self._lanes.append([])

    def enable_chaining(self, lanes: set[int]) -> None:
        """Let plain tasks on these lanes be submitted ahead of their upstreams (module doc).

        A task qualifies when it is synchronous, not mapped, has no ``run_if``,
        ``timeout`` or ``run_on`` other than "success", and every dependency is an
        input computed by a synchronous task on the same lane (an ``async def``
        task runs on the scheduler loop, not on the lane's executor).
        """
        lane_of = self._lane_of or [0] * len(self.records)
        chainable = []
        for rec in self.records:
            pt = rec.pt
            o = pt.task.options
            lane = lane_of[pt.index]
            chainable.append(
                lane in lanes and bool(rec.dep_idx) and pt.map_source is None
                and not pt.task.is_async and o.run_if is None and o.timeout is None
                and o.run_on == "success"
                and set(rec.dep_idx) == {d for _, d in rec.up_idx}
                and all(lane_of[d] == lane and not self.records[d].pt.task.is_async
                        for d in rec.dep_idx)
            )
        self._chainable = chainable if any(chainable) else None

    @property
    def chain_candidates(self) -> bool:
        """True when :meth:`chain_ahead` has tasks to look at."""
        return bool(self._chain_candidates)

    def chain_ahead(self) -> list[Instruction]:
        """Queue the candidates whose upstreams are all handed over (cache lookups first)."""
        out: list[Instruction] = []
        candidates, self._chain_candidates = self._chain_candidates, []
        if self.cancelling:
            return out
        for t in dict.fromkeys(candidates):
            rec = self.records[t]
            if not self._can_chain_now(rec):
                continue
            key = self._task_key(rec) if rec.pt.task.options.cache else None
            rec.key = key
            if key is None or rec.pt.forced:
                self._queue_chained(rec)
            else:
                rec.chain_lookup = True
                out.append(LookupCache((t, None), key))
        return out

    def take(self, n: int, lane: int = 0) -> list[Execute]:
        """Up to ``n`` ready items of synchronous tasks of ``lane``, highest priority first."""
        return self._take(self._lanes[lane], n)

    def take_async(self) -> list[Execute]:
        """Every ready item of ``async def`` tasks (they run on the scheduler loop)."""
        return self._take(self._ready_async, len(self._ready_async))

    def finished(
        self,
        item: Item,
        attempt: int,
        ok: bool,
        value: Any,
        started: float,
        ended: float,
        where: str | None = None,
        output: Capture | None = None,
    ) -> list[Instruction]:
        """An item returned ``value`` (``ok``) or a :class:`Failed`; ``output`` is what it printed."""
        out: list[Instruction] = []
        t, b = item
        rec = self.records[t]
        if rec.chained == SUBMITTED and b is None:
            # Chained ahead, and done before its upstreams' outcomes arrived: keep it.
            if attempt == rec.attempt:
                rec.early = (ok, value, started, ended, where, output)
            return out
        if not self._is_current(rec, b, attempt, "running"):
            return out  # a late answer for a cancelled, timed-out or retried attempt
        rec.in_flight -= 1
        self._release_deferred(rec)
        if rec.started is None or started < rec.started:
            rec.started = started
        rec.where = where
        if output is not None:
            rec.output[b] = output
        if ok:
            key = self._item_key(rec, b)
            if key is not None:
                out.append(StoreResult(key, value))
            self._complete(rec, b, "succeeded", value, out, ended)
        else:
            self._failed_attempt(rec, b, attempt, value, out, ended)
        return out

    def cache_answer(self, item: Item, hit: bool, value: Any = None) -> list[Instruction]:
        """The answer to :class:`LookupCache`."""
        out: list[Instruction] = []
        t, b = item
        rec = self.records[t]
        if self.cancelling or self._item_over(rec, b):
            return out
        if rec.chain_lookup and b is None:
            # A lookup ahead of the upstreams: a miss sends the task ahead; a hit waits
            # for the upstreams as usual (and is looked up again then).
            rec.chain_lookup = False
            if not hit and self._can_chain_now(rec):
                self._queue_chained(rec)
            return out
        if hit:
            self._complete(rec, b, "cached", value, out, self.clock())
        else:
            self._make_ready(rec, b)
        return out

    def condition_answer(self, item: Item, result: bool | Failed) -> list[Instruction]:
        """The answer to :class:`CheckCondition`: run_if's bool, or its failure."""
        out: list[Instruction] = []
        t, b = item
        rec = self.records[t]
        if self.cancelling or self._item_over(rec, b):
            return out
        if isinstance(result, Failed):
            self._complete(rec, b, "failed", result, out, self.clock())
        elif result:
            self._lookup_or_ready(rec, b, out)
        else:
            reason = "run_if returned False"
            value = Skipped(rec.name, reason, b)
            if b is None:
                rec.skip_reason = reason
            self._complete(rec, b, "skipped", value, out, self.clock())
        return out

    def split_answer(self, source: int, items: list[Any] | Failed) -> list[Instruction]:
        """The answer to :class:`SplitResult`: the items, or why the result cannot be split."""
        out: list[Instruction] = []
        src = self.records[source]
        waiters, src.split_waiters = src.split_waiters, []
        if self.cancelling:
            return out
        if isinstance(items, Failed):
            for t in waiters:
                rec = self.records[t]
                if rec.state in TERMINAL:  # cancelled meanwhile
                    continue
                failure = Failed(rec.name, items.error, items.traceback, None, 1)
                self._set_state(rec, "failed", error=failure)
                rec.error = failure
                self._task_done(rec, out)
            return out
        src.items = items
        for t in waiters:
            if self.records[t].state not in TERMINAL:  # not cancelled meanwhile
                self._fan_out(self.records[t], len(items), out)
        return out

    def retry_due(self, item: Item, attempt: int) -> list[Instruction]:
        """A retry delay passed: the item is ready again (as ``attempt``)."""
        out: list[Instruction] = []
        t, b = item
        rec = self.records[t]
        if self.cancelling or not self._is_current(rec, b, attempt - 1, "retrying"):
            return out
        self._make_ready(rec, b)
        return out

    def timed_out(self, item: Item, attempt: int) -> list[Instruction]:
        """The item's attempt ran past its task's ``timeout=``."""
        out: list[Instruction] = []
        t, b = item
        rec = self.records[t]
        if not self._is_current(rec, b, attempt, "running"):
            return out
        rec.in_flight -= 1
        self._release_deferred(rec)
        out.append(CancelRunning([(item, attempt)]))
        label = rec.name if b is None else f"{rec.name}[{b}]"
        timeout = rec.pt.task.options.timeout or 0.0
        failure = Failed.from_exception(rec.name, TaskTimeoutError(label, timeout), b, attempt)
        self._failed_attempt(rec, b, attempt, failure, out, self.clock())
        return out

    def cancel_task(self, t: int) -> list[Instruction]:
        """Cancel one task (every branch of a mapped one); the rest of the run goes on.

        Its running items are cancelled; what depends on it is skipped like after a
        failure (``run_on="always"`` tasks get a :class:`Skipped`). A run with a
        cancelled task ends ``cancelled`` unless a task failed.
        """
        out: list[Instruction] = []
        rec = self.records[t]
        if self.status != "running" or rec.state in TERMINAL:
            return out
        now = self.clock()
        running: list[tuple[Item, int]] = []
        if rec.bstate is not None:
            rec.deferred.clear()
            self._unchain_below(rec, out)
            open_branches = [b for b, st in enumerate(rec.bstate) if st not in TERMINAL]
            for b in open_branches:
                if rec.bstate[b] == "running":
                    running.append(((t, b), rec.battempt.get(b, 1)))
                    rec.in_flight -= 1
            if running:
                out.append(CancelRunning(running))
            for b in open_branches:
                self._complete(rec, b, "cancelled", Skipped(rec.name, "cancelled", b), out, now)
            return out
        if rec.state == "running" or rec.chained == SUBMITTED:
            out.append(CancelRunning([((t, None), rec.attempt)]))
            if rec.chained:
                rec.attempt -= 1  # sent ahead, never started as far as the run is concerned
        self._unchain_below(rec, out)
        rec.chained = 0
        rec.early = None
        rec.in_flight = 0
        rec.skip_reason = "cancelled"
        rec.ended = now
        self._set_state(rec, "cancelled")
        self._task_done(rec, out)
        return out

    def cancel(self) -> list[Instruction]:
        """Stop the run: nothing new starts, running items are cancelled, the run ends."""
        out: list[Instruction] = []
        if self.status != "running":
            return out
        self.cancelling = True
        now = self.clock()
        running: list[tuple[Item, int]] = []
        for rec in self.records:
            if rec.state in TERMINAL:
                continue
            if rec.bstate is not None:
                for b, state in enumerate(rec.bstate):
                    if state in TERMINAL:
                        continue
                    if state == "running":
                        running.append(((rec.pt.index, b), rec.battempt.get(b, 1)))
                    rec.bstate[b] = "cancelled"
                    self._emit(rec, b, "cancelled", rec.battempt.get(b, 0))
            elif rec.state == "running" or rec.chained == SUBMITTED:
                running.append(((rec.pt.index, None), rec.attempt))
            rec.chained = 0
            rec.in_flight = 0
            rec.ended = now
            self._set_state(rec, "cancelled")
            self.unfinished -= 1
        for heap in self._lanes:
            heap.clear()
        self._ready_async.clear()
        if running:
            out.append(CancelRunning(running))
        self.status = "cancelled"
        self._emit_run("cancelled")
        out.append(RunFinished("cancelled"))
        return out

    # -- queries -------------------------------------------------------------------------

    def arguments(self, item: Item) -> dict[str, Any]:
        """The keyword arguments of an item: parameters and upstream results."""
        t, b = item
        rec = self.records[t]
        pt = rec.pt
        kwargs = dict(pt.params) if pt.params else {}
        for name, d in rec.up_idx:
            up = self.records[d]
            if d == pt.map_source and b is not None:
                kwargs[name] = up.result[b] if pt.elementwise else up.items[b]  # type: ignore[index]
            elif up.bstate is not None and up.state not in TERMINAL:  # chained onto its branches
                kwargs[name] = ResultsOf(
                    ResultOf(((d, i), up.battempt[i])) if s == "running" else up.result[i]
                    for i, s in enumerate(up.bstate))
            elif up.state in OK or up.bstate is not None:
                kwargs[name] = up.result
            elif up.state == "failed" and up.error is not None:
                kwargs[name] = up.error
            elif up.state == "running" or up.chained == SUBMITTED:  # chained (module doc)
                kwargs[name] = ResultOf(((d, None), up.attempt))
            else:
                kwargs[name] = Skipped(up.name, up.skip_reason or up.state)
        return kwargs

    def result(self, t: int) -> Any:
        """Task ``t``'s result (a mapped task's list of branch results); None before it ends."""
        rec = self.records[t]
        return rec.result if rec.state in OK else None

    def failures(self) -> list[Failed]:
        """Every failed task (each failed branch of a mapped task), in run order."""
        out: list[Failed] = []
        for rec in self.records:
            if rec.state != "failed":
                continue
            if rec.bstate is not None:
                out.extend(v for v in rec.result if isinstance(v, Failed))
            elif rec.error is not None:
                out.append(rec.error)
        return out

    def validate_state(self) -> None:
        """Check the invariants (for tests); raises AssertionError on a broken one."""
        unfinished = sum(1 for r in self.records if r.state not in TERMINAL)
        assert unfinished == self.unfinished, (unfinished, self.unfinished)
        for rec in self.records:
            assert rec.in_flight >= 0, rec.name
            if rec.state in TERMINAL and rec.bstate is not None:
                assert all(s in TERMINAL for s in rec.bstate), rec.name
            if rec.bstate is not None and rec.state not in TERMINAL:
                assert rec.done == sum(1 for s in rec.bstate if s in TERMINAL), rec.name
            if rec.chained:
                assert rec.state == "pending" and not rec.activated, rec.name
            if rec.state in TERMINAL and rec.state != "cancelled":
                for d in rec.dep_idx:
                    assert self.records[d].state in TERMINAL, (rec.name, self.records[d].name)

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _item_over(rec: TaskRecord, b: int | None) -> bool:
        """True when the item is final already (its task was cancelled meanwhile)."""
        if b is None or rec.bstate is None:
            return rec.state in TERMINAL
        return rec.bstate[b] in TERMINAL

    def _is_current(self, rec: TaskRecord, b: int | None, attempt: int, state: str) -> bool:
        if b is None:
            return rec.state == state and rec.attempt == attempt
        return (
            rec.bstate is not None
            and rec.bstate[b] == state
            and rec.battempt.get(b, 0) == attempt
        )

    def _try_activate(self, rec: TaskRecord, out: list[Instruction]) -> None:
        if rec.activated or rec.waiting > 0 or rec.state in TERMINAL:
            return
        pt = rec.pt
        src = self.records[pt.map_source] if pt.map_source is not None else None
        if pt.elementwise and src is not None and src.n is None:
            if src.state not in TERMINAL:
                return  # wait until the source knows its number of branches
            # The source ended without branching (skipped, failed to split, cancelled).
            self._skip(rec, f"nothing to map over: {src.name!r} is {src.state}", out)
            return
        rec.activated = True
        records = self.records
        run_on = pt.task.options.run_on
        if run_on == "success":
            for d in rec.dep_idx:
                dep = records[d]
                if dep.state not in OK:
                    self._skip(rec, f"upstream {dep.name!r} {ended_verb(dep.state)}", out)
                    return
        elif run_on == "failure" and not pt.elementwise and not any(
            records[d].state == "failed" for d in rec.dep_idx
        ):
            self._skip(rec, "no upstream failed (run_on='failure')", out)
            return
        if not rec.chained:  # a chained task got its key when it was sent ahead
            rec.key = self._task_key(rec) if pt.task.options.cache else None
        if src is None:
            self._consider(rec, None, out)
        elif pt.elementwise:
            self._fan_out(rec, src.n or 0, out)
        elif src.state not in OK:
            self._skip(rec, f"cannot map over {src.name!r}: it {ended_verb(src.state)}", out)
        elif src.items is not None:
            self._fan_out(rec, len(src.items), out)
        else:
            src.split_waiters.append(pt.index)
            if len(src.split_waiters) == 1:
                out.append(SplitResult(src.pt.index))

    def _task_key(self, rec: TaskRecord) -> str | None:
        task = rec.pt.task
        if not task.options.cache or rec.pt.params_key is None:
            return None
        ups: list[str] = []
        for d in (self.records[i] for i in rec.dep_idx):
            if d.key is None or not (d.state in OK or d.state == "running" or d.chained):
                return None
            ups.append(d.key)
        if rec.pt.elementwise:
            src = self.records[rec.pt.map_source]  # type: ignore[index]
            if src.key is None:
                return None
            ups.append(src.key)
        extra = ""
        if task.key_extra is not None:
            try:
                extra = task.key_extra()
            except Exception:  # an inspection problem must not stop the run; just don't cache
                logger.warning("cache key of task %r could not be computed", task.name, exc_info=True)
                return None
        return task_key(task.code_key, rec.pt.params_key, extra, ups)

    def _item_key(self, rec: TaskRecord, b: int | None) -> str | None:
        if rec.key is None:
            return None
        if b is None:
            return rec.key
        if rec.pt.elementwise:
            src = self.records[rec.pt.map_source]  # type: ignore[index]
            if src.bstate is None or src.bstate[b] not in OK:
                return None
            src_key = self._item_key(src, b)
            return None if src_key is None else hash_bytes(rec.key, src_key)
        return f"{rec.key}:{b}"

    def _fan_out(self, rec: TaskRecord, n: int, out: list[Instruction]) -> None:
        rec.n = n
        rec.bstate = ["pending"] * n
        rec.result = [None] * n
        if n == 0:
            rec.result = []
            self._set_state(rec, "succeeded")
            self._task_done(rec, out)
            return
        for child in rec.ew_children:
            self._try_activate(self.records[child], out)
        if rec.pt.elementwise:
            src = self.records[rec.pt.map_source]  # type: ignore[index]
            assert src.bstate is not None
            for b, state in enumerate(src.bstate):
                if state in TERMINAL:
                    self._consider(rec, b, out)
        else:
            for b in range(n):
                self._consider(rec, b, out)

    def _consider(self, rec: TaskRecord, b: int | None, out: list[Instruction]) -> None:
        """The item's inputs are final: apply per-branch trigger rules, run_if, cache."""
        if rec.state in TERMINAL:
            return
        pt = rec.pt
        if pt.elementwise and b is not None:
            src = self.records[pt.map_source]  # type: ignore[index]
            s = src.bstate[b]  # type: ignore[index]
            run_on = pt.task.options.run_on
            if run_on == "success" and s not in OK:
                value = Skipped(rec.name, f"upstream {src.name}[{b}] {ended_verb(s)}", b)
                self._complete(rec, b, "skipped", value, out, self.clock())
                return
            if run_on == "failure" and s != "failed" and not any(
                self.records[d].state == "failed" for d in rec.dep_idx
            ):
                value = Skipped(rec.name, "no upstream failed (run_on='failure')", b)
                self._complete(rec, b, "skipped", value, out, self.clock())
                return
        if pt.task.options.run_if is not None:
            out.append(CheckCondition((pt.index, b), self.arguments((pt.index, b))))
            return
        self._lookup_or_ready(rec, b, out)

    def _lookup_or_ready(self, rec: TaskRecord, b: int | None, out: list[Instruction]) -> None:
        if rec.chained:
            self._activate_chained(rec, out)
            return
        key = None if rec.pt.forced else self._item_key(rec, b)
        if key is not None:
            out.append(LookupCache((rec.pt.index, b), key))
        else:  # not cached, or forced: it runs, and its result replaces what the cache holds
            self._make_ready(rec, b)

    def _make_ready(self, rec: TaskRecord, b: int | None) -> None:
        pt = rec.pt
        if b is None:
            self._set_state(rec, "ready")
        else:
            rec.bstate[b] = "ready"  # type: ignore[index]
            self._emit(rec, b, "ready", rec.battempt.get(b, 0))
            if rec.state == "pending":
                self._set_state(rec, "ready")
        self._seq += 1
        heap = self._ready_async if pt.task.is_async else self._heap_of(pt.index)
        heapq.heappush(heap, (-pt.task.options.priority, self._seq, pt.index, b))

    def _heap_of(self, t: int) -> list[tuple[int, int, int, int | None]]:
        return self._ready if self._lane_of is None else self._lanes[self._lane_of[t]]

    def _take(self, heap: list[tuple[int, int, int, int | None]], n: int) -> list[Execute]:
        out: list[Execute] = []
        if not heap:  # the common case for the async heap, asked after every batch
            return out
        records = self.records
        now = self.clock()
        while heap and len(out) < n:
            _, _, t, b = heapq.heappop(heap)
            rec = records[t]
            if b is None and rec.state != "ready":
                if rec.chained == QUEUED:
                    out.append(self._submit_chained(rec))
                continue  # else stale: a task unchained or cancelled after it was queued
            if b is not None and rec.bstate[b] != "ready":  # type: ignore[index]
                continue  # stale: its task was cancelled
            limit = rec.pt.task.options.max_parallel
            if limit is not None and rec.in_flight >= limit:
                if b is None:  # a task that is not mapped has one item: it cannot be over
                    raise AssertionError("max_parallel reached by a task that is not mapped")
                rec.deferred.append(b)
                continue
            rec.in_flight += 1
            if rec.started is None:
                rec.started = now
            if b is None:
                rec.attempt += 1
                attempt = rec.attempt
                self._set_state(rec, "running")
                if self._chainable is not None:
                    self._chain_candidates += rec.pt.children
            else:
                attempt = rec.battempt.get(b, 0) + 1
                rec.battempt[b] = attempt
                rec.bstate[b] = "running"  # type: ignore[index]
                self._emit(rec, b, "running", attempt)
                if self._chainable is not None and rec.in_flight + rec.done == rec.n:
                    self._chain_candidates += rec.pt.children  # its last branch went out
                if rec.state != "running":
                    self._set_state(rec, "running")
            out.append(Execute((t, b), attempt, self.arguments((t, b))))
        return out

    # -- chaining (see the module doc) -------------------------------------------------------

    def _can_chain_now(self, rec: TaskRecord) -> bool:
        """Static eligibility, and every upstream is handed over or done (one not done)."""
        if (self._chainable is None or not self._chainable[rec.pt.index] or rec.activated
                or rec.chained or rec.state != "pending"):
            return False
        in_flight = False
        for d in rec.dep_idx:
            dep = self.records[d]
            if dep.chained == SUBMITTED or (dep.state == "running" and (
                    not dep.pt.mapped or self._branches_handed_over(dep))):
                in_flight = True
            elif dep.state not in OK:
                return False
        return in_flight

    @staticmethod
    def _branches_handed_over(rec: TaskRecord) -> bool:
        """Every branch of a mapped task runs or succeeded (none waits, failed or skipped)."""
        c = rec.counts
        return (rec.n is not None and rec.in_flight + rec.done == rec.n
                and c.get("succeeded", 0) + c.get("cached", 0) == rec.done)

    def _queue_chained(self, rec: TaskRecord) -> None:
        rec.chained = QUEUED
        self._seq += 1
        heapq.heappush(self._heap_of(rec.pt.index),
                       (-rec.pt.task.options.priority, self._seq, rec.pt.index, None))

    def _submit_chained(self, rec: TaskRecord) -> Execute:
        """Hand a queued chained task over; its state stays pending (see ``finished``)."""
        rec.chained = SUBMITTED
        rec.in_flight += 1
        rec.attempt += 1
        self._chain_candidates += rec.pt.children
        return Execute((rec.pt.index, None), rec.attempt, self.arguments((rec.pt.index, None)))

    def _activate_chained(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """The upstreams of a chained task finished well: it is ready, or already running."""
        if rec.chained == QUEUED:  # its heap entry is still there: now an ordinary ready one
            rec.chained = 0
            self._set_state(rec, "ready")
            return
        rec.chained = 0
        rec.started = self.clock()
        self._set_state(rec, "running")
        early, rec.early = rec.early, None
        if early is not None:
            out.extend(self.finished((rec.pt.index, None), rec.attempt, *early))

    def _unchain_below(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """An attempt of ``rec`` failed: cancel the tasks chained ahead onto its result."""
        for child in rec.pt.children:
            crec = self.records[child]
            if not crec.chained:
                continue
            if crec.chained == SUBMITTED:
                out.append(CancelRunning([((child, None), crec.attempt)]))
                crec.attempt -= 1  # it never ran as far as the run is concerned
                crec.in_flight -= 1
                crec.early = None
            crec.chained = 0
            self._unchain_below(crec, out)

    def _release_deferred(self, rec: TaskRecord) -> None:
        if rec.deferred:
            b = rec.deferred.popleft()
            self._seq += 1
            heap = self._ready_async if rec.pt.task.is_async else self._heap_of(rec.pt.index)
            heapq.heappush(heap, (-rec.pt.task.options.priority, self._seq, rec.pt.index, b))

    def _failed_attempt(
        self, rec: TaskRecord, b: int | None, attempt: int, failure: Any, out: list[Instruction],
        now: float,
    ) -> None:
        if not isinstance(failure, Failed):
            failure = Failed.from_exception(rec.name, RuntimeError(repr(failure)), b, attempt)
        if self._chainable is not None:
            self._unchain_below(rec, out)
        options = rec.pt.task.options
        if attempt <= options.retries and not self.cancelling:
            if b is None:
                self._set_state(rec, "retrying", error=failure)
            else:
                rec.bstate[b] = "retrying"  # type: ignore[index]
                self._emit(rec, b, "retrying", attempt, error=failure)
            out.append(RetryLater((rec.pt.index, b), attempt + 1, options.retry_delay))
            return
        self._complete(rec, b, "failed", failure, out, now)

    def _complete(
        self, rec: TaskRecord, b: int | None, state: str, value: Any, out: list[Instruction],
        now: float,
    ) -> None:
        if b is None:
            if state == "failed":
                rec.error = value
            elif state != "skipped":
                rec.result = value
            rec.ended = now
            self._set_state(rec, state, error=value if state == "failed" else None)
            self._task_done(rec, out)
            return
        assert rec.bstate is not None
        if rec.bstate[b] in TERMINAL:
            return
        rec.bstate[b] = state
        rec.result[b] = value
        rec.done += 1
        rec.counts[state] = rec.counts.get(state, 0) + 1
        if state == "failed" and rec.error is None:
            rec.error = value
        if rec.ended is None or now > rec.ended:
            rec.ended = now
        self._emit(rec, b, state, rec.battempt.get(b, 0), error=value if state == "failed" else None)
        if rec.done != rec.n:
            self._update_view(rec)
        for child in rec.ew_children:
            crec = self.records[child]
            if crec.activated and crec.bstate is not None:
                self._consider(crec, b, out)
        if rec.done == rec.n:
            self._set_state(rec, self._aggregate(rec))
            self._task_done(rec, out)

    @staticmethod
    def _aggregate(rec: TaskRecord) -> str:
        return aggregate(rec.counts, rec.n or 0)

    def _skip(self, rec: TaskRecord, reason: str, out: list[Instruction]) -> None:
        rec.activated = True
        rec.skip_reason = reason
        rec.ended = self.clock()
        self._set_state(rec, "skipped")
        self._task_done(rec, out)

    def _task_done(self, rec: TaskRecord, out: list[Instruction]) -> None:
        self.unfinished -= 1
        index = rec.pt.index
        for child in rec.pt.children:
            crec = self.records[child]
            if crec.pt.elementwise and crec.pt.map_source == index:
                self._try_activate(crec, out)
            else:
                crec.waiting -= 1
                if crec.waiting == 0:
                    self._try_activate(crec, out)
        if self.unfinished == 0 and self.status == "running":
            self._finish(out)

    def _finish(self, out: list[Instruction]) -> list[Instruction]:
        self.status = run_status({r.state for r in self.records})
        self._emit_run(self.status)
        out.append(RunFinished(self.status))
        return out

    def _set_state(self, rec: TaskRecord, state: str, error: Failed | None = None) -> None:
        rec.state = state
        view = self._update_view(rec)
        if self.bus.active:
            self.bus.emit(TaskEvent(
                self.run_id, rec.name, None, state, rec.attempts, self.clock(),  # type: ignore[arg-type]
                error, rec.where, rec.n, view,
            ))

    def _update_view(self, rec: TaskRecord) -> TaskView:
        pt = rec.pt
        view = TaskView(
            rec.name, rec.state, rec.attempts, rec.started, rec.ended, rec.where,  # type: ignore[arg-type]
            pt.mapped, rec.n, rec.done, MappingProxyType(dict(rec.counts)) if rec.counts
            else self.views[pt.index].counts, rec.error, rec.skip_reason,
            MappingProxyType(dict(rec.output)) if rec.output else self.views[pt.index].output,
            pt.forced, rec.key,
        )
        self.views[pt.index] = view
        return view

    def _emit(
        self, rec: TaskRecord, b: int, state: str, attempt: int, error: Failed | None = None
    ) -> None:
        if self.bus.branches:
            self.bus.emit(TaskEvent(
                self.run_id, rec.name, b, state, attempt, self.clock(), error, rec.where,  # type: ignore[arg-type]
            ))

    def _emit_run(self, status: str) -> None:
        if self.bus.active:
            self.bus.emit(RunEvent(self.run_id, self.plan.flow, status, self.clock()))  # type: ignore[arg-type]

