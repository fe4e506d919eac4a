"""Property-based: on random DAGs every task runs once, after its upstreams, with the right result."""

from __future__ import annotations

import itertools
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbflow as nf


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.calls: dict[str, int] = {}
        self.start: dict[str, int] = {}
        self.end: dict[str, int] = {}

    def enter(self, name):
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.start[name] = next(self.counter)

    def leave(self, name):
        with self.lock:
            self.end[name] = next(self.counter)


def combine(name, values):
    """A deterministic value that depends on the task and every input."""
    return (name, tuple(values))


def build(parents, mapped, log):
    """A flow from {task: [upstreams]}; tasks in ``mapped`` map over their first upstream."""
    flow = nf.Flow("random")
    namespace = {"log": log, "combine": combine}
    for name, ups in parents.items():
        args = ", ".join(ups)
        if name.startswith("list_") and name not in mapped:
            result = f"[combine({name!r}, [{args}] + [i]) for i in range(3)]"
        else:
            result = f"combine({name!r}, [{args}])"
        src = (
            f"def {name}({args}):\n"
            f"    log.enter({name!r})\n"
            f"    try:\n"
            f"        return {result}\n"
            f"    finally:\n"
            f"        log.leave({name!r})\n"
        )
        exec(compile(src, f"<task {name}>", "exec"), namespace)
        options = {"map": ups[0]} if name in mapped else {}
        flow.add(nf.Task.from_function(namespace[name], options=options))
    return flow


def reference(parents, mapped):
    """Evaluate sequentially, in declaration (topological) order."""
    values: dict[str, object] = {}
    for name, ups in parents.items():
        inputs = [values[u] for u in ups]
        if name in mapped:
            values[name] = [combine(name, [item] + inputs[1:]) for item in inputs[0]]
        elif name.startswith("list_"):
            values[name] = [combine(name, inputs + [i]) for i in range(3)]
        else:
            values[name] = combine(name, inputs)
    return values


@st.composite
def random_flows(draw):
    n = draw(st.integers(1, 25))
    parents: dict[str, list[str]] = {}
    mapped: set[str] = set()
    names: list[str] = []
    for i in range(n):
        kind = draw(st.sampled_from(["plain", "plain", "list", "mapped"]))
        # a mapped task maps over a list (fan-out) or over a mapped task (element-wise)
        lists = [p for p in names if p.startswith("list_") or p in mapped]
        if kind == "mapped" and lists:
            source = draw(st.sampled_from(lists))
            others = [p for p in names if p != source]
            extra = draw(st.lists(st.sampled_from(others), max_size=2, unique=True)) if others else []
            name = f"m{i}"
            parents[name] = [source] + extra
            mapped.add(name)
        else:
            ups = draw(st.lists(st.sampled_from(names), max_size=3, unique=True)) if names else []
            name = f"list_{i}" if kind == "list" else f"t{i}"
            parents[name] = ups
        names.append(name)
    return parents, mapped


def check(parents, mapped, executor):
    log = Log()
    flow = build(parents, mapped, log)
    run = flow.run(executor=executor)
    expected = reference(parents, mapped)
    assert dict(run.results) == expected
    for name, ups in parents.items():
        want = 3 if name in mapped else 1
        assert log.calls[name] == want, (name, log.calls[name])
        for up in ups:
            # the (last) branch of a mapped task starts after its upstreams ended
            assert log.start[name] > log.end[up], (up, name)
    return flow


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_flows())
def test_random_flows_inline(flow_spec):
    parents, mapped = flow_spec
    check(parents, mapped, "inline")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_flows())
def test_random_flows_threads_and_cache(flow_spec):
    parents, mapped = flow_spec
    flow = check(parents, mapped, "threads")
    rerun = flow.run(executor="threads")
    assert set(rerun.states.values()) == {"cached"}
    assert dict(rerun.results) == reference(parents, mapped)
