"""The state machine alone: feed stimuli, assert instructions and states. No loop, no threads."""

from __future__ import annotations

import pytest

import nbflow as nf
from nbflow.events import EventBus
from nbflow.messages import (
    CacheAnswer,
    Cancel,
    CancelRunning,
    CheckCondition,
    ConditionAnswer,
    Finished,
    LookupCache,
    RetryDue,
    RetryLater,
    RunFinished,
    SplitAnswer,
    SplitResult,
    Start,
    StoreResult,
    Take,
    TimedOut,
)
from nbflow.transitions import Transitions
from nbflow.values import Failed, Skipped


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class ListBus:
    """Collects events synchronously (the real bus delivers on a thread)."""

    active = True
    tasks = True
    branches = True

    def __init__(self, events):
        self.emit = events.append


def machine(flow, targets=None, params=None, events=None):
    bus = EventBus() if events is None else ListBus(events)
    sm = Transitions(flow.plan(targets, params), "run1", bus, clock=Clock())
    return sm


def names(sm, executes):
    return [(sm.plan.tasks[e.item[0]].name, e.item[1]) for e in executes]


def finish(sm, ex, value=None, ok=True):
    return sm.handle(Finished((ex.item, ex.attempt), ok, value, 0.0, 0.0))


def fail(sm, ex, exc=None):
    err = Failed.from_exception(sm.plan.tasks[ex.item[0]].name, exc or ValueError("boom"),
                                ex.item[1], ex.attempt)
    return sm.handle(Finished((ex.item, ex.attempt), False, err, 0.0, 0.0))


def state(sm, name):
    return sm.view(sm.plan.by_name[name].index).state


def branch_states(sm, t):
    """The states of a mapped task's branches (the machine's own records)."""
    return [item.phase for item in sm.records[t].items]


def diamond(cache=False):
    flow = nf.Flow("d")

    @flow.task(cache=cache)
    def a():
        return 1

    @flow.task(cache=cache)
    def b(a):
        return a + 1

    @flow.task(cache=cache)
    def c(a):
        return a + 2

    @flow.task(cache=cache)
    def d(b, c):
        return b + c

    return flow


def test_diamond_runs_in_dependency_order():
    sm = machine(diamond())
    assert sm.handle(Start()) == []
    first = sm.handle(Take(10))
    assert names(sm, first) == [("a", None)]
    assert sm.handle(Take(10)) == []
    assert finish(sm, first[0], 1) == []
    second = sm.handle(Take(10))
    assert names(sm, second) == [("b", None), ("c", None)]
    assert second[0].kwargs == {"a": 1}
    finish(sm, second[0], 2)
    assert sm.handle(Take(10)) == []  # d still waits for c
    finish(sm, second[1], 3)
    third = sm.handle(Take(10))
    assert third[0].kwargs == {"b": 2, "c": 3}
    out = finish(sm, third[0], 5)
    assert out == [RunFinished("succeeded")]
    assert sm.status == "succeeded"
    sm.validate_state()


def test_take_respects_the_limit_and_priority():
    flow = nf.Flow("p")
    for name, prio in [("low", 0), ("high", 5), ("mid", 2)]:
        flow.add(nf.Task.from_function(lambda: 1, name=name,
                                       options={"priority": prio, "cache": False}))
    sm = machine(flow)
    sm.handle(Start())
    assert names(sm, sm.handle(Take(1))) == [("high", None)]
    assert names(sm, sm.handle(Take(5))) == [("mid", None), ("low", None)]


def test_failure_skips_downstream_but_siblings_finish():
    sm = machine(diamond())
    sm.handle(Start())
    a = sm.handle(Take(1))[0]
    finish(sm, a, 1)
    b, c = sm.handle(Take(2))
    fail(sm, b)
    assert state(sm, "b") == "failed"
    assert state(sm, "c") == "running"
    out = finish(sm, c, 3)
    assert state(sm, "d") == "skipped"
    assert out == [RunFinished("failed")]
    rec = sm.view(sm.plan.by_name["d"].index)
    assert "upstream 'b' failed" in rec.skip_reason
    sm.validate_state()


def test_retries_then_fail():
    flow = nf.Flow("r")

    @flow.task(retries=2, retry_delay=1.5, cache=False)
    def flaky():
        return 1

    sm = machine(flow)
    sm.handle(Start())
    ex = sm.handle(Take(1))[0]
    assert ex.attempt == 1
    out = fail(sm, ex)
    assert out == [RetryLater((0, None), 2, 1.5)]
    assert state(sm, "flaky") == "retrying"
    assert sm.handle(Take(1)) == []
    sm.handle(RetryDue((0, None), 2))
    ex2 = sm.handle(Take(1))[0]
    assert ex2.attempt == 2
    assert fail(sm, ex2) == [RetryLater((0, None), 3, 1.5)]
    sm.handle(RetryDue((0, None), 3))
    ex3 = sm.handle(Take(1))[0]
    out = fail(sm, ex3)
    assert out == [RunFinished("failed")]
    assert sm.view(0).attempts == 3
    assert sm.view(0).error.attempt == 3


def test_a_late_answer_from_an_old_attempt_is_ignored():
    flow = nf.Flow("r")

    @flow.task(retries=1, timeout=1, cache=False)
    def slow():
        return 1

    sm = machine(flow)
    sm.handle(Start())
    ex = sm.handle(Take(1))[0]
    out = sm.handle(TimedOut(ex.item, ex.attempt))
    assert CancelRunning([(ex.item, 1)]) in out
    assert any(isinstance(i, RetryLater) for i in out)
    assert finish(sm, ex, "late") == []  # attempt 1 was abandoned
    sm.handle(RetryDue(ex.item, 2))
    ex2 = sm.handle(Take(1))[0]
    assert finish(sm, ex2, "ok") == [RunFinished("succeeded")]
    assert sm.result(0) == "ok"


def test_timeout_without_retries_fails_with_timeout_error():
    flow = nf.Flow("t")

    @flow.task(timeout=0.5, cache=False)
    def slow():
        return 1

    sm = machine(flow)
    sm.handle(Start())
    ex = sm.handle(Take(1))[0]
    out = sm.handle(TimedOut(ex.item, ex.attempt))
    assert out[-1] == RunFinished("failed")
    assert isinstance(sm.view(0).error.error, nf.TaskTimeoutError)


def test_run_on_failure_and_always_receive_failed_values():
    flow = nf.Flow("h")

    @flow.task(cache=False)
    def work():
        return 1

    @flow.task(run_on="failure", cache=False)
    def alert(work):
        return work

    @flow.task(run_on="always", cache=False)
    def cleanup(work):
        return work

    sm = machine(flow)
    sm.handle(Start())
    fail(sm, sm.handle(Take(1))[0])
    ready = sm.handle(Take(5))
    assert names(sm, ready) == [("alert", None), ("cleanup", None)]
    for ex in ready:
        assert isinstance(ex.kwargs["work"], Failed)
        assert ex.kwargs["work"].task == "work"


def test_run_on_failure_is_skipped_when_nothing_failed():
    flow = nf.Flow("h")

    @flow.task(cache=False)
    def work():
        return 1

    @flow.task(run_on="failure", cache=False)
    def alert(work):
        return work

    sm = machine(flow)
    sm.handle(Start())
    out = finish(sm, sm.handle(Take(1))[0], 1)
    assert state(sm, "alert") == "skipped"
    assert out == [RunFinished("succeeded")]


def test_always_gets_skipped_marker_for_skipped_upstream():
    flow = nf.Flow("s")

    @flow.task(cache=False)
    def a():
        return 1

    @flow.task(cache=False)
    def b(a):
        return a

    @flow.task(run_on="always", cache=False)
    def c(b):
        return b

    sm = machine(flow)
    sm.handle(Start())
    fail(sm, sm.handle(Take(1))[0])
    assert state(sm, "b") == "skipped"
    ex = sm.handle(Take(1))[0]
    assert isinstance(ex.kwargs["b"], Skipped)


def test_run_if_asks_for_a_condition():
    flow = nf.Flow("c")

    @flow.task(cache=False)
    def a():
        return 1

    @flow.task(run_if=lambda a: a > 5, cache=False)
    def b(a):
        return a

    @flow.task(cache=False)
    def c(b):
        return b

    sm = machine(flow)
    sm.handle(Start())
    out = finish(sm, sm.handle(Take(1))[0], 1)
    assert out == [CheckCondition((1, None), {"a": 1})]
    out = sm.handle(ConditionAnswer((1, None), False))
    assert state(sm, "b") == "skipped" and state(sm, "c") == "skipped"
    assert out == [RunFinished("succeeded")]


def test_fan_out_split_and_fan_in_order():
    flow = nf.Flow("m")

    @flow.task(cache=False)
    def items():
        return [10, 20, 30]

    @flow.task(map="items", cache=False)
    def double(items):
        return items * 2

    @flow.task(cache=False)
    def total(double):
        return double

    sm = machine(flow)
    sm.handle(Start())
    out = finish(sm, sm.handle(Take(1))[0], [10, 20, 30])
    assert out == [SplitResult(0, [10, 20, 30], (1,))]
    sm.handle(SplitAnswer(0, [10, 20, 30]))
    branches = sm.handle(Take(10))
    assert names(sm, branches) == [("double", 0), ("double", 1), ("double", 2)]
    assert [b.kwargs["items"] for b in branches] == [10, 20, 30]
    # finish out of order: the fan-in still gets input order
    for ex in reversed(branches):
        finish(sm, ex, ex.kwargs["items"] * 2)
    fan_in = sm.handle(Take(1))[0]
    assert fan_in.kwargs == {"double": [20, 40, 60]}
    sm.validate_state()


def map_chain(*, elementwise: bool = True, fan_in: bool = False, **f_options) -> nf.Flow:
    """items -> f (maps over items) [-> g (maps over f)] [-> total (gets g's list)].

    The bodies never run here: the tests feed each item's value with ``finish``.
    """
    flow = nf.Flow("e")
    flow.add(nf.Task.from_function(lambda: [], name="items", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda items: items, name="f",
                                   options={"map": "items", "cache": False, **f_options}))
    if elementwise:
        flow.add(nf.Task.from_function(lambda f: f, name="g",
                                       options={"map": "f", "cache": False}))
    if fan_in:
        flow.add(nf.Task.from_function(lambda g: g, name="total", options={"cache": False}))
    return flow


def test_elementwise_chain_has_no_barrier():
    sm = machine(map_chain())
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2])
    sm.handle(SplitAnswer(0, [1, 2]))
    f0, f1 = sm.handle(Take(10))
    finish(sm, f1, "f1")
    # g[1] is ready although f[0] still runs
    ready = sm.handle(Take(10))
    assert names(sm, ready) == [("g", 1)]
    assert ready[0].kwargs == {"f": "f1"}
    assert state(sm, "f") == "running"
    sm.validate_state()


def test_elementwise_failure_skips_only_that_branch():
    sm = machine(map_chain())
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2, 3])
    sm.handle(SplitAnswer(0, [1, 2, 3]))
    f0, f1, f2 = sm.handle(Take(10))
    fail(sm, f1)
    finish(sm, f0, 1)
    finish(sm, f2, 3)
    gs = sm.handle(Take(10))
    assert names(sm, gs) == [("g", 0), ("g", 2)]
    for ex in gs:
        finish(sm, ex, ex.kwargs["f"])
    assert branch_states(sm, 2) == ["succeeded", "skipped", "succeeded"]
    # g has no complete result: it is not "succeeded" (issue 20), and says why
    assert state(sm, "f") == "failed" and state(sm, "g") == "skipped"
    assert sm.view(2).skip_reason == "1 of 3 branches skipped (g[1]: upstream f[1] failed)"
    assert sm.result(2) is None
    assert isinstance(sm.records[2].result[1], Skipped)
    assert sm.status == "failed"


def test_a_fan_in_never_gets_a_skipped_branch_as_data():
    sm = machine(map_chain(fan_in=True))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2, 3])
    sm.handle(SplitAnswer(0, [1, 2, 3]))
    f0, f1, f2 = sm.handle(Take(10))
    fail(sm, f1)
    finish(sm, f0, 1)
    finish(sm, f2, 3)
    g0, g2 = sm.handle(Take(10))
    finish(sm, g0, 1)
    out = finish(sm, g2, 3)
    assert out == [RunFinished("failed")]  # total never ran
    assert [state(sm, n) for n in ("f", "g", "total")] == ["failed", "skipped", "skipped"]
    assert sm.view(3).skip_reason == "upstream 'g' was skipped"
    sm.validate_state()


def test_map_over_empty_list():
    sm = machine(map_chain(fan_in=True))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [])
    sm.handle(SplitAnswer(0, []))
    ex = sm.handle(Take(1))[0]
    assert ex.kwargs == {"g": []}


def test_split_failure_fails_the_mapping_task():
    sm = machine(map_chain(elementwise=False))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], 5)
    err = Failed.from_exception("items", TypeError("not iterable"))
    out = sm.handle(SplitAnswer(0, err))
    assert state(sm, "f") == "failed"
    assert out == [RunFinished("failed")]


def test_max_parallel_defers_branches():
    sm = machine(map_chain(elementwise=False, max_parallel=2))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2, 3, 4])
    sm.handle(SplitAnswer(0, [1, 2, 3, 4]))
    first = sm.handle(Take(10))
    assert len(first) == 2
    finish(sm, first[0], 1)
    nxt = sm.handle(Take(10))
    assert len(nxt) == 1 and nxt[0].item == (1, 2)


def test_cancel_stops_everything_and_lists_running_items():
    sm = machine(diamond())
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], 1)
    b, c = sm.handle(Take(2))
    out = sm.handle(Cancel())
    assert out[0] == CancelRunning([((1, None), 1), ((2, None), 1)])
    assert out[-1] == RunFinished("cancelled")
    assert [v.state for v in sm.views()] == ["succeeded", "cancelled", "cancelled", "cancelled"]
    assert finish(sm, b, 2) == []  # late answers change nothing
    assert sm.handle(Cancel()) == []
    sm.validate_state()


def test_cache_lookups_and_stores():
    flow = diamond(cache=True)
    sm = machine(flow)
    out = sm.handle(Start())
    assert len(out) == 1 and isinstance(out[0], LookupCache)
    key_a = out[0].key
    assert sm.handle(Take(1)) == []
    sm.handle(CacheAnswer((0, None), False))
    ex = sm.handle(Take(1))[0]
    out = finish(sm, ex, 1)
    assert out[0] == StoreResult(key_a, 1)
    lookups = [i for i in out if isinstance(i, LookupCache)]
    assert [sm.plan.tasks[i.item[0]].name for i in lookups] == ["b", "c"]
    assert lookups[0].key != lookups[1].key
    sm.handle(CacheAnswer(lookups[0].item, True, 2))
    sm.handle(CacheAnswer(lookups[1].item, True, 3))
    assert state(sm, "b") == "cached"
    assert sm.view(3).state == "pending"


def test_keys_depend_on_params_and_code():
    def key_of(flow, params):
        sm = machine(flow, params=params)
        return sm.handle(Start())[0].key

    flow = nf.Flow("k")

    @flow.task
    def a(x):
        return x

    assert key_of(flow, {"x": 1}) == key_of(flow, {"x": 1})
    assert key_of(flow, {"x": 1}) != key_of(flow, {"x": 2})
    flow2 = nf.Flow("k")

    @flow2.task
    def a(x):  # noqa: F811 - different code, same name
        return x + 1

    assert key_of(flow, {"x": 1}) != key_of(flow2, {"x": 1})


def test_events_for_every_state_change():
    events = []
    sm = machine(diamond(), events=events)
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], 1)
    states = [(e.task, e.state) for e in events if hasattr(e, "task")]
    assert states == [("a", "ready"), ("a", "running"), ("a", "succeeded"),
                      ("b", "ready"), ("c", "ready")]
    assert events[0].status == "running"
    assert all(e.run_id == "run1" for e in events)


@pytest.mark.parametrize("run_on", ["success", "failure", "always"])
def test_every_run_on_value_reaches_a_final_state(run_on):
    flow = nf.Flow("x")

    @flow.task(cache=False)
    def a():
        return 1

    flow.add(nf.Task.from_function(lambda a: a, name="b", options={"run_on": run_on,
                                                                    "cache": False}))
    sm = machine(flow)
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], 1)
    for ex in sm.handle(Take(5)):
        finish(sm, ex, 1)
    assert sm.status == "succeeded"
    sm.validate_state()


def test_a_wide_map_takes_turns_with_other_ready_tasks():
    flow = nf.Flow("fair")

    @flow.task(cache=False)
    def items():
        return list(range(5))

    @flow.task(map="items", cache=False)
    def each(items):
        return items

    @flow.task(cache=False)
    def a():
        return 1

    @flow.task(cache=False)
    def b(a):
        return a

    sm = machine(flow)
    sm.handle(Start())
    taken = sm.handle(Take(2))
    first = {name: ex for (name, _), ex in zip(names(sm, taken), taken)}
    finish(sm, first["items"], list(range(5)))
    sm.handle(SplitAnswer(0, list(range(5))))  # five branches of each are ready
    finish(sm, first["a"], 1)  # and then b
    # b does not wait behind all five branches: the map's first branch, then b, then the rest
    assert names(sm, sm.handle(Take(3))) == [("each", 0), ("b", None), ("each", 1)]


def test_priority_comes_before_fairness():
    flow = nf.Flow("priority first")

    @flow.task(cache=False)
    def items():
        return [1, 2, 3]

    @flow.task(map="items", cache=False, priority=5)
    def urgent(items):
        return items

    @flow.task(cache=False)
    def casual():
        return 0

    sm = machine(flow)
    sm.handle(Start())
    taken = sm.handle(Take(1))
    assert names(sm, taken) == [("items", None)]  # declared first, both ready: in order
    finish(sm, taken[0], [1, 2, 3])
    sm.handle(SplitAnswer(0, [1, 2, 3]))
    assert names(sm, sm.handle(Take(4))) == [
        ("urgent", 0), ("urgent", 1), ("urgent", 2), ("casual", None)]

