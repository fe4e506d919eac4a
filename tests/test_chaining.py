"""Chaining in the state machine: tasks handed over ahead of their upstreams.

An executor that chains (dask) gets a task together with ``ResultOf``
references to upstream items it is still running. These tests drive
:class:`Transitions` directly; ``test_chaining_simulated`` compares whole runs
with and without chaining on random graphs.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_random_dags import random_flows
from test_transitions import Clock, fail, finish, names

import nbflow as nf
from nbflow.executors import ResultOf, ResultsOf
from nbflow.messages import (
    CacheAnswer,
    Cancel,
    CancelRunning,
    ChainAhead,
    Finished,
    LookupCache,
    RetryDue,
    RetryLater,
    RunFinished,
    SplitAnswer,
    Start,
    Take,
)
from nbflow.transitions import Transitions
from nbflow.values import Failed, Skipped


def chain(n: int = 3, cache: bool = False, **options) -> nf.Flow:
    """t0 -> t1 -> ... ; ``options`` go to every task but the first."""
    flow = nf.Flow("chain")
    flow.add(nf.Task.from_function(lambda: 0, name="t0", options={"cache": cache}))
    for i in range(1, n):
        fn = eval(f"lambda t{i - 1}: t{i - 1} + 1")
        flow.add(nf.Task.from_function(fn, name=f"t{i}", options={"cache": cache, **options}))
    return flow


def chaining(flow: nf.Flow) -> Transitions:
    sm = Transitions(flow.plan(), "run1", clock=Clock())
    sm.enable_chaining({0})
    return sm


def take_all(sm: Transitions) -> list:
    """What a scheduler hands over in one go: ready items, then chained rounds (no cache)."""
    out = sm.handle(Take(100))
    while sm.chain_candidates:
        assert sm.handle(ChainAhead()) == []
        out += sm.handle(Take(100))
    return out


def states(sm: Transitions) -> list[str]:
    return [v.state for v in sm.views()]


def test_a_chain_is_handed_over_at_once_and_turns_running_hop_by_hop():
    sm = chaining(chain(3))
    sm.handle(Start())
    t0, t1, t2 = take_all(sm)
    assert names(sm, [t0, t1, t2]) == [("t0", None), ("t1", None), ("t2", None)]
    assert t1.kwargs == {"t0": ResultOf(((0, None), 1))}
    assert t2.kwargs == {"t1": ResultOf(((1, None), 1))}
    assert states(sm) == ["running", "pending", "pending"]
    sm.validate_state()
    assert finish(sm, t0, 0) == []
    assert states(sm) == ["succeeded", "running", "pending"]
    finish(sm, t1, 1)
    assert states(sm) == ["succeeded", "succeeded", "running"]
    assert finish(sm, t2, 2) == [RunFinished("succeeded")]
    assert [sm.result(t) for t in range(3)] == [0, 1, 2]
    assert [v.attempts for v in sm.views()] == [1, 1, 1]
    sm.validate_state()


def test_an_outcome_that_arrives_before_its_upstreams_waits_for_them():
    sm = chaining(chain(3))
    sm.handle(Start())
    t0, t1, t2 = take_all(sm)
    assert finish(sm, t2, 2) == []
    assert finish(sm, t1, 1) == []
    assert states(sm) == ["running", "pending", "pending"]
    assert finish(sm, t0, 0) == [RunFinished("succeeded")]
    assert states(sm) == ["succeeded"] * 3
    assert [sm.result(t) for t in range(3)] == [0, 1, 2]


def test_an_upstream_failure_cancels_the_chain_below_and_skips_it():
    sm = chaining(chain(4))
    sm.handle(Start())
    t0, t1, t2, t3 = take_all(sm)
    finish(sm, t0, 0)
    # dask fails t2 and t3 with t1's error; those outcomes must not count as theirs
    finish(sm, t3, None, ok=False)
    out = fail(sm, t1)
    assert CancelRunning([((2, None), 1)]) in out and CancelRunning([((3, None), 1)]) in out
    fail(sm, t2)  # late, for a cancelled submission
    assert states(sm) == ["succeeded", "failed", "skipped", "skipped"]
    assert sm.view(2).skip_reason == "upstream 't1' failed"
    assert sm.status == "failed"
    assert [v.attempts for v in sm.views()] == [1, 1, 0, 0]
    sm.validate_state()


def test_a_retried_upstream_is_chained_onto_again_without_counting_attempts():
    sm = chaining(chain(3, retries=1))
    sm.handle(Start())
    t0, t1, t2 = take_all(sm)
    finish(sm, t0, 0)
    out = fail(sm, t1)
    assert CancelRunning([((2, None), 1)]) in out
    assert RetryLater((1, None), 2, 0.0) in out
    assert states(sm) == ["succeeded", "retrying", "pending"]
    sm.handle(RetryDue((1, None), 2))
    t1b, t2b = take_all(sm)
    assert (t1b.attempt, t2b.attempt) == (2, 1)
    assert t2b.kwargs == {"t1": ResultOf(((1, None), 2))}
    finish(sm, t1b, 1)
    finish(sm, t2b, 2)
    assert sm.status == "succeeded"
    assert [v.attempts for v in sm.views()] == [1, 2, 1]


def test_chained_tasks_look_the_cache_up_first():
    sm = chaining(chain(3, cache=True))
    [lookup] = sm.handle(Start())
    sm.handle(CacheAnswer(lookup.item, False))
    [t0] = sm.handle(Take(10))
    [ahead] = sm.handle(ChainAhead())
    assert isinstance(ahead, LookupCache) and ahead.item == (1, None)
    sm.handle(CacheAnswer(ahead.item, False))  # a miss: t1 goes ahead
    [t1] = sm.handle(Take(10))
    [ahead2] = sm.handle(ChainAhead())
    sm.handle(CacheAnswer(ahead2.item, True, 2))  # a hit: t2 waits for t1 as usual
    assert sm.handle(Take(10)) == [] and not sm.chain_candidates
    finish(sm, t0, 0)
    out = finish(sm, t1, 1)
    again = [i for i in out if isinstance(i, LookupCache)]
    assert [i.key for i in again] == [ahead2.key]  # the same key, looked up again
    assert sm.handle(CacheAnswer((2, None), True, 2)) == [RunFinished("succeeded")]
    assert states(sm) == ["succeeded", "succeeded", "cached"]


def test_cancel_lists_chained_items_as_running():
    sm = chaining(chain(3))
    sm.handle(Start())
    take_all(sm)
    out = sm.handle(Cancel())
    assert out[0] == CancelRunning([((0, None), 1), ((1, None), 1), ((2, None), 1)])
    assert states(sm) == ["cancelled"] * 3
    sm.validate_state()


def test_an_upstream_that_finishes_before_the_chained_task_is_taken():
    sm = chaining(chain(2))
    sm.handle(Start())
    [t0] = sm.handle(Take(10))
    assert sm.handle(ChainAhead()) == []  # t1 queued ahead ...
    finish(sm, t0, 0)  # ... but t0 is done before anyone took it
    [t1] = sm.handle(Take(10))
    assert t1.kwargs == {"t0": 0}
    assert states(sm) == ["succeeded", "running"]
    finish(sm, t1, 1)
    assert sm.status == "succeeded"


def test_only_plain_tasks_on_a_chaining_lane_are_chained():
    flow = nf.Flow("rules")
    flow.add(nf.Task.from_function(lambda: [1], name="a", options={"cache": False}))
    rules = {
        "when": {"run_if": lambda a: True},
        "slow": {"timeout": 5.0},
        "always": {"run_on": "always"},
        "each": {"map": "a"},
        "later": {"after": ["plain"]},
        "plain": {},
    }
    for name, options in rules.items():
        flow.add(nf.Task.from_function(lambda a: a, name=name,
                                       options={"cache": False, **options}))
    sm = chaining(flow)
    sm.handle(Start())
    assert names(sm, take_all(sm)) == [("a", None), ("plain", None)]

    async def coro():
        return 1

    flow.add(nf.Task.from_function(coro, name="coro", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda coro: coro, name="after_coro",
                                   options={"cache": False}))
    sm = chaining(flow)
    sm.handle(Start())
    assert names(sm, sm.handle(Take(0, asynchronous=True))) == [("coro", None)]
    assert names(sm, take_all(sm)) == [("a", None), ("plain", None)]

    plan = flow.plan()
    sm = Transitions(plan, "run1", clock=Clock())
    sm.set_lanes([int(pt.name == "plain") for pt in plan.tasks])  # "plain" on a lane of its own
    sm.enable_chaining({0})
    sm.handle(Start())
    assert names(sm, take_all(sm)) == [("a", None)]


def fan_in(**f_options) -> nf.Flow:
    flow = nf.Flow("m")
    flow.add(nf.Task.from_function(lambda: [1, 2], name="items", options={"cache": False}))
    flow.add(nf.Task.from_function(lambda items: items, name="f",
                                   options={"map": "items", "cache": False, **f_options}))
    flow.add(nf.Task.from_function(lambda f: f, name="total", options={"cache": False}))
    return flow


def test_a_fan_in_is_chained_once_every_branch_is_handed_over():
    sm = chaining(fan_in(max_parallel=1))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2, 3])
    sm.handle(SplitAnswer(0, [1, 2, 3]))
    [f0] = take_all(sm)  # max_parallel: one branch at a time, nothing to chain yet
    finish(sm, f0, 10)
    f1, = take_all(sm)
    finish(sm, f1, 20)
    f2, total = take_all(sm)  # the last branch went out: the fan-in follows it
    assert names(sm, [f2, total]) == [("f", 2), ("total", None)]
    assert total.kwargs == {"f": [10, 20, ResultOf(((1, 2), 1))]}
    assert type(total.kwargs["f"]) is ResultsOf
    finish(sm, total, 60)  # early: kept until f is done
    assert sm.view(2).state == "pending"
    assert finish(sm, f2, 30) == [RunFinished("succeeded")]
    assert sm.result(2) == 60 and sm.view(2).attempts == 1


def test_a_failed_branch_cancels_the_chained_fan_in():
    sm = chaining(fan_in(retries=1))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2])
    sm.handle(SplitAnswer(0, [1, 2]))
    f0, f1, total = take_all(sm)
    out = fail(sm, f1)
    assert CancelRunning([((2, None), 1)]) in out
    sm.handle(RetryDue((1, 1), 2))
    f1b, total_b = take_all(sm)
    assert total_b.kwargs["f"] == [ResultOf(((1, 0), 1)), ResultOf(((1, 1), 2))]
    finish(sm, f0, 1)
    finish(sm, f1b, 2)
    assert finish(sm, total_b, 3) == [RunFinished("succeeded")]
    assert [v.attempts for v in sm.views()] == [1, 2, 1]


def element_wise(cache: bool = False, **g_options) -> nf.Flow:
    """items -> f (maps over items) -> g (maps element-wise over f)."""
    flow = nf.Flow("ew")
    flow.add(nf.Task.from_function(lambda: [1, 2], name="items", options={"cache": cache}))
    flow.add(nf.Task.from_function(lambda items: items, name="f",
                                   options={"map": "items", "cache": cache}))
    flow.add(nf.Task.from_function(lambda f: f, name="g",
                                   options={"map": "f", "cache": cache, **g_options}))
    return flow


def test_an_element_wise_branch_is_chained_onto_its_source_branch():
    sm = chaining(element_wise())
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2])
    sm.handle(SplitAnswer(0, [1, 2]))
    f0, f1, g0, g1 = take_all(sm)
    assert names(sm, [g0, g1]) == [("g", 0), ("g", 1)]
    assert g1.kwargs == {"f": ResultOf(((1, 1), 1))}
    assert states(sm) == ["succeeded", "running", "pending"]
    assert finish(sm, g1, 20) == []  # early: kept until f[1] is done
    out = fail(sm, f0)  # branch 0 fails: g[0] is taken back and skipped
    assert CancelRunning([((2, 0), 1)]) in out
    finish(sm, f1, 2)
    assert sm.status == "failed"
    assert [it.phase for it in sm.records[2].items] == ["skipped", "succeeded"]
    assert sm.records[2].items[1].value == 20
    sm.validate_state()


def test_an_element_wise_branch_retried_is_chained_onto_again():
    sm = chaining(element_wise(retries=1))
    sm.handle(Start())
    finish(sm, sm.handle(Take(1))[0], [1, 2])
    sm.handle(SplitAnswer(0, [1, 2]))
    f0, f1, g0, g1 = take_all(sm)
    finish(sm, f0, 1)
    finish(sm, f1, 2)
    fail(sm, g0)
    sm.handle(RetryDue((2, 0), 2))
    [g0b] = take_all(sm)
    assert g0b.attempt == 2 and g0b.kwargs == {"f": 1}
    finish(sm, g1, 20)
    assert finish(sm, g0b, 10) == [RunFinished("succeeded")]
    assert sm.result(2) == [10, 20]
    sm.validate_state()


def test_element_wise_branches_look_the_cache_up_first():
    sm = chaining(element_wise(cache=True))
    [lookup] = sm.handle(Start())
    sm.handle(CacheAnswer(lookup.item, False, None))
    finish(sm, sm.handle(Take(1))[0], [1, 2])
    for ins in sm.handle(SplitAnswer(0, [1, 2])):
        sm.handle(CacheAnswer(ins.item, False, None))
    f0, f1 = sm.handle(Take(100))
    lookups = sm.handle(ChainAhead())
    assert [ins.item for ins in lookups] == [(2, 0), (2, 1)]
    assert all(isinstance(ins, LookupCache) and ins.key for ins in lookups)
    sm.handle(CacheAnswer((2, 0), True, "cached"))  # a hit is not sent: it waits for f[0]
    sm.handle(CacheAnswer((2, 1), False, None))
    [g1] = take_all(sm)
    assert names(sm, [g1]) == [("g", 1)]
    out = finish(sm, f0, 1)  # g[0] is looked up again, as without chaining
    assert [ins.item for ins in out if isinstance(ins, LookupCache)] == [(2, 0)]
    sm.handle(CacheAnswer((2, 0), True, "cached"))
    finish(sm, f1, 2)
    finish(sm, g1, 20)
    assert sm.status == "succeeded"
    assert [it.phase for it in sm.records[2].items] == ["cached", "succeeded"]
    sm.validate_state()


def test_skipped_values_are_not_results():
    sm = chaining(chain(3))
    sm.handle(Start())
    t0, t1, t2 = take_all(sm)
    fail(sm, t0)
    assert states(sm) == ["failed", "skipped", "skipped"]
    assert isinstance(sm.view(0).error, Failed)
    assert sm.arguments((2, None)) == {"t1": Skipped("t1", "upstream 't0' failed")}


# -- whole runs on random graphs, with and without chaining ----------------------------------


def _norm(value):
    if isinstance(value, Failed):
        return ("failed", value.task)
    if isinstance(value, Skipped):
        return ("skipped", value.task)
    if isinstance(value, list):
        return tuple(_norm(v) for v in value)
    return value


def random_flow(parents, mapped, options):
    """A flow from {task: [upstreams]}: bodies return (name, inputs); lists for list_*."""
    flow = nf.Flow("random")
    for name, ups in parents.items():
        args = ", ".join(ups)
        many = name.startswith("list_") and name not in mapped
        body = (f"[({name!r}, _norm([{args}]), i) for i in range(3)]" if many
                else f"({name!r}, _norm([{args}]))")
        fn = eval(f"lambda {args}: {body}", {"_norm": _norm})
        opts = {"map": ups[0]} if name in mapped else {}
        flow.add(nf.Task.from_function(fn, name=name, options={**opts, **options.get(name, {})}))
    return flow


class Simulation:
    """Drives one run like the scheduler does, on an executor that completes items in a
    random order once their ``ResultOf`` inputs are done (and fails them when those
    failed, as dask does). ``faults[task]`` is how many first attempts fail."""

    def __init__(self, flow, chaining, rng, store, faults):
        self.sm = Transitions(flow.plan(), "run", clock=Clock())
        if chaining:
            self.sm.enable_chaining({0})
        self.rng, self.store, self.faults = rng, store, faults
        self.submitted: dict = {}
        self.done: dict = {}  # item id -> (ok, value), as the executor keeps them
        self.retries: list = []
        self.finished = False

    def run(self):
        pending = list(self.sm.handle(Start()))
        while True:
            self._handle(pending)
            pending = []
            self._take()
            while self.sm.chain_candidates:
                self._handle(self.sm.handle(ChainAhead()))
                self._take()
            if self.finished:
                self.sm.validate_state()
                return self.sm
            self.sm.validate_state()
            pending = self._step()

    def _take(self):
        for ex in self.sm.handle(Take(1000)):
            self.submitted[(ex.item, ex.attempt)] = ex
            self.done.pop((ex.item, ex.attempt), None)

    def _handle(self, instructions):
        queue = list(instructions)
        while queue:
            ins = queue.pop(0)
            kind = type(ins).__name__
            if kind == "LookupCache":
                hit = ins.key in self.store
                queue += self.sm.handle(CacheAnswer(ins.item, hit, self.store.get(ins.key)))
            elif kind == "StoreResult":
                self.store[ins.key] = ins.value
            elif kind == "SplitResult":
                queue += self.sm.handle(SplitAnswer(ins.source, list(ins.value)))
            elif kind == "RetryLater":
                self.retries.append((ins.item, ins.attempt))
            elif kind == "CancelRunning":
                for key in ins.items:
                    self.submitted.pop(key, None)
                    self.done.pop(key, None)
            elif kind == "RunFinished":
                self.finished = True
            else:
                raise AssertionError(ins)

    def _step(self):
        ready = [k for k, ex in self.submitted.items()
                 if all(ref.id in self.done for ref in _refs(ex.kwargs))]
        choices = ready + [("retry", r) for r in self.retries]
        assert choices, "stuck"
        pick = choices[self.rng.randrange(len(choices))]
        if pick[0] == "retry":
            self.retries.remove(pick[1])
            return self.sm.handle(RetryDue(*pick[1]))
        ex = self.submitted.pop(pick)
        (t, b), attempt = pick
        name = self.sm.plan.tasks[t].name
        kwargs, upstream_failure = {}, None
        for k, v in ex.kwargs.items():
            values = v if type(v) is ResultsOf else [v]
            resolved = []
            for one in values:
                if type(one) is ResultOf:
                    ok, one = self.done[one.id]
                    if not ok:
                        upstream_failure = one
                resolved.append(one)
            kwargs[k] = resolved if type(v) is ResultsOf else resolved[0]
        if upstream_failure is not None:
            ok, value = False, upstream_failure
        elif attempt <= self.faults.get(name, 0):
            ok, value = False, Failed.from_exception(name, RuntimeError("fault"), b, attempt)
        else:
            ok, value = True, self.sm.plan.tasks[t].task.fn(**kwargs)
        self.done[pick] = (ok, value)
        return self.sm.handle(Finished(((t, b), attempt), ok, value, 0.0, 0.0))


def _refs(kwargs):
    for v in kwargs.values():
        if type(v) is ResultOf:
            yield v
        elif type(v) is ResultsOf:
            yield from (one for one in v if type(one) is ResultOf)


def outcome(sm):
    return {r.name: (r.state, r.items and [it.phase for it in r.items] if r.mapped else None,
                     r.attempts, _norm(r.result) if r.state in ("succeeded", "cached") else None)
            for r in sm.records}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_flows(), st.data())
def test_chaining_changes_nothing_but_when_items_are_handed_over(flow_spec, data):
    parents, mapped, _ = flow_spec  # (the misbehaviours of test_random_dags are not used)
    names_ = list(parents)
    options = {n: data.draw(st.fixed_dictionaries({}, optional={
        "retries": st.integers(0, 2),
        "run_on": st.sampled_from(["success", "always"]),
        "cache": st.booleans(),
    })) for n in names_}
    faults = data.draw(st.dictionaries(st.sampled_from(names_), st.integers(1, 2), max_size=3))
    seed = data.draw(st.integers(0, 2**16))
    flow = random_flow(parents, mapped, options)
    results = []
    for chaining_on in (False, True):
        store: dict = {}
        rng = random.Random(seed)
        first = outcome(Simulation(flow, chaining_on, rng, store, faults).run())
        again = outcome(Simulation(flow, chaining_on, rng, store, {}).run())  # with a cache
        results.append((first, again))
    assert results[0] == results[1]
