"""Real dask clusters for the dask executor tests (fixtures: import them into a test module).

This folder has no ``__init__.py`` and no ``conftest.py`` on purpose: a package named
``dask`` would shadow the real one.

- ``local``: nbflow's process-wide LocalCluster (processes=False), shared by a module;
- ``cli_cluster``: a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1
  (dashboards too), one worker with a ``special=1`` resource; stopped by pid
  (:func:`start_cli_cluster` starts such a cluster for a test that needs its own);
- ``tls_cluster``: a ``dask scheduler`` and one ``dask worker`` that speak TLS only
  (``tls://127.0.0.1``), with throwaway certificates; stopped by pid.

Every server listens on 127.0.0.1 only (dashboards included: ``--no-dashboard`` would
still bind 0.0.0.0, TOOLCHAIN.md 5), and is stopped by process id: the ``dask``
processes, and the worker processes their nannies started (found with psutil).
:func:`wait_until` polls a condition instead of sleeping for a guessed time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import conftest
import psutil
import pytest

from nbflow.executors import dask_cluster

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str,
               interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something true, and return that (the tests'
    one poller, in tests/conftest.py, with the dask tests' argument order)."""
    value: T = conftest.wait_until(condition, timeout, what, interval)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", name="local")
def local_fixture():
    """nbflow's own LocalCluster, in-process (fast), 2 workers x 2 threads."""
    cluster = dask_cluster.local_cluster(n_workers=2, threads_per_worker=2, processes=False)
    yield cluster
    dask_cluster.reset()


@dataclass
class CliCluster:
    address: str
    dashboard: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    #: where the processes' logs go (None: nowhere)
    tmp: Any = None

    def add_worker(self, extra: list[str], wait: bool = True) -> None:
        """Start one more ``dask worker`` (with ``extra`` arguments, like ``--resources``);
        with ``wait``, return once it joined."""
        i = len(self.workers)
        log_path = os.devnull if self.tmp is None else self.tmp / f"worker{i}.log"
        with open(log_path, "wb") as log:
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", self.address, "--nworkers", "1",
                 "--nthreads", "2", "--host", "127.0.0.1", "--dashboard-address",
                 "127.0.0.1:0", "--death-timeout", "30", "--name", f"w{i}", *extra],
                stdout=subprocess.DEVNULL, stderr=log, env=_cluster_env()))
        if wait:
            wait_until(lambda: _workers_up(self.address, len(self.workers)), 60,
                       f"{len(self.workers)} workers at {self.address}", 0.5)

    def worker_processes(self) -> list[psutil.Process]:
        """The processes the ``dask worker`` nannies started (they run the tasks)."""
        out = []
        for proc in self.workers:
            try:
                out += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
        return out

    def stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one worker (and the process its nanny started), by pid."""
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        _kill(children)
        self.workers.remove(proc)

    def stop(self) -> None:
        """SIGTERM to the workers, then the scheduler; SIGKILL to what is left, by pid."""
        children = self.worker_processes()
        for proc in [*self.workers, self.scheduler]:  # workers first, then the scheduler
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        _kill(children)

    def kill(self) -> None:
        """SIGKILL every process of the cluster at once, by pid (the cluster is gone)."""
        children = self.worker_processes()
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _kill(children)


def _kill(processes: list[psutil.Process]) -> None:
    """SIGKILL ``processes`` that still run (``is_running`` checks that a pid was not reused)."""
    for child in processes:
        if child.is_running():
            os.kill(child.pid, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=10)


def _workers_up(address: str, n: int, security: object = None) -> bool:
    """True once ``n`` workers joined the scheduler (OSError while it does not listen)."""
    from distributed import Client

    with Client(address, security=security, timeout=30) as client:
        client.wait_for_workers(n, timeout=30)
    return True


def start_cli_cluster(tmp, workers: list[list[str]]) -> CliCluster:
    """A ``dask scheduler`` and one ``dask worker`` process per entry of ``workers`` (its
    extra arguments), every listener on 127.0.0.1, once every worker joined. The
    caller stops it (:meth:`CliCluster.stop` or :meth:`CliCluster.kill`)."""
    port, dash = free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _cluster_env()
    with open(tmp / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", f"127.0.0.1:{dash}"],
            stdout=subprocess.DEVNULL, stderr=log, env=env)
    cluster = CliCluster(address, f"http://127.0.0.1:{dash}/status", scheduler, tmp=tmp)
    try:
        for extra in workers:
            cluster.add_worker(extra, wait=False)
        wait_until(lambda: _workers_up(address, len(workers)), 60,
                   f"{len(workers)} workers at {address}", 0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _cluster_env() -> dict[str, str]:
    return {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "inf",
            "PYTHONPATH": os.getcwd()}


@pytest.fixture(scope="module", name="cli_cluster")
def cli_cluster_fixture(tmp_path_factory):
    """``dask scheduler`` + two ``dask worker`` processes, every listener on 127.0.0.1."""
    cluster = start_cli_cluster(tmp_path_factory.mktemp("dask-cli"),
                                [["--resources", "special=1"], []])
    try:
        yield cluster
    finally:
        dask_cluster.reset()
        cluster.stop()


@dataclass
class TlsCluster:
    address: str
    #: a distributed.security.Security that the scheduler accepts
    security: object
    cluster: CliCluster


def _write_credentials(tmp) -> tuple[object, dict[str, str]]:
    """Throwaway TLS credentials: the Security for clients, and files for the CLI."""
    from distributed.security import Security

    security = Security.temporary()  # PEM strings, one self-signed CA
    files = {}
    for name in ("tls_ca_file", "tls_scheduler_cert", "tls_scheduler_key", "tls_worker_cert",
                 "tls_worker_key"):
        path = tmp / f"{name}.pem"
        path.write_text(getattr(security, name))
        files[name] = str(path)
    return security, files


@pytest.fixture(scope="module", name="tls_cluster")
def tls_cluster_fixture(tmp_path_factory):
    """A TLS-only ``dask scheduler`` + ``dask worker`` on 127.0.0.1 (no dashboards)."""
    tmp = tmp_path_factory.mktemp("dask-tls")
    security, files = _write_credentials(tmp)
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with open(tmp / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--protocol", "tls", "--host",
             "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0",
             "--tls-ca-file", files["tls_ca_file"], "--tls-cert", files["tls_scheduler_cert"],
             "--tls-key", files["tls_scheduler_key"]],
            stdout=subprocess.DEVNULL, stderr=log, env=env)
    cluster = CliCluster(address, "", scheduler)
    try:
        with open(tmp / "worker.log", "wb") as log:
            cluster.workers.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nworkers", "1",
                 "--nthreads", "2", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                 "--death-timeout", "30", "--tls-ca-file", files["tls_ca_file"],
                 "--tls-cert", files["tls_worker_cert"], "--tls-key", files["tls_worker_key"]],
                stdout=subprocess.DEVNULL, stderr=log, env=env))
        wait_until(lambda: _workers_up(address, 1, security), 60, f"a worker at {address}", 0.5)
        yield TlsCluster(address, security, cluster)
    finally:
        dask_cluster.reset()
        cluster.stop()
