"""Chaining in the state machine: items handed to an executor ahead of their upstreams.

An executor that chains (dask) runs a task as soon as it has the references of its
inputs, so the scheduler hands it tasks (and branches of element-wise maps) before
their upstreams finished: their cache is looked up first, a miss queues them
*ahead*, and when the upstreams end well they simply run on (an outcome that came
early is applied then). When an upstream fails or is cancelled, what was chained
onto it is taken back. :class:`~nbflow.chaining.ChainPlanner` decides what may go
ahead; this mixin of :class:`~nbflow.transitions.Transitions` moves the items, and
changes state only inside :meth:`Transitions.handle`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import chaining, inputs
from .messages import (
    CacheAnswer, CancelRunning, ChainAhead, Execute, Finished, Instruction, Item, LookupCache
)
from .records import LOOKING_AHEAD, QUEUED_AHEAD, SENT_AHEAD, WAITING, TaskRecord

if TYPE_CHECKING:
    from .values import Failed


class ChainTransitions:
    """The handlers and hooks of chaining ahead (see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of Transitions and RunRecords
        records: list[TaskRecord]
        now: float
        cancelling: bool
        chain: chaining.ChainPlanner | None

        def _move(self, rec: TaskRecord, i: int, phase: str,
                  error: Failed | None = None) -> None: ...
        def _push(self, rec: TaskRecord, i: int) -> None: ...
        def _finished(self, rec: TaskRecord, i: int, f: Finished,
                      out: list[Instruction]) -> None: ...
        def arguments(self, item: Item) -> dict[str, Any]: ...

    def _chain_ahead(self, _: ChainAhead, out: list[Instruction]) -> None:
        """Queue the tasks that may go ahead of their upstreams (their cache lookups first)."""
        if self.chain is None:
            return
        ready = self.chain.ready_to_chain()
        if self.cancelling:
            return
        for rec in ready:
            rec.key = inputs.key_of_task(self.records, rec)
            if rec.key is None or rec.pt.forced:
                self._queue_ahead(rec)
            else:
                self._move(rec, 0, LOOKING_AHEAD)
                out.append(LookupCache((rec.pt.index, None), rec.key))
        for rec, i in self.chain.ready_branches():
            key = None if rec.pt.forced else inputs.key_of_item(self.records, rec, i, ahead=True)
            if key is None:
                self._queue_ahead(rec, i)
            else:
                self._move(rec, i, LOOKING_AHEAD)
                out.append(LookupCache((rec.pt.index, i), key))

    def _cache_answered_ahead(self, rec: TaskRecord, i: int, answer: CacheAnswer,
                              out: list[Instruction]) -> None:
        """A lookup ahead of the upstreams: a miss sends the task ahead; a hit waits for the
        upstreams as usual (and is looked up again then)."""
        self._move(rec, i, WAITING)
        chain = self.chain
        assert chain is not None
        if not answer.hit and not self.cancelling and (
                chain.can_chain_branch(rec, i) if rec.mapped else chain.can_chain_now(rec)):
            self._queue_ahead(rec, i)

    def _finished_ahead(self, rec: TaskRecord, i: int, f: Finished, out: list[Instruction]) -> None:
        """Sent ahead, and done before its upstreams' outcomes arrived: keep it for then."""
        if rec.mapped:
            self.chain.early[(rec.pt.index, i)] = f  # type: ignore[union-attr]
        else:
            rec.early = f

    def _queue_ahead(self, rec: TaskRecord, i: int = 0) -> None:
        self._move(rec, i, QUEUED_AHEAD)
        self._push(rec, i)

    def _send_ahead(self, rec: TaskRecord, i: int) -> Execute:
        """Hand an item queued ahead to its executor; its state stays pending."""
        item = rec.items[i]  # type: ignore[index]
        item.attempt += 1
        if not rec.mapped:  # a branch counts once it runs (see _upstreams_done)
            rec.attempts = item.attempt
        rec.in_flight += 1
        self._move(rec, i, SENT_AHEAD)
        self.chain.handed_over(rec, i)  # type: ignore[union-attr]
        ident = (rec.pt.index, rec.branch(i))
        return Execute(ident, item.attempt, self.arguments(ident))

    def _upstreams_done(self, rec: TaskRecord, i: int, out: list[Instruction]) -> None:
        """Hook: the upstreams of an item sent ahead finished well. Queued: it is an ordinary
        ready item now (its heap entry is still there). Sent: it runs, and an outcome that
        arrived early is applied."""
        item = rec.items[i]  # type: ignore[index]
        if item.phase == QUEUED_AHEAD:
            self._move(rec, i, "ready")
            return
        if not rec.mapped:
            rec.started = self.now
            early, rec.early = rec.early, None
        else:
            if rec.started is None:
                rec.started = self.now
            if item.attempt > rec.attempts:
                rec.attempts = item.attempt
            early = self.chain.early.pop((rec.pt.index, i), None)  # type: ignore[union-attr]
        self._move(rec, i, "running")
        if early is not None:
            self._finished(rec, i, early, out)

    def _unchain_below(self, rec: TaskRecord, out: list[Instruction],
                       branch: int | None = None) -> None:
        """Hook: an attempt of ``rec`` (its branch ``branch``, or all) failed, or it was
        cancelled: take back what was chained ahead onto its result."""
        chain = self.chain
        assert chain is not None
        below = [(crec, 0) for crec in chain.chained_below(rec)]
        if rec.mapped and rec.ew_children and rec.items is not None:
            for b in range(len(rec.items)) if branch is None else (branch,):
                below += [(crec, b) for crec in chain.branch_below(rec, b)]
        for crec, i in below:
            item = crec.items[i]  # type: ignore[index]
            if item.phase == SENT_AHEAD:
                out.append(CancelRunning([((crec.pt.index, crec.branch(i)), item.attempt)]))
                self._take_back(crec, i)
            self._move(crec, i, WAITING)

    def _take_back(self, rec: TaskRecord, i: int = 0) -> None:
        """An item sent ahead never ran, as far as the run is concerned."""
        item = rec.items[i]  # type: ignore[index]
        item.attempt -= 1
        rec.in_flight -= 1
        if rec.mapped:
            self.chain.early.pop((rec.pt.index, i), None)  # type: ignore[union-attr]
        else:
            rec.attempts = item.attempt
            rec.early = None
