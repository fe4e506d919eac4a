"""The dask executor on nbflow's own LocalCluster (in-process workers)."""

from __future__ import annotations

import sys
import threading
import time
import urllib.request

import cloudpickle
import pytest
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)

import nbflow as nf
from nbflow.executors import dask_cluster

# Functions of this module travel to workers by value, like notebook functions do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LOCK = threading.Lock()


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

    t0 = time.monotonic()
    run = flow.run(executor="dask")
    elapsed = time.monotonic() - t0
    assert run.results["total"] == sum(i * i + 1 for i in range(1000))
    assert run.task("plus").branches == 1000
    assert run.results["plus"][:3] == [1, 2, 5]
    assert elapsed < 60, elapsed


class RecordingDaskExecutor(nf.DaskExecutor):
    """Notes when each task went to dask (duplicates share the list)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, float]] = []

    def _submit_group(self, items):
        self.sent += [(item.task, time.time()) for item in items]
        super()._submit_group(items)


def test_a_chain_goes_to_dask_before_its_first_task_ends(local):
    flow = nf.Flow("chained")

    @flow.task
    def first():
        time.sleep(1.0)
        return 1

    @flow.task
    def second(first):
        print("second runs")
        return first + 1

    @flow.task
    def third(second, first):
        return second * 10 + first

    executor = RecordingDaskExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["third"] == 21
    assert run.states == {"first": "succeeded", "second": "succeeded", "third": "succeeded"}
    sent = dict(executor.sent)
    assert set(sent) == {"first", "second", "third"}
    first_ended = run.task("first").ended
    assert sent["second"] < first_ended and sent["third"] < first_ended
    for name in ("first", "second", "third"):
        rec = run.task(name)
        assert rec.attempts == 1 and rec.where is not None and rec.where.startswith("inproc://")
    # the report of a chained task arrives with it: output, and it started after its upstream
    assert run.task("second").output[None].text() == "second runs\n"
    assert run.task("second").started >= first_ended - 0.05


def test_a_fan_in_goes_to_dask_when_the_last_branch_does(local):
    flow = nf.Flow("fan_in_chained")

    @flow.task
    def parts():
        return [0.3, 0.5, 0.4]

    @flow.task(map="parts")
    def slow_part(parts):
        time.sleep(parts)
        return parts * 10

    @flow.task
    def add_up(slow_part):
        return sum(slow_part)

    executor = RecordingDaskExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["add_up"] == 12.0
    sent = dict(executor.sent)
    assert sent["add_up"] < run.task("slow_part").ended
    assert run.task("add_up").attempts == 1 and run.states["add_up"] == "succeeded"


def test_a_failure_inside_a_chain_skips_the_rest_and_cancels_their_futures(local):
    flow = nf.Flow("chain_failure")

    @flow.task
    def head():
        time.sleep(0.3)
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

    run = flow.run(executor="dask", raise_on_failure=False)
    assert run.states == {"head": "succeeded", "breaks": "failed", "chained_tail": "skipped",
                          "chained_end": "skipped"}
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
    deadline = time.monotonic() + timeout
    while (keys := _scheduler_keys(prefix)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return keys


def _scheduler_keys(prefix: str) -> list[str]:
    from distributed import Client

    cluster = dask_cluster.current_local_cluster()
    assert cluster is not None
    with Client(cluster.scheduler_address, timeout=10) as client:
        keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
    return [k for k in keys if k.startswith(prefix)]


def test_timeout_cancels_the_dask_future(local):
    flow = nf.Flow("timeout")

    @flow.task(timeout=0.5)
    def sleepy_timeout():
        time.sleep(3)
        return 1

    t0 = time.monotonic()
    run = flow.run(executor="dask", raise_on_failure=False)
    assert time.monotonic() - t0 < 2.5
    assert isinstance(run.failures[0].error, nf.TaskTimeoutError)
    assert _keys_gone("sleepy_timeout-") == []


def test_cancel_cancels_outstanding_futures(local):
    flow = nf.Flow("cancel")

    @flow.task
    def start():
        return 1

    @flow.task(map="start_list")
    def sleepy_cancel(start_list):
        time.sleep(2)
        return start_list

    @flow.task
    def start_list(start):
        return list(range(8))

    run = flow.run(executor="dask", background=True)
    deadline = time.monotonic() + 20
    while run.states.get("sleepy_cancel") != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _scheduler_keys("sleepy_cancel-")
    t0 = time.monotonic()
    run.cancel()
    run.wait(10)
    assert run.status == "cancelled"
    assert time.monotonic() - t0 < 2
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


def test_unreachable_scheduler_is_a_clear_error_in_bounded_time():
    from dask_clusters import free_port

    flow = nf.Flow("unreachable")
    flow.task(name="one")(lambda: 1)
    address = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(nf.ExecutorError, match="cannot reach the dask scheduler at tcp://127"):
        flow.run(executor=nf.DaskExecutor(address, connect_timeout=2))
    assert time.monotonic() - t0 < 15


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
