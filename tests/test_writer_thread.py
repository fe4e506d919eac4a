"""The background writer of the disk cache and the run history: order, flush, failures."""

from __future__ import annotations

import logging
import threading

import pytest

from nbflow.cache import DiskStore
from nbflow.writer_thread import WriterThread

from conftest import wait_until


def test_jobs_run_in_order_and_flush_waits_for_them() -> None:
    writer = WriterThread("nbflow-test-writer")
    gate, done = threading.Event(), []
    writer.put(gate.wait)
    for i in range(5):
        writer.put(lambda i=i: done.append(i))
    assert not writer.flush(timeout=0)  # held by the first job
    gate.set()
    assert writer.flush(timeout=30)
    assert done == [0, 1, 2, 3, 4]


@pytest.mark.logs_nbflow_errors
def test_a_job_that_raises_is_logged_and_the_writer_goes_on(caplog) -> None:
    writer = WriterThread("nbflow-test-writer")
    done = []

    def broken() -> None:
        raise OSError("disk full")

    with caplog.at_level(logging.ERROR, logger="nbflow.writer_thread"):
        writer.put(broken)
        writer.put(lambda: done.append("after"))
        assert writer.flush(timeout=30)
    assert done == ["after"]
    assert "nbflow-test-writer" in caplog.text and "disk full" in caplog.text


def test_flush_from_a_job_returns_at_once_and_the_thread_ends_when_idle() -> None:
    writer = WriterThread("nbflow-test-writer", idle_seconds=0.01)
    answers = []
    writer.put(lambda: answers.append(writer.flush(timeout=0)))
    assert writer.flush(timeout=30)
    assert answers == [True]
    wait_until(lambda: not any(t.name == "nbflow-test-writer" for t in threading.enumerate()),
               what="the idle writer thread to end")
    writer.put(lambda: answers.append("again"))  # a new thread takes the next job
    assert writer.flush(timeout=30) and answers == [True, "again"]


def test_max_pending_makes_a_producer_wait() -> None:
    writer = WriterThread("nbflow-test-writer", max_pending=2)
    gate, started, done = threading.Event(), threading.Event(), []
    writer.put(gate.wait)
    writer.put(lambda: done.append(1))
    producer = threading.Thread(target=lambda: (started.set(), writer.put(
        lambda: done.append(2))))
    producer.start()
    started.wait(30)
    assert producer.is_alive() or done == [1, 2]  # it waits while 2 jobs are queued
    gate.set()
    producer.join(30)
    assert writer.flush(timeout=30) and done == [1, 2]


def test_the_disk_store_keeps_the_latest_of_two_puts_of_one_key(tmp_path) -> None:
    store = DiskStore(tmp_path / "cache")
    gate = threading.Event()
    store._writer.put(gate.wait)  # hold the writer: both puts wait their turn
    store.put("k" * 64, "first")
    store.put("k" * 64, "second")
    assert store.get("k" * 64) == (True, "second")  # read from what is pending
    gate.set()
    assert store.flush(timeout=30)
    assert DiskStore(tmp_path / "cache").get("k" * 64) == (True, "second")
