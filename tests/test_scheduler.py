"""The scheduler on its real loop thread: concurrency, limits, timing, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import nbflow as nf


class Tracker:
    """Records start/end of each call and the highest concurrency seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.spans: dict[str, tuple[float, float]] = {}
        self.order: list[str] = []

    def work(self, name, seconds):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.order.append(name)
        start = time.perf_counter()
        time.sleep(seconds)
        end = time.perf_counter()
        with self.lock:
            self.active -= 1
            self.spans[name] = (start, end)
        return name


def test_independent_branches_overlap_in_time():
    tracker = Tracker()
    flow = nf.Flow("par")

    @flow.task(cache=False)
    def left():
        return tracker.work("left", 0.4)

    @flow.task(cache=False)
    def right():
        return tracker.work("right", 0.4)

    @flow.task(cache=False)
    def join(left, right):
        return left + right

    start = time.perf_counter()
    flow.run(executor=nf.ThreadExecutor(max_workers=4))
    elapsed = time.perf_counter() - start
    (l0, l1), (r0, r1) = tracker.spans["left"], tracker.spans["right"]
    assert l0 < r1 and r0 < l1, "the two branches did not overlap"
    assert elapsed < 0.75
    assert tracker.peak == 2


def test_mapped_branches_overlap_on_processes():
    flow = nf.Flow("par")

    @flow.task(cache=False)
    def items():
        return [0.5, 0.5]

    @flow.task(map="items", cache=False)
    def nap(items):
        import time as t

        start = t.time()
        t.sleep(items)
        return (start, t.time())

    run = flow.run(executor=nf.ProcessExecutor(max_workers=2))
    (a0, a1), (b0, b1) = run.results["nap"]
    assert a0 < b1 and b0 < a1


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

    @flow.task(timeout=0.2, cache=False)
    def sleepy():
        time.sleep(3)
        return 1

    @flow.task(cache=False)
    def quick():
        return 2

    start = time.perf_counter()
    run = flow.run(executor="threads", raise_on_failure=False)
    assert time.perf_counter() - start < 2
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
    gate = threading.Event()
    flow = nf.Flow("cancel")

    @flow.task(cache=False)
    def first():
        started.append("first")
        gate.wait(5)
        return 1

    @flow.task(cache=False)
    def second(first):
        started.append("second")
        return first

    run = flow.run(background=True)
    deadline = time.time() + 5
    while "first" not in started and time.time() < deadline:
        time.sleep(0.01)
    run.cancel()
    run.wait(5)
    gate.set()
    time.sleep(0.1)
    assert run.status == "cancelled"
    assert run.states == {"first": "cancelled", "second": "cancelled"}
    assert started == ["first"]


def test_async_tasks_run_concurrently_on_the_scheduler_loop():
    flow = nf.Flow("async")
    threads = set()

    @flow.task(cache=False)
    async def a():
        threads.add(threading.current_thread().name)
        await asyncio.sleep(0.3)
        return 1

    @flow.task(cache=False)
    async def b():
        threads.add(threading.current_thread().name)
        await asyncio.sleep(0.3)
        return 2

    @flow.task(cache=False)
    def c(a, b):
        return a + b

    start = time.perf_counter()
    run = flow.run()
    assert run.results["c"] == 3
    assert time.perf_counter() - start < 0.55
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

    start = time.perf_counter()
    run = flow.run(background=True)
    assert time.perf_counter() - start < 0.5
    assert run.status in ("pending", "running")
    with pytest.raises(TimeoutError):
        run.wait(timeout=0.1)
    gate.set()
    assert run.wait(5).results["slow"] == 1
    assert flow.last_run is run


def test_run_wait_timeout_does_not_cancel():
    flow = nf.Flow("bg")

    @flow.task(cache=False)
    def slow():
        time.sleep(0.3)
        return 1

    run = flow.run(background=True)
    with pytest.raises(TimeoutError):
        run.wait(0.05)
    assert run.wait().status == "succeeded"
