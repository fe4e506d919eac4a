"""The state machine's own records of a run's tasks. Private to ``transitions.py``
and ``chaining.py``: everything else reads :class:`~nbflow.views.TaskView`.

Every task has the same shape: a :class:`TaskRecord` with a list of
:class:`ItemRecord` s, one per branch. A task that is not mapped has exactly
one item (branch ``None`` to the outside world, index 0 inside); a mapped task
gets its items once its number of branches is known.

An item moves through *phases*. Most are the public states of ``states.py``;
the others are finer steps of ``pending`` that the machine tells apart so that
its transition table can drop a late answer by looking at the phase alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .capture import Capture
from .commands import CommandResult
from .errors import CommandFailed
from .events import EventBus, RunEvent, TaskEvent
from .jobdir import JobDir, kept
from .messages import Finished
from .plan import Plan, PlannedTask
from .states import FINAL, OK, RunStatus, TaskState
from .values import Failed
from .views import StoryEntry, TaskView

if TYPE_CHECKING:
    from .branch_window import BranchWindow

#: the inputs are not all final yet
WAITING = "waiting"
#: ``run_if`` was asked (:class:`~nbflow.messages.CheckCondition`)
CHECKING = "checking"
#: the cache was asked (:class:`~nbflow.messages.LookupCache`)
LOOKING = "looking"
#: chaining: the cache was asked before the upstreams finished
LOOKING_AHEAD = "looking-ahead"
#: chaining: in a ready heap before the upstreams finished
QUEUED_AHEAD = "queued-ahead"
#: chaining: handed to the executor before the upstreams finished
SENT_AHEAD = "sent-ahead"

#: the public state of each phase that is not a state itself
PUBLIC: dict[str, TaskState] = {
    WAITING: "pending", CHECKING: "pending", LOOKING: "pending", LOOKING_AHEAD: "pending",
    QUEUED_AHEAD: "pending", SENT_AHEAD: "pending",
}

#: how many branch entries a mapped task's story keeps (task-level entries are all kept)
STORY_BRANCH_LIMIT = 200


class ItemRecord:
    """One branch of a task (the only one of a task that is not mapped)."""

    __slots__ = ("phase", "attempt", "value")

    def __init__(self) -> None:
        #: a phase: a task state, or one of the pending steps above
        self.phase = WAITING
        #: the current (or last) attempt; 0 before the first
        self.attempt = 0
        #: the result, a :class:`Failed`, or a :class:`Skipped` once final
        self.value: Any = None


class TaskRecord:
    """What the run knows about one task."""

    __slots__ = (
        "pt", "name", "mapped", "state", "items", "waiting", "activated", "key", "error",
        "started", "ended", "where", "done", "counts", "in_flight", "deferred", "parts",
        "split_waiters", "skip_reason", "ew_children", "dep_idx", "up_idx", "output", "story",
        "attempts", "values", "dirty", "early", "stream_open", "consumed", "releasing",
        "watched", "delivered", "private",
    )

    def __init__(self, pt: PlannedTask) -> None:
        #: the planned task
        self.pt = pt
        self.name = pt.task.name
        #: it has branches: it is mapped, or it streams (one branch per item)
        self.mapped = pt.branches
        #: the task's public state (for a mapped task, the aggregate of its branches)
        self.state: TaskState = "pending"
        #: one per branch; None until a mapped task knows its number of branches
        self.items: list[ItemRecord] | BranchWindow | None = (
            None if self.mapped else [ItemRecord()])
        #: dependencies not yet final (not counting an element-wise map source)
        self.waiting = 0
        #: set once dependencies allowed it to run (branches may follow)
        self.activated = False
        #: cache key of this task's inputs (None: not cached)
        self.key: str | None = None
        #: the first failure
        self.error: Failed | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.where: str | None = None
        #: items in a final state, and how many of each
        self.done = 0
        self.counts: dict[str, int] = {}
        #: items handed to the executor and not finished
        self.in_flight = 0
        #: branches held back by max_parallel
        self.deferred: deque[int] = deque()
        #: this task's result split into items, for the tasks that map over it
        self.parts: list[Any] | None = None
        #: mapped tasks waiting for this task's result to be split
        self.split_waiters: list[int] = []
        self.skip_reason = ""
        #: tasks that map element-wise over this one
        self.ew_children: list[int] = []
        #: dependencies that gate activation (all but an element-wise source)
        self.dep_idx: tuple[int, ...] = ()
        #: (input name, task index) of data upstreams
        self.up_idx: tuple[tuple[str, int], ...] = ()
        #: the arguments that hold upstream results, of which the body gets private copies
        #: (:func:`nbflow.inputs.upstream_names` of every call's arguments, made once)
        self.private: tuple[str, ...] = ()
        #: captured output of the last attempt, by branch (None for a task that is not mapped)
        self.output: dict[int | None, Capture] = {}
        #: its transitions, for ``run.story(name)``: (time, branch, phase, cause)
        self.story: list[tuple[float, int | None, str, str]] = []
        #: changed since its view was last built
        self.dirty = False
        #: chaining: the outcome that arrived while the task was sent ahead (see chaining.py)
        self.early: Finished | None = None
        #: attempts of the task, or the most of any branch
        self.attempts = 0
        #: a mapped task's branch values, once it ended
        self.values: list[Any] | None = None
        #: a streaming task whose generator still runs (see ``streams.py``)
        self.stream_open = False
        #: a streaming task's items that every task mapping it finished with
        self.consumed = 0
        #: fed by an unbounded stream: its branches are a window whose front is released
        #: once nothing needs it (``branch_window.py``)
        self.releasing = False
        #: its results are read as they come (``run.stream``), and how many of them (from
        #: the first on) were read: those may be released
        self.watched = False
        self.delivered = 0

    @property
    def n(self) -> int | None:
        """A mapped task's number of branches, once known (None for a task not mapped)."""
        return len(self.items) if self.mapped and self.items is not None else None

    def branch(self, i: int) -> int | None:
        """The outside name of item ``i``: its index for a mapped task, else None."""
        return i if self.mapped else None

    @property
    def result(self) -> Any:
        """The result: a mapped task's list of branch values (Failed/Skipped in place)."""
        if self.items is None:
            return None
        if self.mapped:
            return self.values if self.values is not None else [it.value for it in self.items]
        return self.items[0].value

    def final_items(self) -> bool:
        return self.items is None or all(it.phase in FINAL for it in self.items)

    def view(self) -> TaskView:
        """A frozen view of the record as it stands.

        A mapped task's output (one capture per branch) is copied into its view once it
        ended, not on every branch: that would cost the square of its branches.
        """
        output = self.output and (not self.mapped or self.state in FINAL)
        return TaskView(
            self.name, self.state, self.attempts, self.started, self.ended, self.where,
            self.mapped, self.n, self.done,
            MappingProxyType(dict(self.counts)) if self.mapped else _NO_COUNTS,
            self.error, self.skip_reason,
            MappingProxyType(dict(self.output)) if output else _NO_OUTPUT,
            self.pt.forced, self.key, False, *command_facts(self), self.pt.stream, self.consumed,
        )


def command_facts(rec: TaskRecord) -> tuple[str | None, str | None, str | None]:
    """A task's command, host and image (see :class:`~nbflow.views.TaskView`): as declared
    until it ended, then from its :class:`~nbflow.CommandResult` or
    :class:`~nbflow.CommandFailed`."""
    task = rec.pt.task
    command, image = task.command, task.options.image
    if (command is None and image is None) or rec.state not in FINAL or rec.items is None:
        return command, None, image
    host: str | None = None
    if rec.mapped:
        hosts = sorted({it.value.host for it in rec.items
                        if isinstance(it.value, CommandResult) and it.value.host})
        host = ", ".join(hosts) or None
    elif isinstance(value := rec.items[0].value, CommandResult):
        command, host, image = value.command or command, value.host or None, value.image or image
    elif rec.error is not None and isinstance(rec.error.error, CommandFailed):
        failure = rec.error.error
        command = failure.command or command
        host = getattr(failure, "host", None) or None
        image = getattr(failure, "image", None) or image
    return command, host, image


_NO_COUNTS: MappingProxyType[str, int] = MappingProxyType({})
_NO_OUTPUT: MappingProxyType[int | None, Capture] = MappingProxyType({})


class RunRecords:
    """The records of one run's tasks, and how a change to one is published.

    Every change of a record goes through :meth:`_move` (an item's phase) or
    :meth:`_set_state` (the task's state): they emit the event observers
    receive, with the task's new view, and add to the task's story. The
    decisions are :class:`~nbflow.transitions.Transitions`', which extends
    this class.

    Views are built when someone needs them, not on every change: on a change
    while observers listen (the event carries it), and on :meth:`view` from
    any thread. Records are changed on the scheduler thread only, one stimulus
    at a time; :attr:`_changes` is odd while one is applied, so a reader on
    another thread builds a view from a record at rest (a sequence lock) and
    never waits on the scheduler thread for more than one stimulus.
    """

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
        #: the last view built of each task (see :meth:`view`); built when first asked for
        self._views: list[TaskView | None] = [None] * len(self.records)
        #: odd while a stimulus is being applied (see the class doc)
        self._changes = 0
        #: tasks not in a final state
        self.unfinished = len(self.records)
        self.status: RunStatus = "pending"
        #: the name of the stimulus being handled, for the stories
        self._cause = ""
        #: when the stimulus being handled arrived: the time of every change it causes
        self.now = 0.0
        #: the run's job directory (its path goes into the final run event)
        self.job: JobDir | None = None
        for rec in self.records:
            pt = rec.pt
            ew_source = pt.map_source if pt.elementwise else None
            rec.dep_idx = tuple(d for d in pt.deps if d != ew_source)
            rec.waiting = len(rec.dep_idx)
            rec.up_idx = tuple((u, plan.by_name[u].index) for u in pt.upstreams)
            rec.private = tuple(u for u in pt.upstreams if u not in pt.params)
            if ew_source is not None:
                self.records[ew_source].ew_children.append(pt.index)
            rec.releasing = (pt.stream and pt.task.options.unbounded) or (
                ew_source is not None and self.records[ew_source].releasing)

    def watch(self, t: int) -> None:
        """Task ``t``'s results are read as they come (``run.stream``); from any thread."""
        self.records[t].watched = True

    def delivered(self, t: int, n: int) -> None:
        """The first ``n`` results of task ``t`` were read; from any thread."""
        rec = self.records[t]
        if n > rec.delivered:
            rec.delivered = n

    def result(self, t: int) -> Any:
        """Task ``t``'s result (a mapped task's list of branch results); None before it ends."""
        rec = self.records[t]
        return rec.result if rec.state in OK else None

    def final_branch(self, t: int, branch: int | None) -> tuple[str, Any] | None:
        """``(state, value)`` of item ``branch`` of task ``t`` once final, else None."""
        items = self.records[t].items
        i = branch or 0
        if items is None or i >= len(items) or items[i].phase not in FINAL:
            return None
        item = items[i]
        return item.phase, item.value

    def final_branches(self, t: int, since: int = 0) -> Iterator[tuple[int | None, str, Any]]:
        """``(branch, state, value)`` of task ``t``'s final items so far from branch ``since``
        on (a task without branches: its one item, as branch None), from any thread: an
        item's value is set before its phase says final, and items are only ever appended."""
        rec = self.records[t]
        items = rec.items
        if items is None:
            return
        for i in range(since, len(items)):
            item = items[i]
            if item.phase in FINAL:
                yield (i if rec.mapped else None, item.phase, item.value)

    def failures(self) -> list[Failed]:
        """Every failed task (each failed branch of a mapped task), in run order."""
        out: list[Failed] = []
        for rec in self.records:
            if rec.state != "failed":
                continue
            if rec.pt.stream and rec.error is not None:  # its generator raised
                out.append(rec.error)
            elif rec.mapped and rec.items is not None:
                out.extend(it.value for it in rec.items if isinstance(it.value, Failed))
            elif rec.error is not None:
                out.append(rec.error)
        return out

    def story(self, t: int) -> list[StoryEntry]:
        """Task ``t``'s transitions so far, oldest first (callable from any thread: the
        copy of a list of immutable entries is atomic)."""
        return [StoryEntry(*entry) for entry in list(self.records[t].story)]

    def view(self, t: int) -> TaskView:
        """Task ``t`` as it stands, from any thread (see the class doc)."""
        rec = self.records[t]
        while True:
            changes = self._changes
            if changes % 2 == 0:
                cached = self._views[t]
                if cached is not None and not rec.dirty:
                    return cached
                view = rec.view()
                if self._changes == changes:
                    if self.status not in ("pending", "running"):  # at rest for good
                        self._views[t] = view
                        rec.dirty = False
                    return view
            time.sleep(0)  # let the scheduler thread finish the stimulus it applies

    def views(self) -> list[TaskView]:
        """Every task as it stands, in run order."""
        return [self.view(t) for t in range(len(self.records))]

    def validate_state(self) -> None:
        """Check the invariants (for tests); raises AssertionError on a broken one."""
        unfinished = sum(1 for r in self.records if r.state not in FINAL)
        assert unfinished == self.unfinished, (unfinished, self.unfinished)
        for rec in self.records:
            assert rec.in_flight >= 0, rec.name
            if rec.state in FINAL:
                assert rec.final_items(), rec.name
            elif rec.items is not None:
                assert rec.done == sum(1 for it in rec.items if it.phase in FINAL), rec.name
            if (rec.items is not None and not rec.mapped
                    and rec.items[0].phase in (QUEUED_AHEAD, SENT_AHEAD)):
                assert rec.state == "pending" and not rec.activated, rec.name
            if rec.state in FINAL and rec.state != "cancelled":
                for d in rec.dep_idx:
                    assert self.records[d].state in FINAL, (rec.name, self.records[d].name)
            assert self.view(rec.pt.index).state == rec.state, rec.name

    def _move(self, rec: TaskRecord, i: int, phase: str, error: Failed | None = None) -> None:
        """Item ``i`` of ``rec`` enters ``phase`` (not its task's last final state)."""
        item = rec.items[i]  # type: ignore[index]
        item.phase = phase
        if phase in PUBLIC:  # a step inside pending: nothing public changes
            if not rec.mapped or len(rec.story) < STORY_BRANCH_LIMIT:
                rec.story.append((self.now, rec.branch(i), phase, self._cause))
            return
        state: TaskState = phase  # type: ignore[assignment]
        if not rec.mapped:
            self._set_state(rec, state, error)
            return
        if len(rec.story) < STORY_BRANCH_LIMIT:
            rec.story.append((self.now, i, phase, self._cause))
        self._emit_branch(rec, i, state, item.attempt, error)
        if (state == "ready" and rec.state == "pending") or (
                state == "running" and rec.state != "running"):
            self._set_state(rec, state)

    def _set_state(self, rec: TaskRecord, state: TaskState, error: Failed | None = None) -> None:
        now = self.now
        rec.story.append((now, None, state, self._cause))
        rec.state = state
        if self.bus.tasks:
            view = self._changed(rec)
            self.bus.emit(TaskEvent(self.run_id, rec.name, None, state, rec.attempts, now,
                                    error, rec.where, rec.n, view))
        else:
            rec.dirty = True

    def _changed(self, rec: TaskRecord) -> TaskView | None:
        """``rec`` changed: its new view when observers listen (the event carries it), else
        None (it is built when asked for)."""
        if self.bus.tasks:
            rec.dirty = False
            view = self._views[rec.pt.index] = rec.view()
            return view
        rec.dirty = True
        return None

    def _emit_branch(self, rec: TaskRecord, i: int, state: str, attempt: int,
                     error: Any = None) -> None:
        if self.bus.branches:
            self.bus.emit(TaskEvent(self.run_id, rec.name, i, state, attempt,  # type: ignore[arg-type]
                                    self.now, error if state == "failed" or state == "retrying"
                                    else None, rec.where))

    def _emit_run(self, status: RunStatus) -> None:
        if self.bus.active:
            job = self.job
            made = None if job is None or status not in FINAL else job.made
            self.bus.emit(RunEvent(self.run_id, self.plan.flow, status, self.now,
                                   None if made is None else str(made),
                                   None if made is None else kept(job.keep, status)))  # type: ignore[union-attr]

