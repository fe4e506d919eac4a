"""The process executor's shared worker pool: reused across runs, retired when work is left in it."""

from __future__ import annotations

import os
import threading
import time

import nbflow as nf
from nbflow.executors.processes import shutdown_pools


def pids_flow(sleep: float = 0.0) -> nf.Flow:
    flow = nf.Flow("pids")

    @flow.task(cache=False)
    def items():
        return list(range(4))

    @flow.task(map="items", cache=False)
    def pid(items, sleep: float = sleep):
        import os as _os
        import time as _time

        _time.sleep(sleep)
        return _os.getpid()

    return flow


def test_runs_share_the_worker_processes():
    shutdown_pools()
    flow = pids_flow(sleep=0.05)
    executor = nf.ProcessExecutor(max_workers=2)
    first = set(flow.run(executor=executor).results["pid"])
    start = time.perf_counter()
    second = set(flow.run(executor=executor).results["pid"])
    assert first & second, "the second run should reuse the first run's processes"
    assert os.getpid() not in first | second
    assert time.perf_counter() - start < 2.0  # no new interpreter start-up


def test_cancelled_work_retires_the_pool():
    shutdown_pools()
    flow = pids_flow()
    executor = nf.ProcessExecutor(max_workers=2)
    before = set(flow.run(executor=executor).results["pid"])
    slow = nf.Flow("slow")

    @slow.task(cache=False)
    def nap():
        import time as _time

        _time.sleep(30)

    run = slow.run(executor=executor, background=True)
    time.sleep(1.0)  # let the item reach a worker process
    run.cancel()
    run.wait(10)
    assert run.status == "cancelled"
    after = set(flow.run(executor=executor).results["pid"])
    assert not before & after, "a fresh pool should replace the one with abandoned work"
    for pid in before:  # the retired pool's processes were terminated
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"process {pid} of the retired pool is still alive")
    shutdown_pools()


def test_a_task_that_cannot_travel_names_the_culprit():
    flow = nf.Flow("unsendable")
    lock = threading.Lock()

    @flow.task
    def guarded():
        with lock:
            return 1

    run = flow.run(executor="processes", raise_on_failure=False)
    (failure,) = run.failures
    message = str(failure.error)
    assert "task 'guarded' cannot be sent to a process" in message
    assert "global 'lock' used by its code is a _thread.lock" in message
