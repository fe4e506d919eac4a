"""What became of the work items sent to dask: reports, failures, the sweep, cancellation.

:class:`OutcomeTracker` keeps every item the dask executor handed to the
cluster until its :class:`~nbflow.executors.base.Outcome` reached the
scheduler, and it is the only place that decides what that outcome is:

- **A report** from the worker (see :mod:`.dask_worker`) is the outcome of a
  task that ran. A successful report means the result is on a worker, so its
  future can go downstream at once. That needs no asyncio task per future,
  which cost a mapped task's branches more than the state machine did.
- **A failed report** waits for the future's exception, which dask sends
  after the report has left the worker (reports are batched), and then fails
  the item with the worker's traceback.
- **The sweep** looks at the futures every :data:`SWEEP_INTERVAL` seconds and
  settles those that ended without a report: a worker that died, a scheduler
  that is gone, a cancel by dask, a report that never came.
- **A failure in the kernel** (an item that cannot be sent) is queued like any
  other outcome; :meth:`OutcomeTracker.cancel` forgets items and cancels their
  futures on the cluster.

Outcomes reach the scheduler in batches, one per loop iteration.

This is the one module that reads the state of a dask ``Future`` (its status,
its exception, the event it sets when it ends): :func:`_wait_until_final` and
:func:`_exception` read distributed's private ``Future._state``. Each says why
no public API does the job; if distributed changes, those two functions change.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Hashable
from typing import Any

from ..capture import Capture
from ..errors import ExecutorError
from ..values import Failed
from .base import Outcome, WorkItem
from .dask_cluster import Connection
from .dask_fused_outcomes import FusedOutcomes

logger = logging.getLogger(__name__)

__all__ = ["SWEEP_INTERVAL", "OutcomeTracker"]

#: seconds between two looks at running futures that might have ended without a report
SWEEP_INTERVAL = 0.2

#: a future's final states, as ``Future.status`` names them ("pending" is the other one)
_FINAL = ("finished", "error", "cancelled", "lost")


class OutcomeTracker(FusedOutcomes):
    """The items a dask executor sent, until their outcomes reach the scheduler.

    Fused chains (several items in one dask task) are followed by the
    :class:`~.dask_fused_outcomes.FusedOutcomes` half.

    Parameters
    ----------
    loop
        The scheduler's loop: every method runs on it, and so do ``deliver`` calls.
    conn
        The connection the items were sent through: reports arrive by its
        ``wanted`` table, and its client cancels futures.
    deliver
        Receives each batch of outcomes (the executor's ``on_done``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: Connection,
        deliver: Callable[[list[Outcome]], None],
    ) -> None:
        self._loop = loop
        self._conn = conn
        #: the asynchronous client (untyped: distributed ships no annotations for it)
        self._client: Any = conn.client
        self._deliver = deliver
        #: dask key -> (work item, future) of items running now
        self.running: dict[str, tuple[WorkItem, Any]] = {}
        #: work item id -> its dask key, while it runs (for cancel)
        self.keys: dict[Hashable, str] = {}
        #: work item id -> future, until its outcome reached the scheduler: what a
        #: :class:`~nbflow.executors.ResultOf` input becomes when it is chained onto
        self.futures: dict[Hashable, Any] = {}
        #: sizes of finished results in bytes, by key (for the cache decision)
        self.sizes: dict[str, int] = {}
        #: why the cluster is unreachable, once a future said so (no cancel is sent then)
        self.lost: str | None = None
        #: failed items waiting for their future's exception, by key
        self._failing: dict[str, asyncio.Task[None]] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        #: keys seen finished without a report by the last sweep
        self._finished_seen: set[str] = set()
        self._outcomes: list[Outcome] = []
        self._flush_scheduled = False
        self._closed = False
        self._init_fused()

    # -- items in -------------------------------------------------------------------------

    def track(self, items: list[WorkItem], keys: list[str], futures: list[Any]) -> None:
        """Follow ``items``, just submitted as ``futures`` under ``keys`` (same order).

        The caller has already put :meth:`on_report` in the connection's ``wanted``
        table for each key, before the submission, so no report can be missed.
        """
        running, by_id, by_item = self.running, self.keys, self.futures
        for item, key, fut in zip(items, keys, futures):
            running[key] = (item, fut)
            by_id[item.id] = key
            by_item[item.id] = fut
        if self._sweep_handle is None:
            self._schedule_sweep()

    def fail_now(self, item: WorkItem, error: Exception) -> None:
        """Fail ``item`` without sending it (it cannot travel, or its input is gone)."""
        now = time.time()
        failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
        self._queue(Outcome(item.id, False, failure, now, now, "kernel (not sent)"))

    def fail_unstarted(self, keys: list[str], error: Exception) -> None:
        """Fail items that were sent but cannot start (no worker has the resources they
        ask for): their futures are cancelled on the cluster."""
        now = time.time()
        futures = []
        for key in keys:
            entry = self.running.get(key)
            if key in self.fused:
                fut = self.fail_fused(key, error, "dask (not started)")
                if fut is not None:
                    futures.append(fut)
                continue
            if entry is None or key in self._failing:
                continue
            item, fut = entry
            self._forget(item, key)
            futures.append(fut)
            failure = Failed.from_exception(item.task, error, item.branch, item.attempt)
            self._queue(Outcome(item.id, False, failure, now, now, "dask (not started)"))
        if futures:
            task = self._loop.create_task(self._client.cancel(futures, force=True))
            task.add_done_callback(_log_failure)

    # -- reports ------------------------------------------------------------------------------

    def on_report(self, report: dict[str, Any]) -> None:
        """A worker's report on one key (called by the connection; see the module doc)."""
        key = str(report.get("key"))
        entry = self.running.get(key)
        if entry is None:
            return  # cancelled by nbflow meanwhile
        item, fut = entry
        if report.get("ok"):
            self._forget(item, key)
            if "nbytes" in report:
                self.sizes[key] = int(report["nbytes"])
            self._queue(Outcome(item.id, True, fut, float(report["started"]),
                                float(report["ended"]), report.get("worker"), _capture(report)))
        elif key not in self._failing:
            self._failing[key] = self._loop.create_task(self._failed(item, key, fut, report))

    async def _failed(self, item: WorkItem, key: str, fut: Any, report: dict[str, Any]) -> None:
        """Wait for a failed item's exception (it follows its report), then settle it."""
        await _wait_until_final(fut)
        self._failing.pop(key, None)
        if key in self.running:
            self._settle(item, key, fut, report)

    def _settle(self, item: WorkItem, key: str, fut: Any, report: dict[str, Any]) -> None:
        """The outcome of an item from its future's final state (and its report, if any)."""
        self._forget(item, key)
        now = time.time()  # without a report, when it ran is unknown (the run has when it was sent)
        started = float(report.get("started", now))
        ended = float(report.get("ended", now))
        where = report.get("worker")
        output = _capture(report)
        if fut.status == "finished":  # finished without a report: nothing more to say
            self._queue(Outcome(item.id, True, fut, started, ended, where, output))
            return
        error = self._error_of(item, fut)
        text = report.get("traceback") or _format(error)
        failure = Failed(item.task, error, text, item.branch, item.attempt)
        self._queue(Outcome(item.id, False, failure, started, ended, where, output))
        fut.release()

    def _error_of(self, item: WorkItem, fut: Any) -> BaseException:
        """What to tell the user about a future that ended in error, cancelled or lost."""
        error = _exception(fut)
        if fut.status == "cancelled":
            # dask cancels every future of a client whose scheduler went away
            status = str(getattr(self._client, "status", ""))
            if status not in ("running", "connecting"):
                self.lost = f"the dask scheduler at {self._conn.address} is gone (client {status})"
                return ExecutorError(f"task {item.label!r} did not finish: {self.lost}")
            return ExecutorError(f"dask cancelled task {item.label!r}: {error}")
        if type(error).__name__ == "KilledWorker":
            return ExecutorError(
                f"task {item.label!r} was running on dask workers that died each time it "
                f"ran ({error}); it may use more memory than a worker has, or crash the "
                "interpreter")
        return error if isinstance(error, BaseException) else RuntimeError(repr(error))

    def _forget(self, item: WorkItem, key: str) -> None:
        self.running.pop(key, None)
        self.keys.pop(item.id, None)
        self._finished_seen.discard(key)
        self._conn.wanted.pop(key, None)

    # -- the sweep ------------------------------------------------------------------------------

    def _sweep_handle_set(self) -> bool:
        return self._sweep_handle is not None

    def _schedule_sweep(self) -> None:
        # a sweep costs about a microsecond per running item: rarer for huge maps
        interval = max(SWEEP_INTERVAL, len(self.running) / 50_000)
        self._sweep_handle = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Settle items whose future ended without a report (see the module doc)."""
        self._sweep_handle = None
        if self._closed:
            return
        for key, (item, fut) in list(self.running.items()):
            if key in self._failing:
                continue
            status = fut.status
            if key in self.fused:
                if self._sweep_fused(key, self.fused[key], status, key in self._finished_seen):
                    self._finished_seen.discard(key)
                elif status == "finished":
                    self._finished_seen.add(key)
                continue
            if status in ("error", "cancelled", "lost"):
                self._settle(item, key, fut, {})
            elif status == "finished":  # its report may be on its way: one more sweep
                if key in self._finished_seen:
                    self._settle(item, key, fut, {})
                else:
                    self._finished_seen.add(key)
        if self.running:
            self._schedule_sweep()

    # -- outcomes out ----------------------------------------------------------------------------

    def _queue(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._outcomes = self._outcomes, []
        for outcome in batch:  # from now on the scheduler hands out the future itself
            self.futures.pop(outcome.id, None)
        if batch and not self._closed:
            self._deliver(batch)

    # -- cancelling --------------------------------------------------------------------------------

    def cancel(self, ids: list[Hashable]) -> None:
        """Forget these items (no outcome will come) and cancel their futures on the cluster."""
        futures = []
        for id_ in ids:
            key = self.keys.pop(id_, None)
            if key is None:
                continue
            if key in self.fused:
                fut = self.cancel_inner(id_, key)
                if fut is not None:
                    futures.append(fut)
                continue
            entry = self.running.pop(key, None)
            self.futures.pop(id_, None)
            failing = self._failing.pop(key, None)
            if failing is not None:
                failing.cancel()
            self._conn.wanted.pop(key, None)
            if entry is not None:
                futures.append(entry[1])
        if futures:
            # force=True: cancel even if another client wants these keys (Client.cancel)
            task = self._loop.create_task(self._client.cancel(futures, force=True))
            task.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop: no more outcomes; unfinished futures are cancelled (finished ones stay,
        the run holds its results)."""
        self._closed = True
        self._close_fused()
        pending = [fut for _, fut in self.running.values()]
        for task in self._failing.values():
            task.cancel()
        self._failing.clear()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for key in self.running:
            self._conn.wanted.pop(key, None)
        self.running.clear()
        if pending and self.lost is None:
            try:
                await self._client.cancel(pending)
            except Exception:  # the cluster may be gone: nothing to stop there then
                logger.debug("cancelling futures at close failed", exc_info=True)


# -- dask's private future state (see the module doc) ---------------------------------------


async def _wait_until_final(fut: Any) -> None:
    """Return once ``fut`` is finished, failed, cancelled or lost, without fetching anything.

    Private: ``Future._state`` and its event. ``await fut`` would gather a finished
    result into the kernel, and ``distributed.wait`` raises for a cancelled future and
    keeps waiting for a lost one; distributed has no public "wait without fetching".
    """
    state: Any = fut._state
    while state.status not in _FINAL:
        await state._get_event().wait()


def _exception(fut: Any) -> Any:
    """The exception of a failed future, or the ``FutureCancelledError`` of a cancelled one.

    Private: ``Future._state.exception``. The public ``Future.exception()`` is a
    coroutine with an asynchronous client, and returns None for a cancelled future,
    whose error says why it was cancelled.
    """
    return fut._state.exception


# -- helpers ------------------------------------------------------------------------------------


def _capture(report: dict[str, Any]) -> Capture | None:
    """What the item printed, from its report (None when it printed nothing)."""
    if not (report.get("stdout") or report.get("stderr") or report.get("displays")):
        return None
    out = Capture()
    out.stdout = list(report.get("stdout") or [])
    out.stderr = list(report.get("stderr") or [])
    out.displays = list(report.get("displays") or [])
    return out


def _format(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("cancelling dask futures failed: %s", task.exception())
