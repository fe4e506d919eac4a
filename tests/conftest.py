"""Shared fixtures: a fresh scheduler loop per test module, and a guard around every test.

The guard (:func:`_guard`) fails a test that leaves something behind:

- an ERROR (or worse) logged under the ``nbflow`` logger: the scheduler, the loop, the
  event bus and the executors log what broke where no exception reaches the caller.
  A test that provokes such a record on purpose is marked ``logs_nbflow_errors``;
- a thread the test started that is still alive once the test is over, after waiting
  up to :data:`LEAK_WAIT` seconds for it to end. Threads that nbflow (or dask, or
  IPython) keeps on purpose are not leaks: see :func:`_kept_thread`;
- a child process the test started that is still alive, after the same wait, except
  the shared ones nbflow keeps on purpose (:func:`_kept_pids`);
- a setting left changed (an override or an ``NBFLOW_*`` variable). The registry of
  entry-point tasks is reset after each test.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nbflow import config as nbflow_config
from nbflow import loop
from nbflow.registry import registry

#: seconds a test's threads and processes get to end after it (most end at once)
LEAK_WAIT = 10.0

MARKER = "logs_nbflow_errors"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: the test makes nbflow log errors on purpose (the after-test guard allows them)",
    )


@pytest.fixture(scope="module", autouse=True)
def _fresh_loop_thread() -> Iterator[None]:
    loop.reset()
    yield
    loop.reset()


@pytest.fixture(scope="session", autouse=True)
def _cache_signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Disk caches sign with a key file of the test session (inherited by subprocesses and
    kernels), never the user's own (``nbflow.cache_auth``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBFLOW_CACHE_KEY_FILE", str(tmp_path_factory.mktemp("key") / "cache-key"))
        # the run history of the tests (and of their kernels) lives in the session's tmp dir
        mp.setenv("NBFLOW_HOME", str(tmp_path_factory.mktemp("nbflow-home")))
        mp.delenv("NBFLOW_CACHE_KEY", raising=False)
        yield


@pytest.fixture(params=["inline", "threads", "processes"])
def executor(request: pytest.FixtureRequest) -> str:
    """Every local executor, by name."""
    return str(request.param)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "",
               interval: float = 0.005) -> Any:
    """Return ``predicate()``'s value as soon as it is true; fail after ``timeout`` seconds.

    The one poller of the tests, for conditions nothing signals (state read from a
    run, a file or a port another process makes; an ``OSError`` counts as not yet).
    When the code under test can set a ``threading.Event``, wait on that instead.
    """
    deadline = time.monotonic() + timeout
    again = threading.Event()  # never set: its timed wait is the poll's period
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {what or predicate!r}")
        again.wait(interval)


def wait_ended(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until the processes end (at most ``timeout`` seconds); the pids still running."""
    return _wait_gone(pids, time.monotonic() + timeout)


# -- the guard -------------------------------------------------------------------------------


class _ErrorRecords(logging.Handler):
    """Keeps the ERROR records of the ``nbflow`` logger, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it logged nbflow errors, leaked threads or processes, or settings."""
    threads_before = set(threading.enumerate())
    children_before = set(_children())
    settings_before = _settings()
    env_before = {k: v for k, v in os.environ.items() if k.startswith("NBFLOW_")}
    errors = _ErrorRecords()
    nbflow_logger = logging.getLogger("nbflow")
    nbflow_logger.addHandler(errors)
    try:
        yield
        # (still listening: a thread that ends now may log what went wrong on its way out)
        problems = _leftovers(threads_before, children_before)
    finally:
        nbflow_logger.removeHandler(errors)
        registry.reset()

    settings_after = _settings()
    if settings_after != settings_before:
        changed = sorted(k for k in settings_before if settings_after[k] != settings_before[k])
        problems.append(f"settings left changed: {changed} (use monkeypatch or config.set)")
        for k in [k for k in os.environ if k.startswith("NBFLOW_")]:  # spare the next tests
            del os.environ[k]
        os.environ.update(env_before)

    if errors.records and request.node.get_closest_marker(MARKER) is None:
        problems.append("nbflow logged errors (mark the test @pytest.mark."
                        f"{MARKER} if it provokes them on purpose):\n"
                        + "\n".join(f"  {r.name}: {r.getMessage()}" for r in errors.records))
    if problems:
        pytest.fail("after the test: " + "\n".join(problems), pytrace=False)


def _leftovers(threads_before: set[threading.Thread], children_before: set[int]) -> list[str]:
    """The test's threads and processes still running after up to LEAK_WAIT seconds."""
    problems = []
    deadline = time.monotonic() + LEAK_WAIT
    threads = [t for t in threading.enumerate() if t not in threads_before and not _kept_thread(t)]
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    leaked = [t for t in threads if t.is_alive()]
    if leaked:
        problems.append("threads still running: " + ", ".join(sorted(repr(t) for t in leaked)))

    tree = _children()
    new = {pid: cmd for pid, (_, cmd) in tree.items()
           if pid not in children_before and _started_by_test(pid, tree, children_before)}
    kept = _kept_pids()
    pids = _wait_gone([pid for pid in new if pid not in kept], deadline)
    if pids:
        problems.append("child processes still running (now killed): "
                        + ", ".join(f"{pid} ({new[pid][:120]})" for pid in sorted(pids)))
        for pid in pids:  # spare the next tests
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return problems


def _started_by_test(pid: int, tree: dict[int, tuple[int, str]], before: set[int]) -> bool:
    """False for a process started by one that was there before the test.

    A worker that a module's dask cluster restarts, say, belongs to that cluster.
    """
    me = os.getpid()
    parent = tree[pid][0]
    while parent != me and parent in tree:
        if parent in before:
            return False
        parent = tree[parent][0]
    return True


def _settings() -> dict[str, object]:
    return {name: nbflow_config.get(name) for name in nbflow_config.DEFAULTS}


_DASK = ("distributed", "dask", "tornado")


def _kept_thread(t: threading.Thread) -> bool:
    """Threads meant to outlive a test: nbflow's loop, shared pools, dask's and IPython's."""
    name = t.name
    # the loop; the widgets' layout service and their helper thread
    if name in ("nbflow-scheduler", "nbflow-layout", "nbflow-widget"):
        return True
    if name.startswith("asyncio_"):  # the loop's default executor (disk cache reads)
        return True
    # a shared process pool's manager thread and its call queue's feeder
    if type(t).__name__ == "_ExecutorManagerThread" or name == "QueueFeederThread":
        return True
    if name == "IPythonHistorySavingThread":  # the in-process shell's, one per process
        return True
    if name.startswith(("Dask-", "TCP-Executor")) or t in _dask_pool_threads():
        return True
    target = getattr(t, "_target", None)
    target = getattr(target, "func", target)  # functools.partial
    module = getattr(target, "__module__", None) or type(t).__module__
    return module.split(".")[0] in _DASK


def _dask_pool_threads() -> set[threading.Thread]:
    """The threads of dask's local thread pools (dask.threaded keeps them for reuse)."""
    threaded = sys.modules.get("dask.threaded")
    if threaded is None:
        return set()
    pools = [getattr(threaded, "default_pool", None)]
    pools += [p for by_size in list(getattr(threaded, "pools", {}).values())
              for p in list(by_size.values())]
    return {t for pool in pools for t in list(getattr(pool, "_threads", ()))}


def _children() -> dict[int, tuple[int, str]]:
    """This process's live descendants: pid -> (parent pid, command line)."""
    multiprocessing.active_children()  # joins the multiprocessing children that ended
    try:
        import psutil
    except ImportError:
        return _children_from_proc()
    out = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = (p.ppid(), " ".join(p.cmdline()))
    return out


def _children_from_proc() -> dict[int, tuple[int, str]]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] != "Z":  # state, parent pid, ...
                parents[int(entry)] = int(stat[1])
    out: dict[int, tuple[int, str]] = {}
    level = {os.getpid()}
    while level:
        level = {pid for pid, ppid in parents.items() if ppid in level and pid not in out}
        for pid in level:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            out[pid] = (parents[pid], cmd)
    return out


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _kept_pids() -> set[int]:
    """Processes nbflow keeps across runs on purpose, and their descendants.

    The shared process pools, the local dask cluster started on demand, the widget's
    layout process, and multiprocessing's resource tracker (whose pid is private to
    multiprocessing).
    """
    roots: set[int] = set()
    processes = sys.modules.get("nbflow.executors.processes")
    if processes is not None:
        roots |= processes.pool_pids()
    dask_cluster = sys.modules.get("nbflow.executors.dask_cluster")
    if dask_cluster is not None:
        roots |= dask_cluster.local_worker_pids()
    service = sys.modules.get("nbflow.widget.service")
    layout = None if service is None else service.layout_pid()
    if layout is not None:
        roots.add(layout)
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    pid = getattr(getattr(tracker, "_resource_tracker", None), "_pid", None)
    if pid is not None:
        roots.add(pid)
    # and what they started (a dask worker's own processes, say)
    kept = set(roots)
    tree = _children()
    while True:
        more = {pid for pid, (ppid, _) in tree.items() if ppid in kept and pid not in kept}
        if not more:
            return kept
        kept |= more


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    """Wait until the processes end or the deadline passes; the pids still running."""
    alive = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # gone already (or no pidfd: count it as running)
            if _running(pid):
                alive.append(pid)
            continue
        try:
            # a pidfd becomes readable when the process ends
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        if not ready and _running(pid):
            alive.append(pid)
    return alive


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"
