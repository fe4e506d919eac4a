"""Cancelling in the state machine: one task (``run.cancel_task``) or the whole run.

Cancelling a task skips what depends on it, as a failure would (``run_on="always"``
tasks get a :class:`~nbflow.Skipped`); cancelling the run stops everything at once
and ends it ``cancelled``. Running attempts (and attempts sent ahead) are told to
stop with :class:`~nbflow.messages.CancelRunning`; what a task already made (the
items a stream yielded, finished branches) stays. This is a mixin of
:class:`~nbflow.transitions.Transitions`, and changes state only inside
:meth:`Transitions.handle`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .messages import Cancel, CancelRunning, CancelTask, Instruction, Item, RunFinished
from .records import SENT_AHEAD, TaskRecord
from .states import FINAL, RunStatus, TaskState
from .values import Skipped

if TYPE_CHECKING:
    from .chaining import ChainPlanner
    from .ready import ReadyQueues
    from .values import Failed


class CancelTransitions:
    """The handlers of :class:`~nbflow.messages.CancelTask` and
    :class:`~nbflow.messages.Cancel` (see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of Transitions, RunRecords and the other mixins
        records: list[TaskRecord]
        now: float
        cancelling: bool
        status: RunStatus
        unfinished: int
        ready: ReadyQueues
        chain: ChainPlanner | None

        def _set_state(self, rec: TaskRecord, state: TaskState,
                       error: Failed | None = None) -> None: ...
        def _emit_branch(self, rec: TaskRecord, i: int, state: str, attempt: int,
                         error: Any = None) -> None: ...
        def _emit_run(self, status: RunStatus) -> None: ...
        def _end_item(self, rec: TaskRecord, i: int, state: TaskState, value: Any,
                      out: list[Instruction], now: float) -> None: ...
        def _end_task(self, rec: TaskRecord, state: TaskState,
                      out: list[Instruction]) -> None: ...
        def _stop_stream(self, rec: TaskRecord, out: list[Instruction]) -> None: ...
        def _unchain_below(self, rec: TaskRecord, out: list[Instruction],
                           branch: int | None = None) -> None: ...
        def _take_back(self, rec: TaskRecord, i: int = 0) -> None: ...

    def _cancel_task(self, stimulus: CancelTask, out: list[Instruction]) -> None:
        """What depends on the task is skipped like after a failure (``run_on="always"``
        tasks get a :class:`Skipped`); the run ends ``cancelled`` unless a task failed."""
        rec = self.records[stimulus.task]
        if self.status != "running" or rec.state in FINAL:
            return
        rec.deferred.clear()
        if self.chain is not None:
            self._unchain_below(rec, out)
        now = self.now
        if not rec.mapped or rec.items is None:
            rec.skip_reason = "cancelled"
        running = self._stop_items(rec, out)
        if running:
            out.append(CancelRunning(running))
        if rec.pt.stream and rec.items is not None:  # the items it made so far stay
            self._stop_stream(rec, out)
            rec.ended = now
            self._end_task(rec, "cancelled", out)
            return
        if rec.items is None or not rec.mapped:
            rec.ended = now
            self._end_task(rec, "cancelled", out)
            return
        for i, item in enumerate(rec.items):
            if item.phase not in FINAL:
                self._end_item(rec, i, "cancelled", Skipped(rec.name, "cancelled", i), out, now)

    def _cancel(self, _: Cancel, out: list[Instruction]) -> None:
        if self.status != "running":
            return
        self.cancelling = True
        now = self.now
        running: list[tuple[Item, int]] = []
        for rec in self.records:
            if rec.state in FINAL:
                continue
            running += self._stop_items(rec, out)
            if rec.pt.stream:
                self._stop_stream(rec, out)
            for i, item in enumerate(rec.items or ()):
                if item.phase not in FINAL:
                    item.phase = "cancelled"
                    if rec.mapped:
                        self._emit_branch(rec, i, "cancelled", item.attempt)
            rec.in_flight = 0
            rec.ended = now
            self._set_state(rec, "cancelled")
            self.unfinished -= 1
        self.ready.clear()
        if running:
            out.append(CancelRunning(running))
        self.status = "cancelled"
        self._emit_run("cancelled")
        out.append(RunFinished("cancelled"))

    def _stop_items(self, rec: TaskRecord, out: list[Instruction]) -> list[tuple[Item, int]]:
        """The running (or sent-ahead) attempts of ``rec``, which the caller cancels."""
        running = []
        for i, item in enumerate(rec.items or ()):
            if item.phase == "running":
                running.append(((rec.pt.index, rec.branch(i)), item.attempt))
                rec.in_flight -= 1
            elif item.phase == SENT_AHEAD:
                running.append(((rec.pt.index, rec.branch(i)), item.attempt))
                self._take_back(rec, i)
        return running
