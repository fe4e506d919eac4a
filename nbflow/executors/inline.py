"""Run task bodies on the scheduler's own thread: deterministic, no hand-off cost.

For tests and for tiny tasks. A body that blocks blocks the scheduler, so a
``timeout=`` cannot interrupt it: an item that ran longer than its timeout is
failed with :class:`~nbflow.errors.TaskTimeoutError` once it returns.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from ..errors import TaskTimeoutError
from ..values import Failed
from .base import Executor, Outcome, WorkItem, call_item


class InlineExecutor(Executor):
    """Calls each item on the scheduler loop, up to ``batch_size`` items per loop iteration.

    Items submitted while a batch is being delivered (the next task of a chain)
    run in the same loop iteration while the budget lasts: a loop iteration
    (an ``epoll`` call) per item would cost more than the scheduling itself.
    """

    name = "inline"

    def __init__(self, batch_size: int = 256) -> None:
        super().__init__()
        #: items run per loop iteration (the scheduler regains control in between)
        self.batch_size = batch_size
        self._reset()

    def _reset(self) -> None:
        self._cancelled: set[Hashable] = set()
        self._queued = 0
        #: items submitted and not yet run
        self._backlog: list[WorkItem] = []
        #: a _run_batch call is scheduled or running (it will pick up the backlog)
        self._active = False

    async def _start(self) -> None:
        return None

    def free_slots(self) -> int:
        return max(self.batch_size - self._queued, 0)

    def _submit(self, items: Sequence[WorkItem]) -> None:
        self._queued += len(items)
        self._backlog.extend(items)
        if not self._active:
            self._active = True
            assert self._loop is not None
            self._loop.call_soon(self._run_batch)

    def _cancel(self, ids: list[Hashable]) -> None:
        self._cancelled.update(ids)

    def _run_batch(self) -> None:
        budget = self.batch_size
        while self._backlog and budget > 0 and not self._closed:
            items = self._backlog[:budget]
            del self._backlog[:budget]
            budget -= len(items)
            outcomes: list[Outcome] = []
            for item in items:
                self._queued -= 1
                if item.id in self._cancelled:
                    self._cancelled.discard(item.id)
                    continue
                outcome = call_item(item, "inline")
                if item.timeout is not None and outcome.ended - outcome.started > item.timeout:
                    error = TaskTimeoutError(item.label, item.timeout)
                    outcome.ok = False
                    outcome.value = Failed.from_exception(
                        item.task, error, item.branch, item.attempt
                    )
                outcomes.append(outcome)
            if outcomes and self._on_done is not None and not self._closed:
                self._on_done(outcomes)  # may submit more: it lands in the backlog
        if self._backlog and not self._closed:
            assert self._loop is not None
            self._loop.call_soon(self._run_batch)  # budget spent: let the loop breathe
        else:
            self._active = False
