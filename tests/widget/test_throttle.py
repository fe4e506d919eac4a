"""The delta throttle with a fake clock and timers fired by hand: no sleeping, no wall clock."""

from __future__ import annotations

from collections.abc import Callable

from nbflow.widget.throttle import Throttle


class FakeTimers:
    """Timers that fire when the test says so; the clock moves when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        #: (when it is due, function), in the order started
        self.started: list[tuple[float, Callable[[], None]]] = []
        self.cancelled = 0

    def clock(self) -> float:
        return self.now

    def start(self, delay: float, function: Callable[[], None]) -> FakeTimers.Handle:
        self.started.append((self.now + delay, function))
        return self.Handle(self)

    def fire(self) -> None:
        """Move the clock to the first timer's time and call it."""
        due, function = self.started.pop(0)
        self.now = due
        function()

    class Handle:
        def __init__(self, timers: FakeTimers) -> None:
            self.timers = timers

        def cancel(self) -> None:
            self.timers.cancelled += 1


def throttled(interval: float = 0.1) -> tuple[Throttle, FakeTimers, list[float]]:
    timers = FakeTimers()
    sends: list[float] = []

    def send() -> None:
        sends.append(timers.now)
        throttle.sent()

    throttle = Throttle(send, interval, clock=timers.clock, start_timer=timers.start)
    return throttle, timers, sends


def test_the_first_change_goes_out_at_once_later_ones_wait_a_full_interval():
    throttle, timers, sends = throttled()
    throttle.request()
    assert sends == [0.0] and not throttle.due
    timers.now = 0.03
    for _ in range(50):  # a burst of changes within the interval: one timer, no send
        throttle.request()
    assert sends == [0.0] and len(timers.started) == 1 and throttle.due
    assert abs(timers.started[0][0] - 0.1) < 1e-9  # due one interval after the last send
    timers.fire()
    assert sends == [0.0, 0.1] and not throttle.due  # the burst went out together


def test_sends_are_never_closer_than_the_interval():
    throttle, timers, sends = throttled(0.1)
    for step in range(200):  # a change every 7 ms of fake time
        now = step * 0.007
        while timers.started and timers.started[0][0] <= now:
            timers.fire()
        timers.now = now
        throttle.request()
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    assert len(sends) >= 10 and min(gaps) >= 0.1 - 1e-9


def test_a_send_now_cancels_the_scheduled_one():
    throttle, timers, sends = throttled()
    throttle.request()
    timers.now = 0.01
    throttle.request()
    assert throttle.due
    throttle.cancel()  # the caller sends itself (the run's final delta)
    throttle.send()
    assert sends == [0.0, 0.01] and not throttle.due and timers.cancelled == 1
    timers.now = 0.05
    throttle.request()  # the interval counts from that send
    assert abs(timers.started[-1][0] - 0.11) < 1e-9
