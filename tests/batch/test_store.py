"""DiskStore (atomic, signed files) and EventLog (JSON lines), without kernels."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest

import nbflow as nf
from nbflow.cache import DiskStore, default_store
from nbflow.eventlog import read_events


def test_results_survive_a_new_store_on_the_same_directory(tmp_path):
    store = DiskStore(tmp_path / "c")
    store.put("ab12", {"x": [1, 2.5, "s"]})
    assert store.get("ab12") == (True, {"x": [1, 2.5, "s"]})  # answered while being written
    assert store.flush(10)
    again = DiskStore(tmp_path / "c")
    assert again.get("ab12") == (True, {"x": [1, 2.5, "s"]})
    assert again.get("cd34") == (False, None)
    assert len(again) == 1 and "ab12" in again
    assert [p.name for p in again.files()] == ["ab12.nbr"]
    assert not list((tmp_path / "c").rglob(".tmp-*"))  # no temporary file left behind


def test_a_closure_result_round_trips(tmp_path):
    store = DiskStore(tmp_path)
    k = 3
    store.put("ff00", lambda x: x * k)
    store.flush(10)
    hit, fn = DiskStore(tmp_path).get("ff00")
    assert hit and fn(2) == 6


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_a_damaged_file_is_refused_never_loaded_and_replaced_when_recomputed(tmp_path, caplog,
                                                                               damage):
    store = DiskStore(tmp_path)
    store.put("beef", list(range(1000)))
    store.flush(10)
    path = store.file("beef")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) - 10
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif damage == "garbage":
        path.write_bytes(b"not a result\n" + data)
    else:
        path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="nbflow.cache"):
        assert DiskStore(tmp_path).get("beef") == (False, None)
    assert f"refused {path} (cache key beef)" in caplog.text
    store.put("beef", [1])
    store.flush(10)
    assert DiskStore(tmp_path).get("beef") == (True, [1])


def test_clear_and_size(tmp_path):
    store = DiskStore(tmp_path)
    for i in range(5):
        store.put(f"{i:02d}aa", "x" * 100)
    store.flush(10)
    assert len(store) == 5 and store.size() > 500
    store.clear()
    assert len(store) == 0 and store.size() == 0
    assert store.get("01aa") == (False, None)


def _counting_flow(log: str) -> nf.Flow:
    flow = nf.Flow("resume")

    @flow.task
    def a(n: int = 3, log: str = log):
        with open(log, "a") as f:
            f.write("a\n")
        return list(range(n))

    @flow.task
    def b(a, log: str = log):
        with open(log, "a") as f:
            f.write("b\n")
        return sum(a)

    return flow


def test_a_flow_uses_the_cache_dir_setting_and_resumes_from_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "calls.txt"
    first = _counting_flow(str(log))
    assert isinstance(first.cache, DiskStore)
    assert first.run().results["b"] == 3
    assert first.cache.flush(10)
    second = _counting_flow(str(log))  # a new flow object, as in a new process
    run = second.run()
    assert run.states == {"a": "cached", "b": "cached"} and run.results["b"] == 3
    assert log.read_text().split() == ["a", "b"]
    monkeypatch.delenv("NBFLOW_CACHE_DIR")
    assert type(default_store()).__name__ == "MemoryStore"


def test_event_log_writes_every_state_change_and_exports(tmp_path):
    path = tmp_path / "events.jsonl"
    flow = nf.Flow("log")

    @flow.task(export=True)
    def score():
        return 0.5

    @flow.task
    def boom(score):
        raise ValueError("no")

    flow.run(observers=[nf.EventLog(path)], raise_on_failure=False)
    lines = read_events(path)
    assert all(json.dumps(line) for line in lines)
    states = [(e["task"], e["state"]) for e in lines if e["event"] == "task"]
    assert ("score", "running") in states and ("score", "succeeded") in states
    assert ("boom", "failed") in states
    [failed] = [e for e in lines if e["event"] == "task" and e["state"] == "failed"]
    assert failed["error"] == {"type": "ValueError", "message": "no"}
    assert [e["value"] for e in lines if e["event"] == "export"] == [0.5]
    assert [e["status"] for e in lines if e["event"] == "run"][-1] == "failed"


def test_event_log_setting_is_read_when_a_run_starts(tmp_path, monkeypatch):
    flow = nf.Flow("cfg")
    flow.task(name="t")(lambda: 1)
    path = tmp_path / "e.jsonl"
    monkeypatch.setenv("NBFLOW_EVENTS_LOG", os.fspath(path))  # after the flow was made
    flow.run()
    assert {e["task"] for e in read_events(path) if e["event"] == "task"} == {"t"}


def test_read_events_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"event": "run"}\n{"event": "ta')
    assert read_events(path) == [{"event": "run"}]


class SlowDisk(DiskStore):
    """A DiskStore on a disk that, once ``until`` is set, reads only when that event is."""

    def __init__(self, path):
        super().__init__(path)
        self.until: threading.Event | None = None
        self.log: list[str] = []

    def _slow(self):
        if self.until is not None:
            self.log.append("read starts")
            self.until.wait(10)
            self.log.append("read ends")

    def __contains__(self, key):  # a run's lookup (it reads the value later, if needed)
        self._slow()
        return super().__contains__(key)

    def get(self, key):
        self._slow()
        return super().get(key)


def test_slow_cache_reads_do_not_hold_up_the_scheduler(tmp_path):
    store = SlowDisk(tmp_path)

    def quick():
        store.log.append("quick runs")
        if store.until is not None:
            store.until.set()  # the read may end now
        return "quick"

    def build():
        flow = nf.Flow("slow_disk", cache=store)
        flow.task(name="big")(lambda: list(range(1000)))
        flow.task(name="quick", cache=False)(quick)
        return flow

    build().run()
    assert store.flush(10)
    store.until = threading.Event()
    store.log.clear()
    seen = []
    run = build().run(observers=[seen.extend])
    assert run.states == {"big": "cached", "quick": "succeeded"}
    # quick ran while big's lookup was still reading: the loop did not wait for the disk
    assert store.log.index("quick runs") < store.log.index("read ends")
    ended = [e.task for e in seen
             if isinstance(e, nf.TaskEvent) and e.branch is None and e.view.final]
    assert ended == ["quick", "big"]
    assert run.results["big"] == list(range(1000))


def test_lookups_of_a_slow_store_run_off_the_scheduler_thread(tmp_path):
    calls = []

    class CountingDisk(DiskStore):
        def __contains__(self, key):  # a run's lookup
            calls.append(threading.current_thread().name)
            time.sleep(0.05)
            return super().__contains__(key)

        def get(self, key):  # a read (here: of items, to split it)
            calls.append(threading.current_thread().name)
            return super().get(key)

    store = CountingDisk(tmp_path)
    flow = nf.Flow("many", cache=store)
    flow.task(name="items")(lambda: list(range(20)))
    flow.task(name="each", map="items")(lambda items: items * 2)
    assert flow.run().results["each"][:3] == [0, 2, 4]
    assert store.flush(10)
    calls.clear()
    run = flow.run()
    assert set(run.states.values()) == {"cached"}
    assert len(calls) == 22 and "nbflow-scheduler" not in calls  # 21 lookups, 1 read
