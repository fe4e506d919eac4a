"""State-change events and the bus that delivers them to observers.

Observers are callables that receive a *batch* (a list) of events. They run on
a dispatcher thread of their own, never on the scheduler's loop, so a slow
observer only gets bigger batches and never slows the run down. An observer
that raises is logged and kept; the run goes on. An ``async def`` observer is
awaited on the scheduler's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .states import TASK_STATES, RunStatus, TaskState
from .values import Failed

if TYPE_CHECKING:
    from .views import TaskView

__all__ = ["TASK_STATES", "Event", "EventBus", "Observer", "RunEvent", "RunStatus", "TaskEvent",
           "TaskState"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One task (``branch=None``) or one branch of a mapped task changed state."""

    run_id: str
    task: str
    branch: int | None
    state: TaskState
    attempt: int
    time: float
    error: Failed | None = None
    #: where it runs or ran ("thread nbflow-worker-1", "pid 4242", a dask worker address)
    where: str | None = None
    #: for a mapped task's own events: its number of branches, once known
    branches: int | None = None
    #: for a task's own event (not a branch's): the task as it stands after this change
    view: TaskView | None = None


@dataclass(frozen=True, slots=True)
class RunEvent:
    """The run as a whole changed status."""

    run_id: str
    flow: str
    status: RunStatus
    time: float
    #: the run's job directory, on its final event when a task made one
    job_dir: str | None = None
    #: whether that directory is kept after the run (the ``keep_job_dir`` setting)
    job_dir_kept: bool | None = None


Event = Union[TaskEvent, RunEvent]  # noqa: UP007 - a runtime alias on Python 3.10
Observer = Callable[[Sequence[Event]], Any]


class EventBus:
    """Collects events on the scheduler thread and delivers them in batches.

    ``emit`` is cheap (a deque append). A dispatcher thread, started with the
    first observer, wakes every ``interval`` seconds and hands the events
    collected since to each observer, in order.

    Events may be emitted from any thread. They queue in a deque that is never
    replaced: the dispatcher takes from its left end what was there when it looked,
    and an append that races with it lands after, for the next batch. (Swapping in a
    fresh list instead lost events: an emitter that had read the old list appended
    to it after it was delivered.) A lock around append and swap would do too, but
    made ``emit``, which runs for every state change, four times slower (160 ns).
    """

    def __init__(self, observers: Iterable[Observer] = (), interval: float = 0.05) -> None:
        self._observers: list[Observer] = []
        #: True when someone listens: emitters skip building events otherwise (a plain
        #: attribute, not a property, because the scheduler reads it for every state change)
        self.active = False
        #: True when some observer wants the events of single branches of mapped tasks
        #: (the default); observers with ``wants_branch_events = False`` only get
        #: task-level and run events, so a 100,000-branch map costs them nothing per branch
        self.branches = False
        #: True when some observer wants task events (the default); observers with
        #: ``wants_task_events = False`` (the run history) only get run events, so the
        #: scheduler builds no task view per state change for them
        self.tasks = False
        #: events emitted and not yet taken by the dispatcher (the only consumer)
        self._queue: deque[Event] = deque()
        self._interval = interval
        self._wake = threading.Event()
        #: held to start the dispatcher and to close: once ``close`` returns, the
        #: dispatcher either runs (and drains) or never will
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        for observer in observers:
            self.add(observer)

    @property
    def dispatching(self) -> bool:
        """True when a dispatcher thread runs (there is something to wait for at the end)."""
        return self._thread is not None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop on which ``async def`` observers are awaited."""
        self._loop = loop

    def add(self, observer: Observer) -> None:
        """Register an observer; it receives events emitted from now on."""
        if not callable(observer):
            msg = f"an observer must be callable with a list of events, got {observer!r}"
            raise TypeError(msg)
        self._observers.append(observer)
        self.active = True
        wants_tasks = getattr(observer, "wants_task_events", True)
        if wants_tasks:
            self.tasks = True
        if wants_tasks and getattr(observer, "wants_branch_events", True):
            self.branches = True
        with self._lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(
                    target=self._dispatch_loop, name="nbflow-events", daemon=True
                )
                thread.start()
                # Published once started: whoever sees it may join it. (Published before,
                # a run ending meanwhile joined a thread not yet started, which raises,
                # and the run never reported its end.)
                self._thread = thread

    def emit(self, event: Event) -> None:
        """Queue one event (called on the scheduler thread, or any other)."""
        if self._observers:
            self._queue.append(event)

    def close(self) -> None:
        """Deliver what is left and stop the dispatcher (does not wait; see ``wait_closed``)."""
        with self._lock:
            self._closed = True
        self._wake.set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until every event has been delivered (not on the scheduler thread)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- dispatcher thread -----------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            closed = self._closed
            batch = self._take()
            if batch:
                self._deliver(batch)
            if closed:
                rest = self._take()
                if rest:
                    self._deliver(rest)
                return
            self._wake.wait(self._interval)

    def _take(self) -> list[Event]:
        """Everything queued so far, in order (appends made meanwhile stay queued)."""
        queue = self._queue
        popleft = queue.popleft
        # One consumer: the len() items counted are there to take, whatever emitters do.
        return [popleft() for _ in range(len(queue))]

    def _deliver(self, batch: list[Event]) -> None:
        for observer in list(self._observers):
            try:
                result = observer(batch)
                if inspect.isawaitable(result):
                    self._await(result)
            except Exception:
                logger.exception("nbflow event observer %r raised; it stays registered", observer)

    def _await(self, awaitable: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            asyncio.run(_as_coroutine(awaitable))
            return
        asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), loop).result()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable
