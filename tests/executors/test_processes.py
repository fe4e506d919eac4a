"""The process executor's shared worker pool: reused across runs, retired when work is left in it."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading

import nbflow as nf
from nbflow.executors.processes import shutdown_pools

from conftest import wait_ended


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
    children = {p.pid for p in multiprocessing.active_children()}
    second = set(flow.run(executor=executor).results["pid"])
    assert first & second, "the second run should reuse the first run's processes"
    assert os.getpid() not in first | second
    # no new interpreter started for the second run
    assert {p.pid for p in multiprocessing.active_children()} <= children


def test_cancelled_work_retires_the_pool():
    shutdown_pools()
    flow = pids_flow()
    executor = nf.ProcessExecutor(max_workers=2)
    before = set(flow.run(executor=executor).results["pid"])
    slow = nf.Flow("slow")
    address = f"\0nbflow-test-{os.getpid()}-{id(slow)}"  # an abstract unix socket (Linux)

    @slow.task(cache=False)
    def nap():
        import socket as _socket
        import time as _time

        with _socket.socket(_socket.AF_UNIX) as s:
            s.connect(address)  # tell the test the item reached a worker process
        _time.sleep(30)

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(address)
        server.listen(1)
        server.settimeout(60)
        run = slow.run(executor=executor, background=True)
        server.accept()[0].close()
    run.cancel()
    run.wait(10)
    assert run.status == "cancelled"
    after = set(flow.run(executor=executor).results["pid"])
    assert not before & after, "a fresh pool should replace the one with abandoned work"
    still = wait_ended(sorted(before), timeout=5)  # the retired pool's processes were terminated
    assert not still, f"processes {still} of the retired pool are still alive"
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


class TwoArgumentError(Exception):
    """Pickles (its args are one message) but cannot be rebuilt from what it pickles."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what} failed: {why}")


def test_an_exception_that_cannot_come_back_keeps_its_type_message_and_traceback():
    flow = nf.Flow("unpicklable-error")

    @flow.task(cache=False)
    def picky():
        raise TwoArgumentError("parsing", "bad header")

    run = flow.run(executor="processes", raise_on_failure=False)
    (failure,) = run.failures
    message = str(failure.error)
    assert message.startswith(f"{__name__}.TwoArgumentError: parsing failed: bad header ")
    assert "could not be sent back from the worker process" in message
    assert 'raise TwoArgumentError("parsing", "bad header")' in failure.traceback
    assert failure.traceback.rstrip().endswith("TwoArgumentError: parsing failed: bad header")


def test_a_worker_that_dies_is_reported_with_its_exit_code_or_signal():
    flow = nf.Flow("dying")

    @flow.task(cache=False)
    def exits():
        import os as _os

        _os._exit(7)

    @flow.task(cache=False)
    def crashes():
        import os as _os
        import signal as _signal

        _os.kill(_os.getpid(), _signal.SIGSEGV)

    for name, how in (("exits", "exit code 7"), ("crashes", "killed by signal SIGSEGV")):
        run = flow.run(executor=nf.ProcessExecutor(max_workers=1), targets=[name],
                       raise_on_failure=False)
        (failure,) = run.failures
        message = str(failure.error)
        assert f"a worker process of the pool died while task {name!r} ran or waited ({how})" \
            in message
        assert "__main__" not in message  # no advice about scripts that does not apply
    shutdown_pools()
