"""Cooperative cancellation: nf.cancelled() and nf.cancel_event() in task bodies."""

from __future__ import annotations

import threading

from conftest import wait_until

import nbflow as nf


def test_a_cancelled_run_tells_its_running_thread_task_to_stop():
    flow = nf.Flow("stop")
    started, stopped = threading.Event(), threading.Event()

    @flow.task(cache=False)
    def crawl():
        started.set()
        while not nf.cancelled():  # a long loop that checks between steps
            nf.cancel_event().wait(5)
        stopped.set()
        return "stopped early"

    run = flow.run(executor="threads", background=True)
    assert started.wait(30)
    run.cancel()
    assert stopped.wait(30), "the task never saw that it was cancelled"
    run.wait(30)
    assert run.status == "cancelled"


def test_a_timeout_tells_the_task_to_stop():
    flow = nf.Flow("timeout")
    saw_it = threading.Event()

    @flow.task(timeout=0.2, cache=False)
    def slow():
        if nf.cancel_event().wait(30):  # set when the attempt runs past its timeout
            saw_it.set()
        return None

    run = flow.run(raise_on_failure=False)
    assert run.states == {"slow": "failed"}
    assert isinstance(run.task("slow").error.error, nf.TaskTimeoutError)
    assert saw_it.wait(30)


def test_cancelling_one_task_tells_only_that_task():
    flow = nf.Flow("one")
    started = {name: threading.Event() for name in ("doomed", "kept")}
    outcome: dict[str, bool] = {}
    go = threading.Event()

    @flow.task(cache=False)
    def doomed():
        started["doomed"].set()
        outcome["doomed"] = nf.cancel_event().wait(30)
        return 1

    @flow.task(cache=False)
    def kept():
        started["kept"].set()
        go.wait(30)
        outcome["kept"] = nf.cancelled()
        return 2

    run = flow.run(background=True, executor=nf.ThreadExecutor(max_workers=2))
    assert started["doomed"].wait(30) and started["kept"].wait(30)
    run.cancel("doomed")
    go.set()
    run.wait(30)
    assert run.states == {"doomed": "cancelled", "kept": "succeeded"}
    # doomed's body was abandoned: it records what it saw when it returns, maybe after the run
    wait_until(lambda: "doomed" in outcome, what="the cancelled body returned")
    assert outcome == {"doomed": True, "kept": False}


def test_outside_a_task_nothing_is_cancelled():
    assert nf.cancelled() is False
    assert nf.cancel_event().is_set() is False


def test_an_async_task_sees_its_cancel_too():
    flow = nf.Flow("async")
    seen: list[bool] = []

    @flow.task(cache=False)
    async def waits():
        import asyncio

        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(nf.cancelled())
            raise

    running = threading.Event()

    def observer(events):
        if any(getattr(e, "state", None) == "running" for e in events):
            running.set()

    run = flow.run(background=True, observers=[observer])
    assert running.wait(30)
    run.cancel()
    run.wait(30)
    assert seen == [True]


def test_a_thread_task_that_goes_on_after_a_cancel_says_so_until_it_ends():
    flow = nf.Flow("honest")
    started, release = threading.Event(), threading.Event()

    @flow.task(cache=False)
    def stubborn():  # never asks nf.cancelled(): it cannot be stopped
        started.set()
        release.wait(30)
        return 1

    run = flow.run(background=True, executor="threads")
    assert started.wait(30)
    run.cancel()
    run.wait(30)
    view = run.task("stubborn")
    assert view.state == "cancelled" and view.still_running
    assert view.state_text == "cancelling (still running in a thread)"
    assert "cancelling (still running in a thread)" in str(run.summary())
    assert "still running in a thread" in repr(run)
    release.set()
    wait_until(lambda: not run.task("stubborn").still_running)
    assert "still running" not in str(run.summary())
