"""Cooperative cancellation: a task can ask whether it was told to stop.

A thread cannot be killed from outside. When a run or a task is cancelled,
or an attempt runs past its ``timeout=``, nbflow abandons the attempt, but a
task body running in a thread goes on until it returns. A long task can make
itself stoppable by checking :func:`cancelled` between steps, or by waiting
on :func:`cancel_event` instead of sleeping::

    @flow.task(timeout=600)
    def crawl(urls):
        pages = []
        for url in urls:
            if nf.cancelled():   # cancelled, or past its timeout: stop here
                break
            pages.append(fetch(url))
        return pages

The scheduler marks an attempt on its run's :class:`CancelBoard` when it stops
it; the executors that call task bodies in this process (inline, threads, and
``async def`` tasks on the loop) tell the body which attempt it is through a
context variable. Process workers are terminated instead, so a task that must
be stoppable whatever it does should use ``executor="processes"``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from contextvars import ContextVar
from typing import Any

__all__ = ["CancelBoard", "cancel_event", "cancelled"]


class CancelBoard:
    """The attempts of one run that were told to stop, and the events tasks wait on."""

    __slots__ = ("_abandoned", "_all", "_events", "_ids", "_lock", "job")

    def __init__(self) -> None:
        #: the run's job directory (a :class:`nbflow.jobdir.JobDir`): the board is what a
        #: task's thread knows of its run, so ``nf.job_dir()`` finds the directory here
        self.job: Any = None
        self._ids: set[Hashable] = set()
        #: the whole run was cancelled: every attempt is told to stop
        self._all = False
        #: stopped attempts whose bodies an executor could not stop (a thread's)
        self._abandoned: set[Hashable] = set()
        self._events: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def cancel(self, ids: Iterable[Hashable]) -> None:
        """Tell these attempts to stop (called on the scheduler thread)."""
        for id_ in ids:
            self._ids.add(id_)
            with self._lock:
                event = self._events.pop(id_, None)
            if event is not None:
                event.set()

    def cancel_all(self) -> None:
        """Tell every attempt of the run to stop. Safe from any thread: ``Run.cancel`` calls
        it directly, so a body that blocks the scheduler's thread (``inline``) still hears."""
        self._all = True
        with self._lock:
            events = list(self._events.values())
            self._events.clear()
        for event in events:
            event.set()

    @property
    def run_cancelled(self) -> bool:
        """True once :meth:`cancel_all` was called."""
        return self._all

    def is_cancelled(self, id_: Hashable) -> bool:
        return self._all or id_ in self._ids

    def event(self, id_: Hashable) -> threading.Event:
        """An event that is set when attempt ``id_`` is told to stop (made on first ask)."""
        with self._lock:
            if self._all or id_ in self._ids:
                event = threading.Event()
                event.set()
                return event
            return self._events.setdefault(id_, threading.Event())

    def abandoned(self, id_: Hashable) -> None:
        """An executor left attempt ``id_`` running: its thread cannot be stopped."""
        self._abandoned.add(id_)

    def ended(self, id_: Hashable) -> None:
        """An abandoned attempt's body returned or raised."""
        self._abandoned.discard(id_)

    def still_running(self) -> set[Hashable]:
        """Attempts told to stop whose bodies still run."""
        return set(self._abandoned)

    def forget(self, id_: Hashable) -> None:
        """The attempt ended: drop what the board keeps for it."""
        self._ids.discard(id_)
        with self._lock:
            self._events.pop(id_, None)


#: the board and attempt id of the task body running in this context
current: ContextVar[tuple[CancelBoard, Hashable] | None] = ContextVar(
    "nbflow_cancel", default=None)


#: on a dask worker: a function that says whether the running item is still wanted
#: (a worker cannot be told to stop a task, so it asks)
still_wanted: ContextVar[Callable[[], bool] | None] = ContextVar(
    "nbflow_still_wanted", default=None)


def cancelled() -> bool:
    """True when the task attempt calling it was cancelled or ran past its timeout.

    False outside a task and in a process worker (process workers are stopped, not
    asked). On a dask worker it is True once the run no longer wants the result.
    """
    here = current.get()
    if here is not None:
        return here[0].is_cancelled(here[1])
    wanted = still_wanted.get()
    return wanted is not None and not wanted()


def cancel_event() -> threading.Event:
    """A :class:`threading.Event` that is set when the calling task attempt must stop.

    Wait on it instead of sleeping (``cancel_event().wait(5)`` returns True at once
    when the task is cancelled). Outside a task it is an event that is never set.
    """
    here = current.get()
    if here is None:
        return threading.Event()
    return here[0].event(here[1])
