"""The event bus: every event emitted reaches every observer once, in order."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import pytest

from nbflow.events import Event, EventBus, TaskEvent


@pytest.fixture
def tight_thread_switches() -> Iterator[None]:
    """Switch threads as often as CPython allows while the test runs."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _switch_inside_emit(frame: FrameType, event: str, arg: Any) -> Any:
    """A trace function that gives other threads a turn between the bytecodes of ``emit``.

    With the GIL, CPython switches threads only at a few bytecodes (calls, backward
    jumps), none of them between reading a buffer attribute and appending to it,
    so a race there shows only on a free-threaded build. Tracing every opcode of
    ``emit`` runs Python code (where switches happen) between each two of them,
    which opens the same windows here.
    """
    if frame.f_code.co_name == "emit":
        frame.f_trace_opcodes = True
        return _switch_inside_emit
    return None


def test_no_event_lost_or_duplicated_when_many_threads_emit_during_delivery(
    tight_thread_switches: None,
) -> None:
    threads, each = 8, 10_000
    delivered: list[Event] = []
    batches: list[int] = []

    def observer(batch: Sequence[Event]) -> None:
        batches.append(len(batch))
        delivered.extend(batch)

    # interval=0: the dispatcher takes and delivers batches continuously, so delivery
    # runs all the time the emitters do
    bus = EventBus([observer], interval=0)
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def emitter(k: int) -> None:
        previous = sys.gettrace()
        try:
            start.wait()
            sys.settrace(_switch_inside_emit)
            for i in range(each):
                bus.emit(TaskEvent("stress", f"t{k}", None, "running", i, 0.0))
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)
        finally:
            sys.settrace(previous)

    workers = [threading.Thread(target=emitter, args=(k,), name=f"emitter-{k}")
               for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    bus.close()
    assert bus.wait_closed(timeout=60), "the dispatcher did not finish delivering"
    assert not failures

    assert len(batches) > 1, "delivery should have run while the threads emitted"
    seen: dict[str, list[int]] = {}
    for e in delivered:
        assert isinstance(e, TaskEvent)
        seen.setdefault(e.task, []).append(e.attempt)
    lost = {task: each - len(set(attempts)) for task, attempts in seen.items()}
    assert sum(lost.values()) == 0 and len(seen) == threads, f"events lost: {lost}"
    assert len(delivered) == threads * each, "events delivered twice"
    for task, attempts in seen.items():
        assert attempts == list(range(each)), f"{task}'s events out of order"


def test_events_emitted_before_close_are_delivered_in_order() -> None:
    delivered: list[Event] = []
    bus = EventBus([delivered.extend], interval=3600)
    events = [TaskEvent("r", "t", None, "running", i, 0.0) for i in range(100)]
    for e in events:
        bus.emit(e)
    bus.close()
    assert bus.wait_closed(timeout=30)
    assert delivered == events


def test_without_observers_no_dispatcher_runs() -> None:
    bus = EventBus()
    bus.emit(TaskEvent("r", "t", None, "running", 1, 0.0))
    assert not bus.active and not bus.dispatching
    bus.close()
    assert bus.wait_closed(timeout=0)


def test_an_observer_added_while_the_bus_closes_never_leaves_a_thread_that_cannot_be_joined(
    tight_thread_switches: None,
) -> None:
    # Run._on_done closes the bus, then joins the dispatcher if there is one; an observer
    # added at that moment (a widget attaching to a run that is ending) must leave either
    # no dispatcher or a started one that drains (a join before start raises, and the run
    # never reported its end).
    def trace_bus(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_name in ("add", "close", "wait_closed"):
            frame.f_trace_opcodes = True
            return trace_bus
        return None

    failures: list[BaseException | str] = []
    for _ in range(1000):
        bus = EventBus()
        start = threading.Barrier(2)
        added = threading.Event()

        def add() -> None:
            start.wait()
            sys.settrace(trace_bus)
            try:
                bus.add(lambda batch: None)
            finally:
                sys.settrace(None)
                added.set()

        def end() -> None:
            start.wait()
            sys.settrace(trace_bus)
            try:
                while not bus.active:  # close just as the observer is being added
                    pass
                bus.close()
                # as soon as the bus says a dispatcher runs, wait for it (as a run's end does)
                while not bus.dispatching and not added.is_set():
                    pass
                if bus.dispatching and not bus.wait_closed(timeout=30):
                    failures.append("the dispatcher did not stop")
            except BaseException as exc:
                failures.append(exc)
            finally:
                sys.settrace(None)

        workers = [threading.Thread(target=add), threading.Thread(target=end)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        bus.close()
        assert bus.wait_closed(timeout=30)
    assert not failures, failures[:3]
