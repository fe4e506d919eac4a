"""The scheduler's decisions as a state machine with no I/O.

:meth:`Transitions.handle` is the only way in: it takes a stimulus
(``messages.py``: the run starts, an item finished, the cache answered, a
retry is due, cancel, ...) and returns the instructions that follow (look up
the cache, evaluate ``run_if``, split a result for mapping, store a result,
retry later, cancel running items, run these items, the run ended). The
asyncio driver in ``scheduler.py`` carries them out. The machine never calls
user code: ``run_if``, splitting and cache-key parts are answered from outside.

Each task is a :class:`~nbflow.records.TaskRecord` with one item per branch (a
task that is not mapped has one). A stimulus about an item is looked up in
:data:`ITEM_TABLE` by the item's phase; one about a phase that is not in the
table is late (for an attempt that was cancelled, timed out or retried) and
is dropped. That, and the attempt number, is the whole defence against races.

A mapped task's branch i of an element-wise map (mapping over a mapped task)
starts as soon as branch i of its source finished: no barrier. Executors
that chain (dask) get tasks ahead of their upstreams: see ``chaining.py``,
which the machine consults at named hooks (``handed_over``, ``unchain_below``,
``upstreams_done`` and :class:`~nbflow.messages.ChainAhead`).

The machine is one class made of mixins, one concern each: the records and what
they publish (``records.py``), streams (``streams.py``), chaining ahead
(``chain_transitions.py``) and cancelling (``cancel_transitions.py``); the paths
every item takes, and the tables that route stimuli, are here.

Every change is published (``records.py``): an event with the task's frozen
:class:`~nbflow.views.TaskView`, which is what the rest of nbflow reads, and
an entry in its story (``run.story(name)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import chaining, inputs
from .cancel_transitions import CancelTransitions
from .chain_transitions import ChainTransitions
from .errors import TaskTimeoutError
from .events import EventBus
from .messages import (
    CacheAnswer, Cancel, CancelRunning, CancelTask, ChainAhead, CheckCondition, ConditionAnswer,
    Execute, Finished, Instruction, Item, LookupCache, RetryDue, RetryLater, RunFinished,
    SplitAnswer, SplitResult, Start, Stimulus, StoreResult, StreamEnded, Take, TimedOut, Yielded
)
from .plan import Plan
from .ready import ReadyQueues
from .records import (
    CHECKING, LOOKING, LOOKING_AHEAD, QUEUED_AHEAD, SENT_AHEAD, STORY_BRANCH_LIMIT, ItemRecord,
    RunRecords, TaskRecord
)
from .states import FINAL, OK, TaskState, ended_verb, mapped_state, run_status
from .streams import StreamTransitions, branch_count, new_items, note_consumed, source_phase
from .values import Failed, Skipped

# -- the machine at a glance ----------------------------------------------------------------

#: (phase of the item a stimulus is about, stimulus) -> handler
ITEM_TABLE: dict[tuple[str, type], str] = {
    (CHECKING, ConditionAnswer): "_condition_answered",
    (LOOKING, CacheAnswer): "_cache_answered",
    (LOOKING_AHEAD, CacheAnswer): "_cache_answered_ahead",
    ("running", Finished): "_finished",
    (SENT_AHEAD, Finished): "_finished_ahead",
    ("running", TimedOut): "_timed_out",
    ("retrying", RetryDue): "_retry_due",
}

#: stimuli about the run or a whole task -> handler
RUN_TABLE: dict[type, str] = {
    Start: "_start",
    Take: "_take",
    ChainAhead: "_chain_ahead",
    SplitAnswer: "_split_answered",
    CancelTask: "_cancel_task",
    Cancel: "_cancel",
    Yielded: "_yielded",
    StreamEnded: "_stream_ended",
}

#: the phases in which an item's stimulus must match its current attempt
_ATTEMPT_OF: dict[type, int] = {Finished: 0, TimedOut: 0, RetryDue: -1}


class Transitions(RunRecords, StreamTransitions, ChainTransitions, CancelTransitions):
    """Decisions of one run. Only :meth:`handle` changes its state."""

    def __init__(
        self,
        plan: Plan,
        run_id: str,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(plan, run_id, bus, clock)
        self.cancelling = False
        #: items waiting for an executor slot
        self.ready = ReadyQueues()
        #: the chaining planner, for runs on an executor that chains (see enable_chaining)
        self.chain: chaining.ChainPlanner | None = None
        self._run_handlers: dict[type, Callable[..., None]] = {
            kind: getattr(self, name) for kind, name in RUN_TABLE.items()}
        #: (phase, stimulus) -> (handler, the attempt the stimulus must name, relative to
        #: the item's, or None when it names none)
        self._item_handlers: dict[tuple[str, type], tuple[Callable[..., None], int | None]] = {
            key: (getattr(self, name), _ATTEMPT_OF.get(key[1])) for key, name in ITEM_TABLE.items()}

    # -- the one entry point ---------------------------------------------------------------

    def handle(self, stimulus: Stimulus) -> list[Any]:
        """Apply ``stimulus``; return the instructions that follow from it.

        For :class:`~nbflow.messages.Take` the instructions are the
        :class:`~nbflow.messages.Execute` s of the items handed out.
        """
        kind = type(stimulus)
        self._cause = kind.__name__
        self.now = self.clock()
        out: list[Any] = []
        self._changes += 1  # odd: records are changing (see RunRecords)
        try:
            handler = self._run_handlers.get(kind)
            if handler is not None:
                handler(stimulus, out)
                return out
            if kind is Finished:  # the most frequent one: its id is (item, attempt)
                (t, b), attempt = stimulus.id  # type: ignore[union-attr]
            else:
                t, b = stimulus.item  # type: ignore[union-attr]
                attempt = getattr(stimulus, "attempt", 0)
            rec = self.records[t]
            if rec.items is None:
                return out
            item = rec.items[b or 0]
            entry = self._item_handlers.get((item.phase, kind))
            if entry is None:
                return out  # late: the item moved on (cancelled, timed out, retried, answered)
            item_handler, shift = entry
            if shift is not None and item.attempt != attempt + shift:
                return out  # an answer for an earlier attempt
            item_handler(rec, b or 0, stimulus, out)
            return out
        finally:
            self._changes += 1

    def set_lanes(self, lanes: list[int]) -> None:
        """Give each task (by index) an executor lane; :class:`Take` then serves one lane."""
        self.ready.set_lanes(lanes)

    def enable_chaining(self, lanes: set[int]) -> None:
        """Let plain tasks on these lanes be sent ahead of their upstreams (``chaining.py``)."""
        planner = chaining.ChainPlanner(self.records, lanes, self.ready.lane_of)
        self.chain = planner if planner.any else None

    @property
    def chain_candidates(self) -> bool:
        """True when a :class:`ChainAhead` has tasks to look at."""
        return self.chain is not None and self.chain.has_candidates

    # -- queries -------------------------------------------------------------------------------

    def arguments(self, item: Item) -> dict[str, Any]:
        """The keyword arguments of an item: parameters and upstream results."""
        return inputs.arguments(self.records, *item)

    # -- run-level handlers ----------------------------------------------------------------------

    def _start(self, _: Start, out: list[Instruction]) -> None:
        self.status = "running"
        self._emit_run("running")
        if not self.records:
            self._finish(out)
            return
        for rec in self.records:
            if rec.waiting == 0:
                self._try_activate(rec, out)

    def _take(self, take: Take, out: list[Execute]) -> None:
        ready = self.ready
        lane, asynchronous = take.lane, take.asynchronous
        if take.n <= 0 and not asynchronous:
            return
        entry = ready.pop(lane, asynchronous)
        if entry is None:
            return
        n = take.n if not asynchronous else ready.size(lane, True) + 1
        records = self.records
        now = self.now
        while entry is not None:
            t, i = entry
            rec = records[t]
            item = rec.items[i]  # type: ignore[index]
            if item.phase == QUEUED_AHEAD:
                out.append(self._send_ahead(rec, i))
            elif item.phase != "ready":
                pass  # stale: unchained or cancelled after it was queued
            elif (limit := rec.pt.task.options.max_parallel) is not None and rec.in_flight >= limit:
                rec.deferred.append(i)
            else:
                self._hand_out(rec, i, item, now, out)
            entry = ready.pop(lane, asynchronous) if len(out) < n else None

    def _hand_out(self, rec: TaskRecord, i: int, item: ItemRecord, now: float,
                  out: list[Execute]) -> None:
        rec.in_flight += 1
        if rec.started is None:
            rec.started = now
        item.attempt += 1
        if item.attempt > rec.attempts:
            rec.attempts = item.attempt
        self._move(rec, i, "running")
        if self.chain is not None:
            self.chain.handed_over(rec, i)
        t = rec.pt.index
        b = i if rec.mapped else None
        out.append(Execute((t, b), item.attempt, inputs.arguments(self.records, t, b)))

    def _split_answered(self, answer: SplitAnswer, out: list[Instruction]) -> None:
        src = self.records[answer.source]
        waiters, src.split_waiters = src.split_waiters, []
        if self.cancelling:
            return
        if isinstance(answer.items, Failed):
            for t in waiters:
                rec = self.records[t]
                if rec.state not in FINAL:  # not cancelled meanwhile
                    rec.error = Failed(rec.name, answer.items.error, answer.items.traceback)
                    self._end_task(rec, "failed", out)
            return
        src.parts = answer.items
        for t in waiters:
            if self.records[t].state not in FINAL:  # not cancelled meanwhile
                self._fan_out(self.records[t], len(answer.items), out)

    # -- item handlers (ITEM_TABLE) --------------------------------------------------------------

    def _condition_answered(self, rec: TaskRecord, i: int, answer: ConditionAnswer,
                            out: list[Instruction]) -> None:
        if self.cancelling:
            return
        if isinstance(answer.result, Failed):
            self._end_item(rec, i, "failed", answer.result, out, self.now)
        elif answer.result:
            self._lookup_or_ready(rec, i, out)
        else:
            reason = "run_if returned False"
            if not rec.mapped:
                rec.skip_reason = reason
            self._end_item(rec, i, "skipped", Skipped(rec.name, reason, rec.branch(i)), out,
                           self.now)

    def _cache_answered(self, rec: TaskRecord, i: int, answer: CacheAnswer,
                        out: list[Instruction]) -> None:
        if self.cancelling:
            return
        if answer.hit:
            self._end_item(rec, i, "cached", answer.value, out, self.now)
        else:
            self._make_ready(rec, i)

    def _finished(self, rec: TaskRecord, i: int, f: Finished, out: list[Instruction]) -> None:
        rec.in_flight -= 1
        if rec.deferred:
            self._release_deferred(rec)
        if rec.started is None or f.started < rec.started:
            rec.started = f.started
        rec.where = f.where
        if f.output is not None:
            rec.output[rec.branch(i)] = f.output
        if f.ok:
            key = inputs.key_of_item(self.records, rec, i) if rec.mapped else rec.key
            if key is not None:
                out.append(StoreResult(key, f.value))
            self._end_item(rec, i, "succeeded", f.value, out, f.ended)
        else:
            self._failed_attempt(rec, i, f.value, out, f.ended)

    def _timed_out(self, rec: TaskRecord, i: int, stimulus: TimedOut,
                   out: list[Instruction]) -> None:
        rec.in_flight -= 1
        self._release_deferred(rec)
        out.append(CancelRunning([(stimulus.item, stimulus.attempt)]))
        b = rec.branch(i)
        label = rec.name if b is None else f"{rec.name}[{b}]"
        error = TaskTimeoutError(label, rec.pt.task.options.timeout or 0.0)
        failure = Failed.from_exception(rec.name, error, b, stimulus.attempt)
        self._failed_attempt(rec, i, failure, out, self.now)

    def _retry_due(self, rec: TaskRecord, i: int, _: RetryDue, out: list[Instruction]) -> None:
        if not self.cancelling:
            self._make_ready(rec, i)

    # -- the paths an item takes ---------------------------------------------------------------

    def _try_activate(self, rec: TaskRecord, out: list[Instruction]) -> None:
        """The dependencies are final: apply the trigger rules, then start the items."""
        if rec.activated or rec.waiting > 0 or rec.state in FINAL:
            return
        pt = rec.pt
        src = self.records[pt.map_source] if pt.map_source is not None else None
        if pt.elementwise and src is not None and src.items is None:
            if src.state in FINAL:  # it ended without branching (skipped, cancelled, ...)
                self._skip(rec, f"nothing to map over: {src.name!r} is {src.state}", out)
            return  # else wait until the source knows its number of branches
        rec.activated = True
        run_on = pt.task.options.run_on
        if run_on == "success":
            for d in rec.dep_idx:
                dep = self.records[d]
                if dep.state not in OK:
                    self._skip(rec, f"upstream {dep.name!r} {ended_verb(dep.state)}", out)
                    return
        elif run_on == "failure" and not pt.elementwise and not self._an_upstream_failed(rec):
            self._skip(rec, "no upstream failed (run_on='failure')", out)
            return
        if self.chain is None or not chaining.sent_ahead(rec):
            rec.key = inputs.key_of_task(self.records, rec)  # a task sent ahead got its key then
        if pt.stream:
            self._start_stream(rec, out)
        elif src is None:
            self._consider(rec, 0, out)
        elif pt.elementwise:
            self._fan_out(rec, branch_count(rec, src.n or 0), out)
        elif src.state not in OK:
            self._skip(rec, f"cannot map over {src.name!r}: it {ended_verb(src.state)}", out)
        elif src.parts is not None:
            self._fan_out(rec, len(src.parts), out)
        else:
            src.split_waiters.append(pt.index)
            if len(src.split_waiters) == 1:
                consumers = tuple(c for c in src.pt.children
                                  if self.records[c].pt.map_source == src.pt.index)
                out.append(SplitResult(src.pt.index, src.result, consumers))

    def _fan_out(self, rec: TaskRecord, n: int, out: list[Instruction]) -> None:
        rec.items = new_items(rec, n)
        if n == 0 and not self._source_open(rec):
            self._end_task(rec, "succeeded", out)
            return
        for child in rec.ew_children:
            self._try_activate(self.records[child], out)
        if rec.pt.elementwise:
            src = self.records[rec.pt.map_source]  # type: ignore[index]
            for i, item in enumerate(src.items or ()):
                if item.phase in FINAL:
                    self._follow(rec, i, out)
        else:
            for i in range(n):
                self._consider(rec, i, out)

    def _consider(self, rec: TaskRecord, i: int, out: list[Instruction]) -> None:
        """The item's inputs are final: per-branch trigger rules, then run_if, the cache."""
        if rec.state in FINAL:
            return
        pt = rec.pt
        if pt.elementwise:
            src = self.records[pt.map_source]  # type: ignore[index]
            s = source_phase(self.records, rec, i)
            run_on = pt.task.options.run_on
            reason = ""
            if run_on == "success" and s not in OK:
                reason = f"upstream {src.name}[{i}] {ended_verb(s)}"
            elif run_on == "failure" and s != "failed" and not self._an_upstream_failed(rec):
                reason = "no upstream failed (run_on='failure')"
            if reason:
                self._end_item(rec, i, "skipped", Skipped(rec.name, reason, i), out, self.now)
                return
        if pt.task.options.run_if is not None:
            self._move(rec, i, CHECKING)
            item = (pt.index, rec.branch(i))
            out.append(CheckCondition(item, self.arguments(item)))
            return
        self._lookup_or_ready(rec, i, out)

    def _lookup_or_ready(self, rec: TaskRecord, i: int, out: list[Instruction]) -> None:
        if self.chain is not None and (rec.items[i].phase in chaining.AHEAD  # type: ignore[index]
                                       if rec.mapped else chaining.sent_ahead(rec)):
            self._upstreams_done(rec, i, out)  # it was sent ahead: now ready, or already running
            return
        key = (None if rec.pt.forced else
               inputs.key_of_item(self.records, rec, i) if rec.mapped else rec.key)
        if key is not None:
            self._move(rec, i, LOOKING)
            out.append(LookupCache((rec.pt.index, rec.branch(i)), key))
        else:  # not cached, or forced: it runs, and its result replaces what the cache holds
            self._make_ready(rec, i)

    def _make_ready(self, rec: TaskRecord, i: int) -> None:
        if rec.mapped:
            self._move(rec, i, "ready")
        else:  # the same, one call shorter on the path every plain task takes
            rec.items[0].phase = "ready"  # type: ignore[index]
            self._set_state(rec, "ready")
        task = rec.pt.task
        self.ready.push(rec.pt.index, i, task.options.priority, task.is_async)

    def _push(self, rec: TaskRecord, i: int) -> None:
        task = rec.pt.task
        self.ready.push(rec.pt.index, i, task.options.priority, task.is_async)

    def _release_deferred(self, rec: TaskRecord) -> None:
        if rec.deferred:  # max_parallel held a branch back: it may go now
            self._push(rec, rec.deferred.popleft())

    def _failed_attempt(self, rec: TaskRecord, i: int, failure: Any, out: list[Instruction],
                        now: float) -> None:
        item = rec.items[i]  # type: ignore[index]
        b = rec.branch(i)
        if not isinstance(failure, Failed):
            failure = Failed.from_exception(rec.name, RuntimeError(repr(failure)), b, item.attempt)
        if self.chain is not None:
            self._unchain_below(rec, out, b)
        options = rec.pt.task.options
        if item.attempt <= options.retries and not self.cancelling:
            self._move(rec, i, "retrying", failure)
            out.append(RetryLater((rec.pt.index, b), item.attempt + 1, options.retry_delay))
            return
        self._end_item(rec, i, "failed", failure, out, now)

    def _end_item(self, rec: TaskRecord, i: int, state: TaskState, value: Any,
                  out: list[Instruction], now: float) -> None:
        """Item ``i`` ended in ``state`` with ``value``; the task ends with its last item."""
        items = rec.items
        assert items is not None
        item = items[i]
        item.value = value
        item.phase = state
        rec.done += 1
        rec.counts[state] = rec.counts.get(state, 0) + 1
        if state == "failed" and rec.error is None:
            rec.error = value
        if rec.ended is None or now > rec.ended:
            rec.ended = now
        if not rec.mapped:
            self._end_task(rec, state, out)
            return
        if len(rec.story) < STORY_BRANCH_LIMIT:
            rec.story.append((self.now, i, state, self._cause))
        self._emit_branch(rec, i, state, item.attempt, value)
        note_consumed(self.records, rec)
        self._released_more(rec)
        last = rec.done == len(items) and not self._source_open(rec)
        if not last:
            rec.dirty = True  # no task event now: its view is built when someone asks
        for child in rec.ew_children:
            crec = self.records[child]
            if crec.activated and crec.items is not None:
                self._follow(crec, i, out)
        if last:
            state = mapped_state(rec.counts, rec.done)
            if state == "skipped":
                rec.skip_reason = _skipped_branches(rec)
            self._end_task(rec, state, out)

    def _end_task(self, rec: TaskRecord, state: TaskState, out: list[Instruction]) -> None:
        """The task is final: tell the tasks that wait for it, maybe end the run."""
        if rec.ended is None:
            rec.ended = self.now
        for item in rec.items or ():
            if item.phase not in FINAL:
                item.phase = state
        if rec.mapped:
            rec.values = None if rec.releasing else rec.result
        self._set_state(rec, state, rec.error if state == "failed" else None)
        self.unfinished -= 1
        index = rec.pt.index
        for child in rec.pt.children:
            crec = self.records[child]
            if crec.pt.elementwise and crec.pt.map_source == index:
                self._try_activate(crec, out)
                self._source_closed(crec, out)
            else:
                crec.waiting -= 1
                if crec.waiting == 0:
                    self._try_activate(crec, out)
        if self.unfinished == 0 and self.status == "running":
            self._finish(out)

    def _skip(self, rec: TaskRecord, reason: str, out: list[Instruction]) -> None:
        rec.activated = True
        rec.skip_reason = reason
        rec.ended = self.now
        self._end_task(rec, "skipped", out)

    def _finish(self, out: list[Instruction]) -> None:
        self.status = run_status({r.state for r in self.records})
        self._emit_run(self.status)
        out.append(RunFinished(self.status))

    # -- keys ------------------------------------------------------------------------------------

    def _an_upstream_failed(self, rec: TaskRecord) -> bool:
        return any(self.records[d].state == "failed" for d in rec.dep_idx)


def _skipped_branches(rec: TaskRecord) -> str:
    """Why a mapped task is skipped: how many branches were, and why the first one was."""
    skipped = [it.value for it in rec.items or () if isinstance(it.value, Skipped)]
    n = rec.n or 0
    if not skipped:
        return f"{rec.counts.get('skipped', 0)} of {n} branches skipped"
    first = skipped[0]
    where = first.task if first.branch is None else f"{first.task}[{first.branch}]"
    return f"{len(skipped)} of {n} branches skipped ({where}: {first.reason})"
