"""The dask executor against ``dask scheduler`` + two ``dask worker`` processes (127.0.0.1).

The last test stops the scheduler mid-run, so it runs last in this module. Tasks
that must still run while the test acts block until they are killed, and the test
waits for the condition it needs (a file a task wrote), never for a guessed time.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import cloudpickle
from dask_clusters import cli_cluster_fixture  # noqa: F401  (the `cli_cluster` fixture)
from dask_clusters import wait_until

import nbflow as nf

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _block_until_killed(timeout: float = 60) -> None:
    """In a task: stay busy until the test kills the process (at most ``timeout`` s)."""
    threading.Event().wait(timeout)


def _note_unpickled(path: str, payload: bytes) -> Tracked:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Tracked(path, payload)


class Tracked:
    """A payload that writes the pid of every process that unpickles it to ``path``."""

    def __init__(self, path: str, payload: bytes) -> None:
        self.path, self.payload = path, payload

    def __reduce__(self):
        return (_note_unpickled, (self.path, self.payload))


def test_large_intermediate_never_reaches_the_kernel(cli_cluster, tmp_path):
    log = tmp_path / "unpickled"
    log.touch()
    flow = nf.Flow("large")

    @flow.task
    def big(path: str = str(log)):
        return Tracked(path, b"x" * 50_000_000)

    @flow.task
    def size(big):
        return len(big.payload)

    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address))
    assert run.results["size"] == 50_000_000
    readers = log.read_text().split()
    assert str(os.getpid()) not in readers  # workers may share it; the kernel never got it
    assert run.task("big").where.startswith("tcp://127.0.0.1:")
    # the detector works: reading the result brings it here
    assert len(run.results["big"].payload) == 50_000_000
    assert str(os.getpid()) in log.read_text().split()


def test_functions_from_main_travel_by_value_and_output_is_captured(cli_cluster):
    flow = nf.Flow("cli")
    offset = 7

    @flow.task
    def numbers():
        print("on a worker")
        return list(range(20))

    @flow.task(map="numbers")
    def shifted(numbers):
        return numbers + offset

    @flow.task
    def total(shifted):
        return sum(shifted)

    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address))
    assert run.results["total"] == sum(range(20)) + 20 * offset
    assert run.task("numbers").output[None].text() == "on a worker\n"
    assert run.dashboard_link is not None and "127.0.0.1" in run.dashboard_link


def test_resources_go_to_the_worker_that_has_them(cli_cluster):
    flow = nf.Flow("resources")

    @flow.task
    def jobs():
        return list(range(6))

    @flow.task(map="jobs", resources={"special": 1})
    def special(jobs):
        import time as t

        start = t.time()
        t.sleep(0.2)
        return (start, t.time())

    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address))
    rec = run.task("special")
    spans = sorted(run.results["special"])
    # one worker has special=1: every branch ran there, one at a time
    assert all(b - a >= 0 for (_, a), (b, _) in zip(spans, spans[1:])), spans
    from distributed import Client

    with Client(cli_cluster.address, timeout=10) as client:
        info = client.scheduler_info()["workers"]
    special_workers = [a for a, w in info.items() if w.get("resources", {}).get("special")]
    assert rec.where in special_workers


def test_a_killed_worker_does_not_fail_the_run(cli_cluster, tmp_path):
    flow = nf.Flow("kill")
    marker = tmp_path / "pids"

    @flow.task
    def slow(path: str = str(marker)):
        import os as o

        with open(path, "a") as f:
            f.write(f"{o.getpid()}\n")
        with open(path) as f:
            first_attempt = len(f.read().split()) == 1
        if first_attempt:
            _block_until_killed()  # the test kills this worker; dask runs it again elsewhere
        return "done"

    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address), background=True)
    wait_until(lambda: marker.exists() and marker.read_text().strip(), 30, "slow to start")
    victim = int(marker.read_text().split()[0])
    assert victim not in (os.getpid(), *[w.pid for w in cli_cluster.workers])  # a worker, not a nanny
    os.kill(victim, signal.SIGKILL)
    run.wait(90)
    assert run.status == "succeeded"
    assert run.results["slow"] == "done"
    pids = marker.read_text().split()
    assert len(pids) >= 2 and pids[-1] != str(victim)  # it ran again elsewhere


def test_scheduler_gone_mid_run_fails_with_the_reason(cli_cluster, tmp_path):
    flow = nf.Flow("gone")
    started = tmp_path / "started"

    @flow.task
    def quick():
        return 41

    @flow.task(executor="threads")
    def kept(quick):
        return quick + 1

    @flow.task
    def stuck(kept, path: str = str(started)):
        Path(path).touch()
        _block_until_killed()  # the test kills the whole cluster meanwhile

    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address), background=True)
    wait_until(started.exists, 30, "stuck to start")
    assert run.results["kept"] == 42  # gathered before the scheduler goes
    cli_cluster.kill()  # every process, by pid: workers, their nannies, the scheduler
    run.wait(90)  # the run notices on its own (a TimeoutError here if it never does)
    assert run.status == "failed"
    [failure] = run.failures
    assert failure.task == "stuck"
    assert "scheduler" in str(failure.error) or "connection" in str(failure.error).lower()
    assert run.results["kept"] == 42
