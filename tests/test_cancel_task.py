"""Cancelling one task while the rest of the run goes on (``run.cancel(task)``)."""

from __future__ import annotations

import threading

import pytest
from test_chaining import chain, chaining, take_all
from test_transitions import branch_states, diamond, finish, machine, map_chain, names, state

import nbflow as nf
from nbflow.messages import (
    CacheAnswer,
    CancelRunning,
    CancelTask,
    LookupCache,
    RunFinished,
    SplitAnswer,
    Start,
    Take,
)
from nbflow.values import Skipped


def test_a_running_task_is_cancelled_and_its_downstream_skipped():
    sm = machine(diamond())
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], 1)
    b, c = sm.handle(Take(2))
    out = sm.handle(CancelTask(1))
    assert out == [CancelRunning([((1, None), 1)])]
    assert state(sm, "b") == "cancelled" and state(sm, "c") == "running"
    assert finish(sm, b, 2) == []  # a late answer changes nothing
    assert finish(sm, c, 3) == [RunFinished("cancelled")]
    assert state(sm, "d") == "skipped"
    assert sm.view(3).skip_reason == "upstream 'b' was cancelled"
    assert sm.handle(CancelTask(1)) == [] and sm.handle(CancelTask(3)) == []
    sm.validate_state()


def test_a_pending_task_is_cancelled_before_it_could_start():
    sm = machine(diamond())
    sm.handle(Start())
    a = sm.handle(Take(1))[0]
    sm.handle(CancelTask(3))  # d waits for b and c
    finish(sm, a, 1)
    for ex in sm.handle(Take(10)):
        finish(sm, ex, 1)
    assert [v.state for v in sm.views()] == ["succeeded", "succeeded", "succeeded", "cancelled"]
    assert sm.status == "cancelled"
    sm.validate_state()


def test_always_tasks_get_a_skipped_marker_for_a_cancelled_upstream():
    flow = nf.Flow("x")
    flow.add(nf.Task.from_function(lambda: 1, name="a", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda a: a, name="cleanup",
                                   options={"cache": False, "run_on": "always"}))
    sm = machine(flow)
    sm.handle(Start())
    sm.handle(Take(1))
    sm.handle(CancelTask(0))
    [cleanup] = sm.handle(Take(1))
    assert cleanup.kwargs == {"a": Skipped("a", "cancelled")}


def test_a_mapped_task_cancels_every_open_branch():
    sm = machine(map_chain(fan_in=True, max_parallel=2))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2, 3, 4])
    sm.handle(SplitAnswer(0, [1, 2, 3, 4]))
    f0, f1 = sm.handle(Take(10))  # two run, two wait for max_parallel
    finish(sm, f0, 1)
    g0 = sorted(sm.handle(Take(10)), key=lambda e: e.item)
    assert names(sm, g0) == [("f", 2), ("g", 0)]
    out = sm.handle(CancelTask(1))
    assert out[0] == CancelRunning([((1, 1), 1), ((1, 2), 1)])
    assert branch_states(sm, 1) == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert sm.view(1).state == "cancelled"
    assert sm.handle(Take(10)) == []  # nothing of f starts any more
    assert branch_states(sm, 2)[1:] == ["skipped"] * 3  # element-wise branches of cancelled ones
    # g has skipped branches, so no complete result: it is skipped, and so is its fan-in
    # (a skipped branch never reaches a fan-in as data, issue 20)
    assert finish(sm, g0[1], 1) == [RunFinished("cancelled")]
    assert sm.view(2).state == "skipped" and sm.view(3).state == "skipped"
    assert isinstance(sm.records[2].result[1], Skipped)
    assert sm.handle(Take(1)) == []
    sm.validate_state()


def test_answers_for_a_cancelled_task_are_ignored():
    sm = machine(diamond(cache=True))
    [lookup] = sm.handle(Start())
    sm.handle(CancelTask(0))
    assert sm.handle(CacheAnswer(lookup.item, True, 1)) == []
    assert [v.state for v in sm.views()] == ["cancelled", "skipped", "skipped", "skipped"]
    assert sm.status == "cancelled"
    assert not any(isinstance(i, LookupCache) for i in sm.handle(Take(10)))


def test_cancelling_a_chained_task_cancels_what_was_chained_onto_it():
    sm = chaining(chain(3))
    sm.handle(Start())
    t0, t1, t2 = take_all(sm)
    out = sm.handle(CancelTask(1))
    assert CancelRunning([((1, None), 1)]) in out and CancelRunning([((2, None), 1)]) in out
    finish(sm, t1, 1)
    finish(sm, t2, 2)
    assert [v.state for v in sm.views()] == ["running", "cancelled", "skipped"]
    assert [v.attempts for v in sm.views()] == [1, 0, 0]
    assert finish(sm, t0, 0) == [RunFinished("cancelled")]
    sm.validate_state()


def test_run_cancel_task_with_threads():
    release = threading.Event()
    started = threading.Event()
    flow = nf.Flow("partial")

    @flow.task
    def slow():
        started.set()
        release.wait(10)
        return "slow"

    @flow.task
    def after_slow(slow):
        return slow

    quick_started = threading.Event()
    quick_may_end = threading.Event()

    @flow.task
    def quick():
        quick_started.set()
        quick_may_end.wait(10)
        return "quick"

    run = flow.run(background=True)
    assert started.wait(10) and quick_started.wait(10)
    with pytest.raises(nf.UnknownTaskError, match="Did you mean 'slow'") as info:
        run.cancel("slw")  # a one-line error naming the task, not a missing result
    assert str(info.value).startswith("run.cancel() names 'slw', which is not a task")
    assert "\n" not in str(info.value)
    run.cancel("slow")
    # quick was running when slow was cancelled; it goes on and ends after
    quick_may_end.set()
    run.wait(10)
    release.set()
    assert run.status == "cancelled"
    assert run.states == {"slow": "cancelled", "after_slow": "skipped", "quick": "succeeded"}
    assert run.results["quick"] == "quick"
