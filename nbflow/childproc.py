"""A child process run for a task: its own process group, live output, stopped on cancel.

Command tasks (``commands.py``) and tasks in containers (``containers.py``) run
their work as a child process through :func:`run_child`. The child gets a
process group of its own, so stopping it stops what it started too; its stdout
and stderr stream into the task's captured output while it runs (the widget
shows them live) and are returned when it ends.

A child is stopped when its task is cancelled (:func:`nbflow.cancelled`, which
also covers a dask worker whose result is no longer wanted), at the task's
timeout, by :func:`kill_all` (a process worker's SIGTERM handler, when its pool is
terminated), and by :func:`stop_all` (every process as it exits: the thread that stops a cancelled
task's child is a daemon, so the process must not end before the stop). A stop sends SIGTERM to the group, then SIGKILL after
:data:`KILL_GRACE` seconds, and runs the child's ``on_stop`` hook (a container
is removed there: killing its client does not stop it).
"""

from __future__ import annotations

import atexit
import codecs
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import capture, cancellation
from .errors import TaskTimeoutError

__all__ = ["ChildResult", "run_child", "stop_all"]

#: lines of stderr kept in a result and shown in a failure
TAIL_LINES = 20
#: seconds a process group gets between SIGTERM and SIGKILL
KILL_GRACE = 2.0
#: seconds between two looks at whether the task was cancelled
POLL = 0.05


@dataclass(frozen=True)
class ChildResult:
    """How a child process ended."""

    returncode: int
    stdout: bytes
    #: the last :data:`TAIL_LINES` lines of stderr, as text
    stderr_tail: str


class _Child:
    """A running child, and the lock that makes its stop happen once (whoever asks first
    stops it; who asks next waits until it is stopped).

    The lock is reentrant: a process worker's SIGTERM handler (``stop_all``) may run on
    the thread that is stopping the child already; it stops it again instead of waiting
    for itself.
    """

    __slots__ = ("lock", "on_stop", "proc", "stopped")

    def __init__(self, proc: subprocess.Popen[bytes], on_stop: Callable[[], None] | None) -> None:
        self.proc = proc
        self.on_stop = on_stop
        self.lock = threading.RLock()
        self.stopped = False

    def stop(self, run_on_stop: bool = True) -> None:
        """End the child's group (and run ``on_stop`` with ``run_on_stop``), once."""
        with self.lock:
            if not self.stopped:
                _stop(self.proc, self.on_stop if run_on_stop else None)
                self.stopped = True


class _Live:
    """The children running in this process, for :func:`stop_all`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[int, _Child] = {}

    def add(self, child: _Child) -> None:
        with self._lock:
            self._children[child.proc.pid] = child

    def discard(self, child: _Child) -> None:
        with self._lock:
            self._children.pop(child.proc.pid, None)

    def snapshot(self) -> list[_Child]:
        with self._lock:
            return list(self._children.values())


_live = _Live()


def run_child(
    task: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdin: bytes | None = None,
    timeout: float | None = None,
    on_stop: Callable[[], None] | None = None,
) -> ChildResult:
    """Run ``argv`` for task ``task`` until it ends, is cancelled or times out.

    Raises :class:`InterruptedError` on a cancel and :class:`~nbflow.TaskTimeoutError`
    at ``timeout`` seconds, after the child's group is stopped and ``on_stop`` ran.
    """
    out = capture.current()
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, start_new_session=True,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child = _Child(proc, on_stop)
    _live.add(child)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [_reader(proc.stdout, stdout, out, "stdout"), _reader(proc.stderr, stderr, out, "stderr")]
    if stdin is not None:
        threading.Thread(target=_feed, args=(proc, stdin), daemon=True,
                         name=f"nbflow-stdin-{task}").start()
    stopped = True
    try:
        _wait(task, proc, timeout)
        stopped = False
    finally:
        # still listed while it stops: stop_all (at exit) waits for this stop to end
        child.stop(run_on_stop=stopped)
        _live.discard(child)
        for reader in readers:
            reader.join()
    tail = "\n".join(b"".join(stderr).decode(errors="replace").splitlines()[-TAIL_LINES:])
    return ChildResult(proc.returncode, b"".join(stdout), tail)


def stop_all() -> None:
    """Stop every child of this process now, and wait for the stops under way.

    A process worker about to be terminated calls it, and so does this process as it
    exits (``atexit``): a task's thread that is stopping its child when the run was
    cancelled (Ctrl-C on ``nbflow run``, a kernel shut down after an interrupt) is a
    daemon thread, which ends with the process; the stop must not end with it.
    """
    for child in _live.snapshot():
        child.stop()


atexit.register(stop_all)


def kill_all() -> None:
    """Kill every child's process group now (SIGKILL) and run its ``on_stop``, waiting for
    nothing and taking no lock: a signal handler calls it, and the code it interrupted may
    be waiting on those very children, holding their locks (``Popen.wait``'s)."""
    for child in list(_live._children.values()):
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if child.on_stop is not None:
            child.on_stop()


def _wait(task: str, proc: subprocess.Popen[bytes], timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=POLL)
            return
        except subprocess.TimeoutExpired:
            pass
        if cancellation.cancelled():
            raise InterruptedError(f"task {task!r} was cancelled; its processes were stopped")
        if deadline is not None and time.monotonic() > deadline:
            raise TaskTimeoutError(task, float(timeout or 0))


def _stop(proc: subprocess.Popen[bytes], on_stop: Callable[[], None] | None) -> None:
    """End the child's process group (SIGTERM, then SIGKILL) and run its ``on_stop``.

    ``on_stop`` runs before and again after: a container client stopped while it was
    still creating its container may have started it after the first call.
    """
    if on_stop is not None:
        on_stop()
    _end_group(proc)
    if on_stop is not None:
        on_stop()


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.wait()
        return
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:  # members other than the leader may linger
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.01)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass


def _reader(pipe: IO[bytes], sink: list[bytes], out: capture.Capture | None,
            stream: str) -> threading.Thread:
    def read() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        target: list[str] | None = None if out is None else getattr(out, stream)
        while chunk := os.read(pipe.fileno(), 65536):
            sink.append(chunk)
            if target is not None:
                target.append(decoder.decode(chunk))
        pipe.close()

    thread = threading.Thread(target=read, daemon=True, name=f"nbflow-{stream}-reader")
    thread.start()
    return thread
