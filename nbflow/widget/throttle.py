"""At most one send per interval, and the last change is never lost.

The widget's deltas go through a :class:`Throttle`: the first change after a
quiet spell goes out at once, later ones wait until ``interval`` seconds have
passed since the last send, and all the changes made meanwhile go out together.
The clock and the timer are parameters, so tests drive the throttle with a fake
clock and fire timers by hand instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A started timer that can be cancelled (``threading.Timer`` is one)."""

    def cancel(self) -> None:
        """Do not call the function if it has not been called yet."""


#: ``start_timer(delay, function)`` calls ``function()`` after ``delay`` seconds
StartTimer = Callable[[float, Callable[[], None]], Timer]


def thread_timer(delay: float, function: Callable[[], None]) -> Timer:
    """A daemon ``threading.Timer``, started (the default :data:`StartTimer`)."""
    timer = threading.Timer(delay, function)
    timer.daemon = True
    timer.start()
    return timer


class Throttle:
    """Calls ``send`` at most once every ``interval`` seconds, without dropping changes.

    Parameters
    ----------
    send
        Sends what changed. It must call :meth:`sent` (directly or through
        whoever it calls) when it has sent something, and it is called from
        the caller's thread or the timer's.
    interval
        The least number of seconds between two sends.
    clock
        Seconds, monotonic (``time.monotonic`` by default).
    start_timer
        Starts a timer (:func:`thread_timer` by default).
    """

    def __init__(self, send: Callable[[], None], interval: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 start_timer: StartTimer = thread_timer) -> None:
        self.send = send
        self.interval = interval
        self.clock = clock
        self._start_timer = start_timer
        self._lock = threading.Lock()
        #: when the last send happened (-inf: never, so the first one goes out at once)
        self._last = float("-inf")
        #: the timer of the next send, while one is due
        self._timer: Timer | None = None

    @property
    def due(self) -> bool:
        """True while a send is scheduled."""
        return self._timer is not None

    def request(self) -> None:
        """Something changed: send now if the interval has passed, else once it has."""
        with self._lock:
            if self._timer is not None:
                return  # the scheduled send takes this change along
            wait = self.interval - (self.clock() - self._last)
            if wait > 0:
                self._timer = self._start_timer(wait, self._fire)
                return
        self.send()

    def cancel(self) -> None:
        """Drop the scheduled send (the caller is sending now)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def sent(self) -> None:
        """Note that a send happened now: the next one waits a full interval."""
        with self._lock:
            self._last = self.clock()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        self.send()
