"""The scheduler on its real loop thread: concurrency, limits, timing, cancellation.

Concurrency is shown by the order of events (both started before either ended),
not by the wall clock: tasks that must overlap meet at a barrier, which they
could not pass one after the other.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest

import nbflow as nf


class Tracker:
    """Records the start and end of each call, in order, and the highest concurrency seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.order: list[str] = []
        #: ("start" | "end", name), in the order they happened
        self.log: list[tuple[str, str]] = []

    def work(self, name, seconds=0.0, meet=None):
        """Work for ``seconds``, or until every party of the barrier ``meet`` arrived."""
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.order.append(name)
            self.log.append(("start", name))
        if meet is not None:
            meet.wait()
        else:
            time.sleep(seconds)  # the work itself
        with self.lock:
            self.active -= 1
            self.log.append(("end", name))
        return name


def test_independent_branches_overlap_in_time():
    tracker = Tracker()
    both = threading.Barrier(2, timeout=10)  # broken (so the task fails) if they run in turn
    flow = nf.Flow("par")

    @flow.task(cache=False)
    def left():
        return tracker.work("left", meet=both)

    @flow.task(cache=False)
    def right():
        return tracker.work("right", meet=both)

    @flow.task(cache=False)
    def join(left, right):
        return left + right

    run = flow.run(executor=nf.ThreadExecutor(max_workers=4))
    assert run.results["join"] == "leftright"
    assert [what for what, _ in tracker.log] == ["start", "start", "end", "end"]
    assert tracker.peak == 2


def test_mapped_branches_overlap_on_processes():
    flow = nf.Flow("par")
    with multiprocessing.Manager() as manager:
        both = manager.Barrier(2, timeout=60)  # broken if the branches run in turn
        log = manager.list()

        @flow.task(cache=False)
        def items():
            return [0, 1]

        @flow.task(map="items", cache=False)
        def meet(items):
            import os

            log.append(("start", items))
            both.wait()
            log.append(("end", items))
            return os.getpid()

        run = flow.run(executor=nf.ProcessExecutor(max_workers=2))
        order = [what for what, _ in log]
    assert order == ["start", "start", "end", "end"]
    assert len(set(run.results["meet"])) == 2


def test_max_parallel_is_never_exceeded():
    tracker = Tracker()
    flow = nf.Flow("mp")

    @flow.task(cache=False)
    def items():
        return list(range(8))

    @flow.task(map="items", max_parallel=2, cache=False)
    def work(items):
        return tracker.work(str(items), 0.05)

    run = flow.run(executor=nf.ThreadExecutor(max_workers=8))
    assert run.results["work"] == [str(i) for i in range(8)]
    assert tracker.peak == 2


def test_priority_orders_ready_tasks():
    tracker = Tracker()
    flow = nf.Flow("prio")

    def make(name):
        def body():
            return tracker.work(name, 0.01)

        return body

    for name, prio in [("low", 0), ("high", 10), ("mid", 5), ("lowest", -3)]:
        flow.add(nf.Task.from_function(make(name), name=name,
                                       options={"priority": prio, "cache": False}))
    flow.run(executor=nf.ThreadExecutor(max_workers=1))
    assert tracker.order == ["high", "mid", "low", "lowest"]


def test_timeout_fires_on_threads():
    flow = nf.Flow("timeout")

    release = threading.Event()
    returned = threading.Event()

    @flow.task(timeout=0.2, cache=False)
    def sleepy():
        release.wait(30)
        returned.set()
        return 1

    @flow.task(cache=False)
    def quick():
        return 2

    run = flow.run(executor="threads", raise_on_failure=False)
    # the run ended while the body was still running: the timeout did not wait for it
    assert not returned.is_set()
    release.set()
    assert run.states == {"sleepy": "failed", "quick": "succeeded"}
    assert isinstance(run.failures[0].error, nf.TaskTimeoutError)
    assert "timeout=0.2s" in str(run.failures[0].error)


def test_timeout_with_retries_on_async_tasks():
    flow = nf.Flow("timeout")
    attempts = []

    @flow.task(timeout=0.1, retries=1, cache=False)
    async def sleepy():
        attempts.append(1)
        await asyncio.sleep(5)

    run = flow.run(raise_on_failure=False)
    assert run.states["sleepy"] == "failed"
    assert len(attempts) == 2 and run.task("sleepy").attempts == 2
    assert isinstance(run.failures[0].error, nf.TaskTimeoutError)


def test_retry_delay_is_waited():
    flow = nf.Flow("delay")
    calls = []

    @flow.task(retries=1, retry_delay=0.3, cache=False)
    def flaky():
        calls.append(time.perf_counter())
        raise RuntimeError("nope")

    run = flow.run(executor="inline", raise_on_failure=False)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.29
    assert run.failures[0].attempt == 2


def test_cancel_stops_new_work():
    started = []
    first_started = threading.Event()
    gate = threading.Event()
    first_returned = threading.Event()
    flow = nf.Flow("cancel")

    @flow.task(cache=False)
    def first():
        started.append("first")
        first_started.set()
        gate.wait(5)
        first_returned.set()
        return 1

    @flow.task(cache=False)
    def second(first):
        started.append("second")
        return first

    run = flow.run(background=True)
    assert first_started.wait(5)
    run.cancel()
    run.wait(5)
    gate.set()
    assert first_returned.wait(5)  # first's late result arrives after the cancel
    assert run.status == "cancelled"
    assert run.states == {"first": "cancelled", "second": "cancelled"}
    assert started == ["first"]


def test_async_tasks_run_concurrently_on_the_scheduler_loop():
    flow = nf.Flow("async")
    threads = set()
    log = []
    started = {"a": asyncio.Event(), "b": asyncio.Event()}  # bound to the loop on first use

    async def meet(me, other):
        """Start, then wait for the other task to start: one at a time, this times out."""
        threads.add(threading.current_thread().name)
        log.append(("start", me))
        started[me].set()
        await asyncio.wait_for(started[other].wait(), 10)
        log.append(("end", me))

    @flow.task(cache=False)
    async def a():
        await meet("a", "b")
        return 1

    @flow.task(cache=False)
    async def b():
        await meet("b", "a")
        return 2

    @flow.task(cache=False)
    def c(a, b):
        return a + b

    run = flow.run()
    assert run.results["c"] == 3
    assert [what for what, _ in log] == ["start", "start", "end", "end"]
    assert threads == {"nbflow-scheduler"}


def test_blocking_wait_on_the_scheduler_thread_is_refused():
    flow = nf.Flow("nested")
    inner = nf.Flow("inner")

    @inner.task
    def x():
        return 1

    @flow.task(cache=False)
    async def outer():
        return inner.run()

    run = flow.run(raise_on_failure=False)
    assert isinstance(run.failures[0].error, nf.LoopThreadError)


def test_run_async_from_a_task_on_the_scheduler_loop():
    flow = nf.Flow("nested")
    inner = nf.Flow("inner")

    @inner.task
    def x():
        return 41

    @flow.task(cache=False)
    async def outer():
        run = await inner.run_async(executor="threads")
        return run.results["x"] + 1

    assert flow.run().results["outer"] == 42


def test_run_inside_a_running_event_loop_and_from_a_thread():
    flow = nf.Flow("loops")

    @flow.task(cache=False)
    def a():
        return 5

    async def main():
        blocking = flow.run().results["a"]  # blocks this loop, but works
        awaited = (await flow.run_async()).results["a"]
        return blocking, awaited

    assert asyncio.run(main()) == (5, 5)
    box = []
    thread = threading.Thread(target=lambda: box.append(flow.run().results["a"]))
    thread.start()
    thread.join(10)
    assert box == [5]


def test_background_run_returns_at_once():
    flow = nf.Flow("bg")
    gate = threading.Event()

    @flow.task(cache=False)
    def slow():
        gate.wait(5)
        return 1

    run = flow.run(background=True)
    # it returned while its only task cannot end (the gate is shut)
    assert not run.done
    assert run.status in ("pending", "running")
    with pytest.raises(TimeoutError):
        run.wait(timeout=0.1)
    gate.set()
    assert run.wait(5).results["slow"] == 1
    assert flow.last_run is run


def test_run_wait_timeout_does_not_cancel():
    flow = nf.Flow("bg")
    gate = threading.Event()

    @flow.task(cache=False)
    def slow():
        gate.wait(10)
        return 1

    run = flow.run(background=True)
    with pytest.raises(TimeoutError):
        run.wait(0.05)
    gate.set()
    assert run.wait(10).status == "succeeded"
    assert run.results["slow"] == 1


class Rows:
    """A result that is iterable but no list: its ``__iter__`` is user code."""

    def __init__(self, n: int, seen: list[str]) -> None:
        self.n, self.seen = n, seen

    def __iter__(self):
        self.seen.append(threading.current_thread().name)
        return iter(range(self.n))


@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_run_if_and_splitting_never_run_on_the_scheduler_thread(executor) -> None:
    flow = nf.Flow("user-code-off-the-scheduler")
    asked: list[str] = []
    iterated: list[str] = []

    def only_big(rows):
        asked.append(threading.current_thread().name)
        return True

    @flow.task(cache=False)
    def rows():
        return Rows(3, iterated)

    @flow.task(cache=False, run_if=only_big)
    def count(rows):
        return rows.n

    @flow.task(cache=False, map="rows")
    def double(rows):
        return rows * 2

    run = flow.run(executor=executor)
    assert run.results["double"] == [0, 2, 4]
    assert asked and iterated
    assert "nbflow-scheduler" not in asked + iterated, (asked, iterated)
