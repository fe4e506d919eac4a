"""Dask faults that must end in one clear error (issue 20): a server that is no dask
scheduler, resources no worker has, results of a scheduler that died.

Every server listens on 127.0.0.1 and is stopped by the test that started it. What
used to hang runs in a subprocess with a deadline, so a regression fails the test.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
from dask_clusters import CliCluster, start_cli_cluster, wait_until

import nbflow as nf
from nbflow.executors import dask_cluster

pytestmark = pytest.mark.slow


class NotAScheduler:
    """A TCP server on 127.0.0.1 that accepts connections and answers like a web server
    (``HTTP/1.1 400``), or, with ``silent``, never answers."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.settimeout(0.1)  # accept() wakes up to see stop()
        self.accepted = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="not-a-scheduler", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.accepted.set()
            self._conns.append(conn)
            if self.silent:
                continue
            try:
                conn.settimeout(5)  # accepted sockets inherit the server's timeout otherwise
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 3)
            except OSError:
                pass
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.server.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def not_a_scheduler() -> Iterator[NotAScheduler]:
    server = NotAScheduler()
    try:
        yield server
    finally:
        server.stop()


def _run_python(code: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang fails the test (TimeoutExpired) before
    pytest-timeout's 120 s."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def test_a_server_that_is_not_a_scheduler_is_one_error_and_nothing_at_exit(not_a_scheduler):
    # Issue 20, item 7: each of these printed a Client.__del__ TimeoutError traceback when
    # the interpreter exited, after the error (and the error read "MemoryError: Unable to
    # allocate 3.07 EiB")
    port = not_a_scheduler.port
    proc = _run_python(f"""
        import nbflow as nf
        from IPython.core.interactiveshell import InteractiveShell

        flow = nf.Flow("x")
        flow.task(name="one")(lambda: 1)
        try:
            flow.run(executor=nf.DaskExecutor("tcp://127.0.0.1:{port}"))
        except nf.ExecutorError as exc:
            print("python:", exc)
        shell = InteractiveShell.instance()
        shell.run_cell("%load_ext nbflow")
        shell.run_cell("%%nbflow task two\\n2")
        for line in ("%nbflow cluster 127.0.0.1:{port}",
                     "%nbflow run --cluster tcp://127.0.0.1:{port}"):
            result = shell.run_cell(line)
            print("magic:", type(result.error_in_exec).__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    # the magics' errors are one line each (IPython prints UsageError to stderr), and
    # nothing else reaches stderr, at exit or before
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 2, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == (f"python: tcp://127.0.0.1:{port} answered, but not as a dask scheduler "
                      "(MemoryError). Check the port: it must be the scheduler's (dask scheduler "
                      "prints 'Scheduler at: tcp://host:port'), not its dashboard's or another "
                      "server's.")
    assert out[1:] == ["nbflow: task 'two' (upstream: none): new", "magic: UsageError",
                       "magic: UsageError"]
    assert err[0] == f"UsageError: %nbflow cluster: 127.0.0.1:{port} answered, but not as a " \
        "dask scheduler (MemoryError). Check the port: it must be the scheduler's (dask " \
        "scheduler prints 'Scheduler at: tcp://host:port'), not its dashboard's or another " \
        "server's."
    assert err[1].startswith(f"UsageError: %nbflow run --cluster: tcp://127.0.0.1:{port} "
                             "answered, but not as a dask scheduler")


def test_a_silent_server_and_a_malformed_address_are_one_error_and_nothing_at_exit():
    silent = NotAScheduler(silent=True)
    try:
        proc = _run_python(f"""
            import nbflow as nf

            flow = nf.Flow("x")
            flow.task(name="one")(lambda: 1)
            for address in ("tcp://127.0.0.1:{silent.port}", "127.0.0.1", "nonsense://x"):
                try:
                    flow.run(executor=nf.DaskExecutor(address, connect_timeout=1))
                except nf.ExecutorError as exc:
                    print(exc)
        """)
    finally:
        silent.stop()
    assert silent.accepted.is_set()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    out = proc.stdout.splitlines()
    assert out[0].startswith(f"cannot reach the dask scheduler at tcp://127.0.0.1:{silent.port} "
                             "within 1s")
    assert "that they are the scheduler's" in out[0]
    assert out[1] == ("'127.0.0.1' is not a dask scheduler address (missing port number in "
                      "address '127.0.0.1'); write it as tcp://host:port, the address `dask "
                      "scheduler` prints")
    assert out[2].startswith("'nonsense://x' is not a dask scheduler address (unknown address "
                             "scheme 'nonsense'")


# -- resources no worker has -------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory) -> Iterator[CliCluster]:
    """A scheduler and one worker that has no resources."""
    cluster = start_cli_cluster(tmp_path_factory.mktemp("dask-plain"), [[]])
    try:
        yield cluster
    finally:
        dask_cluster.reset()
        cluster.stop()


def test_resources_no_worker_has_fail_after_the_grace_period(plain_cluster):
    # Issue 20, item 8: the task waited forever, with no hint (so: a subprocess, a deadline)
    proc = _run_python(f"""
        import logging
        import nbflow as nf

        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        flow = nf.Flow("gpu")

        @flow.task(resources={{"GPU": 1}})
        def train():
            return "trained"

        @flow.task
        def report(train):
            return train

        executor = nf.DaskExecutor("{plain_cluster.address}")
        executor.resource_wait = 1  # (set so: without the fix, this run hangs, not fails)
        run = flow.run(executor=executor, raise_on_failure=False)
        print(run.status, dict(run.states))
        print(run.failures[0].error)
    """, timeout=90)
    assert proc.returncode == 0, proc.stderr
    status, error = proc.stdout.splitlines()
    assert status == "failed {'train': 'failed', 'report': 'skipped'}"
    [worker] = _worker_addresses(plain_cluster.address)
    what = (f"task 'train' asks for dask resources GPU=1, which no worker of the cluster at "
            f"{plain_cluster.address} has (workers: {worker} has none). Start a worker that has "
            f"them (dask worker {plain_cluster.address} --resources GPU=1), or change the "
            "task's resources=")
    assert error == what + "; none joined within resource_wait=1s."
    # the warning came at once, while it waited
    assert (f"WARNING nbflow.executors.dask_resources: {what}; it waits for such a worker to "
            "join, and fails if none does within resource_wait=1s.") in proc.stderr.splitlines()


def test_a_worker_that_joins_in_time_runs_the_task(plain_cluster):
    flow = nf.Flow("fpga")

    @flow.task(resources={"FPGA": 1})
    def accelerate():
        return "fast"

    waiting = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "FPGA=1" in record.getMessage():
                waiting.set()

    handler = Seen(logging.WARNING)
    logging.getLogger("nbflow.executors.dask_resources").addHandler(handler)
    try:
        run = flow.run(executor=nf.DaskExecutor(plain_cluster.address, resource_wait=120),
                       background=True)
        assert waiting.wait(60), "no warning about the missing FPGA"
        assert not run.done  # sent, and waiting for a worker
        plain_cluster.add_worker(["--resources", "FPGA=1"])
        joined = plain_cluster.workers[-1]
        try:
            run.wait(120)
            assert run.status == "succeeded"
            assert run.results["accelerate"] == "fast"
            fpga = [a for a, w in _workers(plain_cluster.address).items()
                    if w.get("resources", {}).get("FPGA")]
            assert run.task("accelerate").where in fpga
        finally:
            plain_cluster.stop_worker(joined)
    finally:
        logging.getLogger("nbflow.executors.dask_resources").removeHandler(handler)


def _workers(address: str) -> dict[str, dict]:
    from distributed import Client

    with Client(address, timeout=30) as client:
        return dict(client.scheduler_info(n_workers=-1)["workers"])


def _worker_addresses(address: str) -> list[str]:
    return sorted(_workers(address))


# -- the scheduler dies after the run ---------------------------------------------------------


def test_a_result_left_on_a_dead_scheduler_is_unavailable(tmp_path):
    # Issue 20, item 8: run.results[...] raised distributed's raw FutureCancelledError
    cluster = start_cli_cluster(tmp_path, [[]])
    try:
        flow = nf.Flow("gone")

        @flow.task
        def quick():
            return 41

        run = flow.run(executor=nf.DaskExecutor(cluster.address))
        assert run.results["quick"] == 41
        client = run._scheduler.executors[0].client
        cluster.kill()
        wait_until(lambda: client.status != "running", 60, "the client to notice")
        with pytest.raises(nf.ResultUnavailableError) as info:
            run.results["quick"]
    finally:
        dask_cluster.reset()
        cluster.stop()
    assert info.value.task == "quick"
    assert str(info.value).startswith(
        f"Task 'quick' has no result: its value was on the dask cluster at {cluster.address}, "
        "which is gone (client ")
    assert str(info.value).endswith("Run the flow again to compute it.")
    assert run.task("quick").state == "succeeded"  # it did succeed
