"""Fixtures of the service tests: a small spec workflow, a Service on a loop thread, and
``nbflow serve`` as a real process, stopped by its pid."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_ended, wait_until

from nbflow.service import Service

HELPERS = '''
import os


def double(n: int) -> int:
    """Twice n; 3 fails (a job that fails)."""
    if n == 3:
        raise ValueError("three is bad")
    return 2 * n


def first(n: int, calls: str) -> int:
    with open(calls, "a") as f:  # one line per call: proves what was recomputed
        f.write(f"first {n}\\n")
    return n + 1


def second(x: int, gate: str) -> int:
    if gate:
        with open(gate) as f:  # a FIFO: blocks until the test writes to it
            f.read()
    return 10 * x


def hold(n: int, gate: str, inside: str) -> int:
    marker = f"{inside}-{n}"
    open(marker, "w").close()  # inside the task body now
    with open(gate) as f:
        f.read()
    os.remove(marker)
    return n


def length(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())
'''

SPEC = '''
nbflow: 1
name: served
parameters:
  n: {type: integer, default: 1}
tasks:
  doubled: {use: "svc_helpers:double", args: {n: {$param: n}}, export: true}
'''

TWO_STEPS = '''
nbflow: 1
name: two-steps
parameters:
  n: {type: integer}
  calls: {type: string}
  gate: {type: string, default: ""}
tasks:
  first: {use: "svc_helpers:first", args: {n: {$param: n}, calls: {$param: calls}}}
  second:
    use: "svc_helpers:second"
    args: {x: {$task: first}, gate: {$param: gate}}
    export: true
'''

SHARED = '''
nbflow: 1
name: shared
parameters:
  n: {type: integer}
  gate: {type: string}
  inside: {type: string}
tasks:
  hold:
    use: "svc_helpers:hold"
    args: {n: {$param: n}, gate: {$param: gate}, inside: {$param: inside}}
    max_parallel: 1
    export: true
'''

FILES = '''
nbflow: 1
name: files
parameters:
  path: {type: string}
tasks:
  length: {use: "svc_helpers:length", args: {path: {$param: path}}, export: true}
'''


@pytest.fixture
def workflows(tmp_path: Path) -> dict[str, Path]:
    """Spec workflows over one helper module: ``served``, ``two_steps``, ``files`` and
    ``shared``."""
    (tmp_path / "svc_helpers.py").write_text(HELPERS)
    out = {}
    for name, text in (("served", SPEC), ("two_steps", TWO_STEPS), ("files", FILES),
                       ("shared", SHARED)):
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(textwrap.dedent(text))
    return out


class LoopThread:
    """An asyncio loop on a thread of its own, as ``flow.serve()`` runs a service."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-service-loop")
        self.thread.start()

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``start_service(workflow, **kwargs)``: a started :class:`Service` on a loop thread,
    stopped after the test."""
    loops: list[tuple[LoopThread, Service]] = []

    def start(workflow: Any, **kwargs: Any) -> Service:
        kwargs.setdefault("state_dir", tmp_path / "state")
        kwargs.setdefault("report", lambda message: None)
        kwargs.setdefault("poll", 0.05)
        service = Service(workflow, **kwargs)
        lt = LoopThread()
        loops.append((lt, service))
        lt.call(service.start())
        return service

    yield start
    for lt, service in loops:
        lt.call(service.stop())
        lt.close()
        service.store.close()


def open_gate(gate: Path, timeout: float = 30) -> None:
    """Let one task blocked on the FIFO ``gate`` go on, once it is waiting there."""
    fd = wait_until(lambda: os.open(gate, os.O_WRONLY | os.O_NONBLOCK), timeout=timeout,
                    what=f"a task waiting at {gate.name}")
    os.write(fd, b"go")
    os.close(fd)


def gates(tmp_path: Path, n: int) -> list[Path]:
    """``n`` FIFOs a task of ``two_steps`` waits at (``gate`` parameter)."""
    out = []
    for i in range(n):
        out.append(tmp_path / f"gate-{i}")
        os.mkfifo(out[-1])
    return out


def nbflow_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "nbflow", *map(str, args)]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``serve(*args)``: ``nbflow serve ARGS`` as a real process (its stderr to a file in
    tmp_path); stopped with SIGTERM by its pid after the test, killed if it will not stop."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str | Path, cwd: Path | None = None) -> subprocess.Popen[str]:
        log = open(tmp_path / f"serve-{len(procs)}.log", "w")  # closed below, once the child has it
        proc = subprocess.Popen(nbflow_command("serve", *args), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, text=True,
                                cwd=cwd or tmp_path, env=_user_env())
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    left = wait_ended([p.pid for p in procs if p.poll() is None], timeout=30)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(30)


def _user_env() -> dict[str, str]:
    """The environment of a user's shell: no pytest marker (ipykernel changes its capture)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("PYTEST_CURRENT_TEST", "NBFLOW_CACHE_DIR", "NBFLOW_EVENTS_LOG"):
        env.pop(name, None)
    return env


def serve_log(tmp_path: Path, index: int = 0) -> str:
    return (tmp_path / f"serve-{index}.log").read_text()
