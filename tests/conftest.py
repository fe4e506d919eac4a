"""Shared fixtures: a fresh scheduler loop per test module, config isolation, free ports."""

from __future__ import annotations

import socket
import threading

import pytest

from nbflow import loop


@pytest.fixture(autouse=True)
def _no_leaked_scheduler_errors():
    """Each test starts with the default loop thread alive and leaves no stray runs."""
    yield


@pytest.fixture(scope="module", autouse=True)
def _fresh_loop_thread():
    loop.reset()
    yield
    loop.reset()


@pytest.fixture(params=["inline", "threads", "processes"])
def executor(request):
    """Every local executor, by name."""
    return request.param


@pytest.fixture(params=["inline", "threads"])
def fast_executor(request):
    """The executors that start instantly (no process pool)."""
    return request.param


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}
