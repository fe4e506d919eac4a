"""Chain fusion on dask (``nbflow/fusion.py``): a chain runs as one dask task, and the run
sees every inner task as if it had run on its own.

Each test compares with ``fuse_chains=False`` where semantics are at stake: states,
results, attempts and failures must be the same. Nothing sleeps: a task that must
still run while the test looks blocks on a file the test creates.
"""

from __future__ import annotations

import os
import sys
import threading

import cloudpickle
import pytest
import test_random_dags
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)
from dask_clusters import wait_until
from hypothesis import HealthCheck, given, settings
from test_random_dags import random_flows, reference

import nbflow as nf
from nbflow import config
from nbflow.errors import TaskTimeoutError

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _wait_for_file(path: str, timeout: float = 30) -> None:
    """In a task: block until ``path`` exists (the test's go-ahead)."""
    wait_until(lambda: os.path.exists(path), timeout, f"{path} to be created")


class CountingExecutor(nf.DaskExecutor):
    """A DaskExecutor that records the tasks of every fused chain it sends (shared by the
    duplicate each run works on)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused: list[list[str]] = []
        self.single: list[str] = []

    def _submit_fused(self, units):
        self.fused += [[item.task for item in unit] for unit in units]
        super()._submit_fused(units)

    def _submit_group(self, items):
        self.single.extend(item.task for item in items)
        super()._submit_group(items)


def chain_flow(n: int, name: str = "chain", cache: bool = False, store=None,
               **options) -> nf.Flow:
    """t0 -> t1 -> ... -> t{n-1}, each adding one and printing its name."""
    flow = nf.Flow(name, cache=store)
    flow.add(nf.Task.from_function(lambda: print("t0") or 0, name="t0", options={"cache": cache}))
    for i in range(1, n):
        fn = eval(f"lambda t{i - 1}: print('t{i}') or t{i - 1} + 1")
        flow.add(nf.Task.from_function(fn, name=f"t{i}", options={"cache": cache, **options}))
    return flow


def run_both(make_flow, local, **run_options):
    """Run a fresh flow from ``make_flow()`` fused and unfused: (executor, run) for each."""
    out = []
    for fuse in (True, False):
        executor = CountingExecutor(local)
        with config.set(fuse_chains=fuse):
            run = make_flow().run(executor=executor, raise_on_failure=False, **run_options)
        out.append((executor, run))
    return out


def test_a_chain_runs_as_one_dask_task_and_reports_every_inner_task(local):
    events = []
    executor = CountingExecutor(local)
    run = chain_flow(6).run(executor=executor, observers=[events.extend])
    assert executor.fused == [[f"t{i}" for i in range(6)]] and executor.single == []
    assert run.results["t5"] == 5
    assert run.results["t2"] == 2  # an intermediate result stays readable
    for i in range(6):
        view = run.task(f"t{i}")
        assert view.state == "succeeded" and view.attempts == 1
        assert view.where is not None and view.where.startswith("inproc://")
        assert view.output[None].text() == f"t{i}\n"
        states = [e.state for e in events if getattr(e, "task", None) == f"t{i}"]
        assert states[-1] == "succeeded" and "running" in states
    starts = [run.task(f"t{i}").started for i in range(6)]
    ends = [run.task(f"t{i}").ended for i in range(6)]
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends))


def test_the_setting_turns_fusion_off(local):
    (fused_ex, fused), (plain_ex, plain) = run_both(lambda: chain_flow(5), local)
    assert len(fused_ex.fused) == 1 and plain_ex.fused == []
    assert sorted(plain_ex.single) == sorted(f"t{i}" for i in range(5))
    assert dict(fused.results) == dict(plain.results) and fused.states == plain.states


def test_only_chains_are_fused(local):
    """A task with two downstreams, or two upstreams, ends a fused chain."""
    flow = nf.Flow("shape")
    for name, fn in [("a", lambda: 1), ("b", lambda a: a + 1), ("c", lambda b: b + 1),
                     ("d", lambda b: b * 2), ("e", lambda c, d: c + d), ("f", lambda e: e + 1)]:
        flow.add(nf.Task.from_function(fn, name=name, options={"cache": False}))
    executor = CountingExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["f"] == 8
    assert executor.fused == [["a", "b"], ["e", "f"]]


def test_a_failure_in_the_middle_fails_that_task_and_skips_the_rest(local):
    def make():
        flow = chain_flow(2, "mid")
        flow.add(nf.Task.from_function(lambda t1: 1 / 0, name="breaks", options={"cache": False}))
        flow.add(nf.Task.from_function(lambda breaks: breaks, name="after", options={"cache": False}))
        flow.add(nf.Task.from_function(lambda after: after, name="end", options={"cache": False}))
        return flow

    (fused_ex, fused), (_, plain) = run_both(make, local)
    assert fused_ex.fused == [["t0", "t1", "breaks", "after", "end"]]
    assert fused.states == plain.states == {"t0": "succeeded", "t1": "succeeded",
                                            "breaks": "failed", "after": "skipped",
                                            "end": "skipped"}
    [failure] = fused.failures
    assert failure.task == "breaks" and isinstance(failure.error, ZeroDivisionError)
    assert "1 / 0" in failure.traceback
    assert fused.task("after").attempts == 0 and fused.task("end").attempts == 0
    assert fused.results["t1"] == 1
    assert fused.story("after")[-1][2] == "skipped"


@pytest.mark.parametrize("rule", ["success", "failure", "always"])
@pytest.mark.parametrize("fails", [False, True])
def test_trigger_rules_after_a_fused_chain(local, rule, fails):
    """A task with run_on other than "success" is not fused, and sees what it would."""
    def make():
        flow = chain_flow(3, f"rules_{rule}")
        body = (lambda t2: 1 / 0) if fails else (lambda t2: t2)
        flow.add(nf.Task.from_function(body, name="maybe", options={"cache": False}))
        flow.add(nf.Task.from_function(lambda maybe: type(maybe).__name__, name="rule",
                                       options={"cache": False, "run_on": rule}))
        flow.add(nf.Task.from_function(lambda rule: rule, name="last", options={"cache": False}))
        return flow

    (fused_ex, fused), (_, plain) = run_both(make, local)
    assert fused.states == plain.states
    assert dict(fused.results) == dict(plain.results)
    if rule == "success":
        assert fused_ex.fused == [["t0", "t1", "t2", "maybe", "rule", "last"]]
    else:  # "rule" is handed out once "maybe" ended: it heads a chain, never joins one
        assert fused_ex.fused[0] == ["t0", "t1", "t2", "maybe"]
        assert all(unit.index("rule") == 0 for unit in fused_ex.fused if "rule" in unit)


def test_a_retried_inner_task_runs_again_and_the_chain_goes_on(local, tmp_path):
    def make():
        marker = tmp_path / f"tries-{len(os.listdir(tmp_path))}"
        marker.mkdir()

        def wobbly(t1, path: str = str(marker)):
            tries = len(os.listdir(path))
            open(os.path.join(path, str(tries)), "w").close()
            if tries == 0:
                raise RuntimeError("first try fails")
            return t1 * 10

        flow = chain_flow(2, "retry")
        flow.add(nf.Task.from_function(wobbly, options={"cache": False, "retries": 1}))
        flow.add(nf.Task.from_function(lambda wobbly: wobbly + 1, name="after",
                                       options={"cache": False}))
        return flow

    (fused_ex, fused), (_, plain) = run_both(make, local)
    assert fused.states == plain.states and all(s == "succeeded" for s in fused.states.values())
    assert fused.results["after"] == plain.results["after"] == 11
    assert fused.task("wobbly").attempts == plain.task("wobbly").attempts == 2
    assert fused.task("after").attempts == 1
    # the first chain stopped at the failure; the retry heads a chain of its own
    assert fused_ex.fused == [["t0", "t1", "wobbly", "after"], ["wobbly", "after"]]


def test_a_task_with_a_timeout_is_not_fused_and_times_out_as_usual(local, tmp_path):
    release = tmp_path / "release"

    def slow(t1, path: str = str(release)):
        _wait_for_file(path)
        return t1

    flow = chain_flow(2, "timeout")
    flow.add(nf.Task.from_function(slow, options={"cache": False, "timeout": 0.5}))
    flow.add(nf.Task.from_function(lambda slow: slow, name="after", options={"cache": False}))
    executor = CountingExecutor(local)
    try:
        run = flow.run(executor=executor, raise_on_failure=False)
    finally:
        release.touch()
    assert run.states == {"t0": "succeeded", "t1": "succeeded", "slow": "failed",
                          "after": "skipped"}
    assert isinstance(run.failures[0].error, TaskTimeoutError)
    assert not any("slow" in unit for unit in executor.fused)


def test_cancelling_a_run_cancels_every_task_of_a_running_fused_chain(local, tmp_path):
    gate = tmp_path / "gate"

    def head(path: str = str(gate)):
        _wait_for_file(path)
        return 1

    flow = nf.Flow("cancel")
    flow.add(nf.Task.from_function(head, options={"cache": False}))
    flow.add(nf.Task.from_function(lambda head: head + 1, name="b", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda b: b + 1, name="c", options={"cache": False}))
    executor = CountingExecutor(local)
    run = flow.run(executor=executor, background=True)
    try:
        wait_until(lambda: run.states["head"] == "running", 30, "the head to run")
        assert executor.fused == [["head", "b", "c"]]
        run.cancel()
        run.wait()
    finally:
        gate.touch()
    assert run.status == "cancelled"
    assert set(run.states.values()) == {"cancelled"}


def test_a_mapped_upstream_ends_a_chain(local):
    """Mapped tasks are not fused (their branches go as one client.map); what follows
    their fan-in is."""
    flow = nf.Flow("mapped")
    flow.add(nf.Task.from_function(lambda: [1, 2, 3], name="items", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda items: items * 2, name="double",
                                   options={"cache": False, "map": "items"}))
    flow.add(nf.Task.from_function(lambda double: sum(double), name="total",
                                   options={"cache": False}))
    flow.add(nf.Task.from_function(lambda total: total + 1, name="plus", options={"cache": False}))
    executor = CountingExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["plus"] == 13 and run.results["double"] == [2, 4, 6]
    assert ["total", "plus"] in executor.fused
    assert not any("double" in unit for unit in executor.fused)


def elementwise_flow(name: str = "ew", fail_on=(), retry_path=None) -> nf.Flow:
    """root -> a -> b -> c, each step mapped element-wise over the one before; ``b``
    fails on the items in ``fail_on`` (with ``retry_path``: the first time only)."""
    def b(a, bad: tuple = tuple(fail_on), path: str | None = retry_path):
        if a in bad:
            if path is None:
                raise ValueError(f"b fails on {a}")
            mark = os.path.join(path, str(a))
            if not os.path.exists(mark):
                open(mark, "w").close()
                raise ValueError(f"b fails on {a} the first time")
        print(f"b{a}")
        return a * 10

    flow = nf.Flow(name)
    flow.add(nf.Task.from_function(lambda: list(range(6)), name="root", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda root: root + 1, name="a",
                                   options={"cache": False, "map": "root"}))
    flow.add(nf.Task.from_function(b, options={"cache": False, "map": "a",
                                               "retries": 1 if retry_path else 0}))
    flow.add(nf.Task.from_function(lambda b: b + 1, name="c", options={"cache": False, "map": "b"}))
    return flow


def test_element_wise_chains_fuse_per_branch(local):
    events = []
    executor = CountingExecutor(local)
    run = elementwise_flow().run(executor=executor, observers=[events.extend])
    assert executor.fused == [["a", "b", "c"]] * 6
    assert run.results["c"] == [(i + 1) * 10 + 1 for i in range(6)]
    assert run.results["a"] == [1, 2, 3, 4, 5, 6]  # intermediate branches stay readable
    assert run.task("b").output[3].text() == "b4\n"
    branch_states = {(e.task, e.branch) for e in events
                     if getattr(e, "branch", None) is not None and e.state == "succeeded"}
    assert branch_states == {(t, i) for t in "abc" for i in range(6)}


def test_a_failed_branch_in_a_fused_chain_skips_the_rest_of_that_branch(local):
    (fused_ex, fused), (plain_ex, plain) = run_both(
        lambda: elementwise_flow("ew_fail", fail_on=(2, 5)), local)
    assert fused_ex.fused == [["a", "b", "c"]] * 6 and plain_ex.fused == []
    assert fused.states == plain.states == {"root": "succeeded", "a": "succeeded",
                                            "b": "failed", "c": "skipped"}
    assert ({f.label for f in fused.failures} == {f.label for f in plain.failures}
            == {"b[1]", "b[4]"})
    c = fused.task("c")
    assert c.counts == plain.task("c").counts == {"succeeded": 4, "skipped": 2}


def test_a_retried_branch_in_a_fused_chain(local, tmp_path):
    def make():
        path = tmp_path / f"run{len(os.listdir(tmp_path))}"
        path.mkdir()
        return elementwise_flow("ew_retry", fail_on=(3,), retry_path=str(path))

    (fused_ex, fused), (_, plain) = run_both(make, local)
    assert fused.states == plain.states and set(fused.states.values()) == {"succeeded"}
    assert fused.results["c"] == plain.results["c"] == [(i + 1) * 10 + 1 for i in range(6)]
    assert fused_ex.fused[:6] == [["a", "b", "c"]] * 6
    assert ["b", "c"] in fused_ex.fused[6:]  # the retry heads a chain of its own


def test_a_fused_result_is_cached_and_mapped_over(local):
    """An inner result reaches the (memory) cache and can be split for a map."""
    flow = nf.Flow("cached")
    flow.add(nf.Task.from_function(lambda: 3, name="n"))
    flow.add(nf.Task.from_function(lambda n: list(range(n)), name="items"))
    flow.add(nf.Task.from_function(lambda items: items + 1, name="inc", options={"map": "items"}))
    executor = CountingExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["inc"] == [1, 2, 3]
    assert ["n", "items"] in executor.fused
    rerun = flow.run(executor=CountingExecutor(local))
    assert rerun.states == {"n": "cached", "items": "cached", "inc": "cached"}
    assert rerun.results["inc"] == [1, 2, 3] and rerun.results["items"] == [0, 1, 2]


def test_tasks_cached_on_disk_are_not_fused(local, tmp_path):
    """A disk cache is looked up in the background: each hop is handed over on its own."""
    flow = chain_flow(4, "disk", cache=True, store=nf.DiskStore(tmp_path / "cache"))
    executor = CountingExecutor(local)
    run = flow.run(executor=executor)
    assert run.results["t3"] == 3
    assert all("t2" not in unit[1:] for unit in executor.fused)


class _NoLog:
    """The random flows' call log, as a no-op that pickles (dask sends the functions)."""

    def enter(self, name):
        pass

    def leave(self, name):
        pass


_lock = threading.Lock()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(random_flows())
def test_random_flows_fused_and_unfused(local, flow_spec):
    """Random DAGs on dask: fusion on and off give the sequential model's states and results."""
    parents, mapped, behaviour = flow_spec
    # on dask an input is the upstream's object on the same worker: no in-place mutation;
    # a task raises an Exception (a worker thread is no place for SystemExit)
    behaviour = {k: "plain" if v == "mutate" else v for k, v in behaviour.items()}
    states, values, _ = reference(parents, mapped, behaviour)
    with _lock:
        saved, test_random_dags.RAISED = test_random_dags.RAISED, (ValueError("plain"),)
        try:
            flows = [test_random_dags.build(parents, mapped, behaviour, _NoLog())
                     for _ in range(2)]
        finally:
            test_random_dags.RAISED = saved
    for fuse, flow in zip((True, False), flows):
        with config.set(fuse_chains=fuse):
            run = flow.run(executor=nf.DaskExecutor(local), raise_on_failure=False)
        assert run.states == states, fuse
        assert dict(run.results) == values, fuse
