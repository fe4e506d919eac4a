"""The dask executor on nbflow's own LocalCluster (in-process workers).

No test waits for a guessed time: a task that must still run while the test
checks something blocks on a file the test (or :class:`RecordingDaskExecutor`)
creates, and claims about timing are checked as the order of recorded events.
"""

from __future__ import annotations

import os
import sys
import threading
import urllib.request
from pathlib import Path

import cloudpickle
import pytest
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)
from dask_clusters import wait_until

import nbflow as nf
from nbflow.executors import dask_cluster

# Functions of this module travel to workers by value, like notebook functions do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LOCK = threading.Lock()


def _wait_for_file(path: str, timeout: float = 30) -> None:
    """In a task: block until ``path`` exists (the test's go-ahead), at most ``timeout`` s."""
    wait_until(lambda: os.path.exists(path), timeout, f"{path} to be created")


class RecordingDaskExecutor(nf.DaskExecutor):
    """A DaskExecutor that logs, in order, when a task's item goes to dask (``"sent"``)
    and when an outcome of it reaches the scheduler (``"done"``).

    Each run works on a duplicate, which shares the log. Given ``gate``, it creates
    that file once every task in ``open_when_sent`` was sent, so tasks that wait for
    it (:func:`_wait_for_file`) keep running until then.
    """

    def __init__(self, *args, gate: Path | None = None, open_when_sent=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list[tuple[str, str]] = []
        self.gate, self.open_when_sent = gate, set(open_when_sent)
        self.names: dict[object, str] = {}

    async def start(self, on_done):
        def logged(batch):
            self.log.extend(("done", self.names.get(o.id, "?")) for o in batch)
            on_done(batch)

        await super().start(logged)

    def _submit_group(self, items):
        self._record(items)
        super()._submit_group(items)

    def _submit_fused(self, units):
        """Fused chains (one dask task each): each inner task counts as sent."""
        self._record([item for unit in units for item in unit])
        super()._submit_fused(units)

    def _record(self, items):
        for item in items:
            self.names[item.id] = item.task
            self.log.append(("sent", item.task))
        if self.gate is not None and self.open_when_sent <= {t for k, t in self.log if k == "sent"}:
            self.gate.touch()

    def first(self, kind: str, task: str) -> int:
        """Where the first ``(kind, task)`` event is in the log."""
        return self.log.index((kind, task))


def test_branching_results_and_where(local):
    flow = nf.Flow("branching")

    @flow.task
    def a(x: int = 2):
        print("a runs")
        return x

    @flow.task
    def b(a):
        return a * 10

    @flow.task
    def c(a):
        raise ValueError("c breaks")

    @flow.task(run_on="failure")
    def handler(c):
        return f"handled {type(c.error).__name__}"

    @flow.task
    def d(b, c):
        return b

    run = flow.run(executor="dask", params={"x": 3}, raise_on_failure=False)
    assert run.status == "failed"
    assert run.states == {"a": "succeeded", "b": "succeeded", "c": "failed",
                          "handler": "succeeded", "d": "skipped"}
    assert run.results["b"] == 30
    assert run.results["handler"] == "handled ValueError"
    [failure] = run.failures
    assert failure.task == "c" and "c breaks" in failure.traceback
    # the worker's traceback names this file and the source line (whatever cloudpickle does)
    assert f'File "{__file__}"' in failure.traceback
    assert "<dynamic-code>" not in failure.traceback
    assert 'raise ValueError("c breaks")' in failure.traceback
    rec = run.task("a")
    assert rec.where is not None and rec.where.startswith("inproc://")
    assert rec.output[None].text() == "a runs\n"
    # the record holds a dask future, not the value: results stay on the workers
    assert type(run._sm.result(run.plan.by_name["a"].index)).__name__ == "Future"
    assert "dask dashboard:" in str(run.summary()) or run.dashboard_link is None


def test_map_with_1000_branches_chained_elementwise(local):
    flow = nf.Flow("map1000")

    @flow.task
    def items(n: int = 1000):
        return list(range(n))

    @flow.task(map="items")
    def square(items):
        return items * items

    @flow.task(map="square")
    def plus(square):
        return square + 1

    @flow.task
    def total(plus):
        return sum(plus)

    executor = RecordingDaskExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["total"] == sum(i * i + 1 for i in range(1000))
    assert run.task("plus").branches == 1000
    assert run.results["plus"][:3] == [1, 2, 5]
    # element-wise: branches of plus went to dask while branches of square still ran
    done = [i for i, event in enumerate(executor.log) if event == ("done", "square")]
    assert len(done) == 1000
    assert executor.first("sent", "plus") < done[-1]


def test_a_chain_goes_to_dask_before_its_first_task_ends(local, tmp_path):
    flow = nf.Flow("chained")
    gate = tmp_path / "chain-sent"

    @flow.task
    def first(gate: str = str(gate)):
        _wait_for_file(gate)  # runs until the whole chain went to dask
        return 1

    @flow.task
    def second(first):
        print("second runs")
        return first + 1

    @flow.task
    def third(second, first):
        return second * 10 + first

    executor = RecordingDaskExecutor(local, gate=gate, open_when_sent={"second", "third"})
    run = flow.run(executor=executor)
    assert run.results["third"] == 21
    assert run.states == {"first": "succeeded", "second": "succeeded", "third": "succeeded"}
    assert {task for _, task in executor.log} == {"first", "second", "third"}
    first_done = executor.first("done", "first")
    assert executor.first("sent", "second") < first_done
    assert executor.first("sent", "third") < first_done
    for name in ("first", "second", "third"):
        rec = run.task(name)
        assert rec.attempts == 1 and rec.where is not None and rec.where.startswith("inproc://")
    # the report of a chained task arrives with it: output, and it started after its upstream
    assert run.task("second").output[None].text() == "second runs\n"
    assert run.task("second").started >= run.task("first").ended


def test_a_fan_in_goes_to_dask_when_the_last_branch_does(local, tmp_path):
    flow = nf.Flow("fan_in_chained")
    gate = tmp_path / "fan-in-sent"

    @flow.task
    def parts():
        return [0.3, 0.5, 0.4]

    @flow.task(map="parts")
    def slow_part(parts, gate: str = str(gate)):
        _wait_for_file(gate)  # every branch runs until the fan-in went to dask
        return parts * 10

    @flow.task
    def add_up(slow_part):
        return sum(slow_part)

    executor = RecordingDaskExecutor(local, gate=gate, open_when_sent={"add_up"})
    run = flow.run(executor=executor)
    assert run.results["add_up"] == 12.0
    # sent once every branch had gone out, before any of them was done
    assert executor.log.count(("sent", "slow_part")) == 3
    last_branch_sent = max(i for i, e in enumerate(executor.log) if e == ("sent", "slow_part"))
    assert last_branch_sent < executor.first("sent", "add_up") < executor.first("done", "slow_part")
    assert run.task("add_up").attempts == 1 and run.states["add_up"] == "succeeded"


def test_a_failure_inside_a_chain_skips_the_rest_and_cancels_their_futures(local, tmp_path):
    flow = nf.Flow("chain_failure")
    gate = tmp_path / "chain-sent"

    @flow.task
    def head(gate: str = str(gate)):
        _wait_for_file(gate)  # runs until the whole chain went to dask
        return 1

    @flow.task
    def breaks(head):
        raise ValueError("breaks")

    @flow.task
    def chained_tail(breaks):
        return breaks

    @flow.task
    def chained_end(chained_tail):
        return chained_tail

    executor = RecordingDaskExecutor(local, gate=gate,
                                     open_when_sent={"breaks", "chained_tail", "chained_end"})
    run = flow.run(executor=executor, raise_on_failure=False)
    assert run.states == {"head": "succeeded", "breaks": "failed", "chained_tail": "skipped",
                          "chained_end": "skipped"}
    assert executor.first("sent", "chained_end") < executor.first("done", "head")
    [failure] = run.failures  # dask failed the tail with the same error: not counted twice
    assert failure.task == "breaks" and isinstance(failure.error, ValueError)
    assert run.task("chained_tail").attempts == 0
    assert _keys_gone("chained_") == []


def test_a_retry_inside_a_chain_is_chained_onto_again(local, tmp_path):
    flow = nf.Flow("chain_retry")
    marker = tmp_path / "tries"

    @flow.task
    def begin():
        return 2

    @flow.task(retries=1)
    def wobbly(begin, path: str = str(marker)):
        import os

        tries = len(os.listdir(os.path.dirname(path)))
        open(f"{path}{tries}", "w").close()
        if tries < 1:
            raise RuntimeError("first attempt fails")
        return begin * 10

    @flow.task
    def after_wobbly(wobbly):
        return wobbly + 1

    run = flow.run(executor="dask")
    assert run.results["after_wobbly"] == 21
    assert run.task("wobbly").attempts == 2
    assert run.task("after_wobbly").attempts == 1


def test_run_if_runs_next_to_the_data(local):
    flow = nf.Flow("run_if")

    @flow.task
    def data():
        return list(range(10))

    @flow.task(run_if=lambda data: len(data) > 5)
    def long(data):
        return "long"

    @flow.task(run_if=lambda data: len(data) > 50)
    def longer(data):
        return "longer"

    run = flow.run(executor="dask")
    assert run.states["long"] == "succeeded" and run.states["longer"] == "skipped"


def test_small_results_are_cached_large_ones_stay_remote(local):
    flow = nf.Flow("cache")

    @flow.task
    def small():
        return 1

    @flow.task
    def large():
        return b"x" * 2_000_000

    @flow.task
    def both(small, large):
        return small + len(large)

    first = flow.run(executor="dask")
    assert first.results["both"] == 2_000_001
    second = flow.run(executor="dask")
    states = second.states
    assert states["small"] == "cached" and states["both"] == "cached"
    assert states["large"] == "succeeded"  # over cache_limit: not gathered, recomputed


def test_mixed_placement_moves_data_only_across_edges(local):
    flow = nf.Flow("mixed")

    @flow.task
    def heavy():
        return list(range(5))

    @flow.task(map="heavy")
    def per_item(heavy):
        return heavy * 2

    @flow.task(executor="threads")
    def summary(per_item):
        return sum(per_item)

    @flow.task(executor="threads", map="heavy")
    def local_branch(heavy):
        return heavy + 100

    @flow.task
    def back_on_dask(summary):
        return summary + 1

    run = flow.run(executor="dask")
    assert run.results["summary"] == 20
    assert run.results["local_branch"] == [100, 101, 102, 103, 104]
    assert run.results["back_on_dask"] == 21
    assert run.task("summary").where.startswith("thread")
    assert run.task("per_item").where.startswith("inproc://")
    assert run.task("back_on_dask").where.startswith("inproc://")
    # the threads task got a value, the dask one a future
    assert run.results["summary"] == 20


def test_unserializable_input_is_named_when_submitted(local):
    flow = nf.Flow("unsendable")

    @flow.task
    def uses_param(handle):
        return 1

    @flow.task
    def uses_global():
        with LOCK:
            return 2

    run = flow.run(executor="dask", params={"handle": threading.Lock()},
                   raise_on_failure=False)
    errors = {f.task: str(f.error) for f in run.failures}
    assert "input 'handle'" in errors["uses_param"]
    assert "_thread.lock" in errors["uses_param"]
    assert "global 'LOCK'" in errors["uses_global"]
    assert all("cannot be sent to dask workers" in e for e in errors.values())


def test_unserializable_result_names_task_and_type(local):
    flow = nf.Flow("unserializable")

    @flow.task
    def opens():
        return threading.Lock()

    run = flow.run(executor="dask", raise_on_failure=False)
    [failure] = run.failures
    assert failure.task == "opens"
    assert "task 'opens' returned a _thread.lock" in str(failure.error)


def test_retries_by_nbflow_with_attempts(local, tmp_path):
    flow = nf.Flow("retries")
    marker = tmp_path / "tries"

    @flow.task(retries=2)
    def flaky(path: str = str(marker)):
        import os

        n = len(os.listdir(os.path.dirname(path))) if os.path.exists(os.path.dirname(path)) else 0
        open(f"{path}{n}", "w").close()
        if n < 1:
            raise RuntimeError("first attempt fails")
        return n

    run = flow.run(executor="dask")
    assert run.results["flaky"] == 1
    assert run.task("flaky").attempts == 2


def _keys_gone(prefix: str, timeout: float = 10) -> list[str]:
    """Wait until the scheduler holds no key starting with ``prefix``; the keys left."""
    try:
        wait_until(lambda: not _scheduler_keys(prefix), timeout, f"keys {prefix}* to go", 0.1)
    except AssertionError:
        pass
    return _scheduler_keys(prefix)


def _scheduler_keys(prefix: str) -> list[str]:
    from distributed import Client

    cluster = dask_cluster.current_local_cluster()
    assert cluster is not None
    with Client(cluster.scheduler_address, timeout=10) as client:
        keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
    return [k for k in keys if k.startswith(prefix)]


def test_timeout_cancels_the_dask_future(local, tmp_path):
    flow = nf.Flow("timeout")
    release, ended = tmp_path / "release", tmp_path / "ended"

    @flow.task(timeout=0.5)
    def sleepy_timeout(release: str = str(release), ended: str = str(ended)):
        try:
            _wait_for_file(release)  # runs until the test lets it go
        finally:
            Path(ended).touch()
        return 1

    try:
        run = flow.run(executor="dask", raise_on_failure=False)
        # the run ended while the body still ran: the timeout did not wait for it
        assert not ended.exists()
    finally:
        release.touch()
    assert isinstance(run.failures[0].error, nf.TaskTimeoutError)
    assert _keys_gone("sleepy_timeout-") == []


def test_cancel_cancels_outstanding_futures(local, tmp_path):
    flow = nf.Flow("cancel")
    release, ended = tmp_path / "release", tmp_path / "ended"

    @flow.task
    def start():
        return 1

    @flow.task(map="start_list")
    def sleepy_cancel(start_list, release: str = str(release), ended: str = str(ended)):
        try:
            _wait_for_file(release)  # runs until the test lets it go
        finally:
            with open(ended, "a") as f:
                f.write(f"{start_list}\n")
        return start_list

    @flow.task
    def start_list(start):
        return list(range(8))

    running = threading.Event()

    def observer(events):
        if any(isinstance(e, nf.TaskEvent) and e.task == "sleepy_cancel"
               and e.state == "running" for e in events):
            running.set()

    run = flow.run(executor="dask", background=True, observers=[observer])
    try:
        assert running.wait(20), "sleepy_cancel never ran"
        wait_until(lambda: _scheduler_keys("sleepy_cancel-"), 10, "sleepy_cancel's keys")
        run.cancel()
        run.wait(10)
        assert run.status == "cancelled"
        # cancelled while every branch still ran: the cancel did not wait for them
        assert not ended.exists()
    finally:
        release.touch()
    assert _keys_gone("sleepy_cancel-") == []


def test_the_local_cluster_is_started_once_and_reused(local):
    assert dask_cluster.local_cluster() is local
    flow = nf.Flow("reuse")
    flow.task(name="one")(lambda: 1)
    a = flow.run(executor=nf.DaskExecutor(), raise_on_failure=True)
    flow.cache.clear()
    b = flow.run(executor="dask")
    assert a.results["one"] == b.results["one"] == 1
    assert dask_cluster.current_local_cluster() is local
    ex_a, ex_b = a._scheduler.executors[0], b._scheduler.executors[0]
    assert ex_a.client is ex_b.client  # one connection per loop and address


@pytest.mark.timeout(30)  # bounded: connect_timeout, not the OS's TCP timeouts
def test_unreachable_scheduler_is_a_clear_error_in_bounded_time():
    from dask_clusters import free_port

    flow = nf.Flow("unreachable")
    flow.task(name="one")(lambda: 1)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(nf.ExecutorError, match="cannot reach the dask scheduler at tcp://127") as info:
        flow.run(executor=nf.DaskExecutor(address, connect_timeout=2))
    assert "within 2s" in str(info.value)  # it gave up after connect_timeout
    assert isinstance(info.value.__cause__, OSError)  # (TimeoutError is one)


def test_the_summary_and_the_widget_link_the_dashboard(local):
    from nbflow.widget import DagWidget

    flow = nf.Flow("dashboard")

    @flow.task
    def one():
        return 1

    widget = DagWidget(flow)
    run = flow.run(executor="dask", background=True)
    widget.attach(run)
    run.wait(30)
    widget.flush(final=True)
    link = run.dashboard_link
    assert link == f"http://127.0.0.1:{local.scheduler.http_server.port}/status"
    with urllib.request.urlopen(link, timeout=10) as response:  # it opens
        assert response.status == 200
    assert f"dask dashboard: {link}" in str(run.summary())
    assert widget.dashboard == link

    local_run = flow.run(executor="threads")
    assert local_run.dashboard_link is None
    assert "dask dashboard" not in str(local_run.summary())
