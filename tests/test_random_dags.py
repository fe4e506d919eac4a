"""Property-based: on random DAGs every task runs once, after its upstreams, with the right result.

Some tasks misbehave, and states and results must still match a sequential model:
they raise a ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``, a subclass of
our own), mutate their inputs after using them, or (mapped tasks) fail some of their
branches.
"""

from __future__ import annotations

import copy
import itertools
import threading
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbflow as nf

OK = ("succeeded", "cached")


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


class Custom(BaseException):
    """A BaseException of the user's own."""


#: what a task that raises raises, by the task's position
RAISED = (SystemExit(2), KeyboardInterrupt(), Custom("custom"), ValueError("plain"))


def combine(name, values):
    """A deterministic value that depends on the task and every input."""
    return (name, tuple(values))


def fails(item) -> bool:
    """Whether a branch of a task that fails some branches fails on ``item``."""
    return zlib.crc32(repr(item).encode()) % 3 == 0


def mutate(values):
    """Change every mutable input in place (after the task used it)."""
    for value in values:
        if isinstance(value, list):
            value.append("mutated")
            value.reverse()


def build(parents, mapped, behaviour, log):
    """A flow from {task: [upstreams]}; tasks in ``mapped`` map over their first upstream."""
    flow = nf.Flow("random")
    namespace = {"log": log, "combine": combine, "fails": fails, "mutate": mutate,
                 "RAISED": RAISED, "copy": copy}
    for index, (name, ups) in enumerate(parents.items()):
        args = ", ".join(ups)
        kind = behaviour.get(name, "plain")
        if name.startswith("list_") and name not in mapped:
            result = f"[combine({name!r}, [{args}] + [i]) for i in range(3)]"
        else:
            result = f"combine({name!r}, [{args}])"
        body = f"        result = {result}\n"
        if kind == "raise":
            body += f"        raise RAISED[{index % len(RAISED)}]\n"
        elif kind == "fail_some":
            body += (f"        if fails({ups[0]}):\n"
                     f"            raise RAISED[{index % len(RAISED)}]\n")
        elif kind == "mutate":  # (its result must not hold what it changes)
            body += f"        result = copy.deepcopy(result)\n        mutate([{args}])\n"
        src = (
            f"def {name}({args}):\n"
            f"    log.enter({name!r})\n"
            f"    try:\n"
            f"{body}"
            f"        return result\n"
            f"    finally:\n"
            f"        log.leave({name!r})\n"
        )
        exec(compile(src, f"<task {name}>", "exec"), namespace)
        options = {"map": ups[0]} if name in mapped else {}
        flow.add(nf.Task.from_function(namespace[name], options=options))
    return flow


def reference(parents, mapped, behaviour):
    """Evaluate sequentially, in declaration (topological) order: states, results, calls.

    The model of the rules: a task whose upstream has no result is skipped; a mapped
    task's branch is skipped when its source branch has none; a mapped task is failed
    if a branch failed, else skipped if one was skipped.
    """
    states: dict[str, str] = {}
    values: dict[str, object] = {}
    branches: dict[str, list[tuple[str, object]]] = {}  # mapped tasks that branched
    calls: dict[str, int] = {}
    for name, ups in parents.items():
        kind = behaviour.get(name, "plain")
        if name in mapped:
            source, extra = ups[0], ups[1:]
            if any(states[u] not in OK for u in extra):
                states[name] = "skipped"
                continue
            if source in mapped:
                if source not in branches:  # it never branched: nothing to map over
                    states[name] = "skipped"
                    continue
                items = branches[source]
            elif states[source] in OK:
                items = [("succeeded", v) for v in values[source]]  # type: ignore[attr-defined]
            else:
                states[name] = "skipped"
                continue
            inputs = [values[u] for u in extra]
            out: list[tuple[str, object]] = []
            for state, item in items:
                if state not in OK:
                    out.append(("skipped", None))
                    continue
                calls[name] = calls.get(name, 0) + 1
                if kind == "fail_some" and fails(item):
                    out.append(("failed", None))
                else:
                    out.append(("succeeded", combine(name, [item] + inputs)))
            branches[name] = out
            ended = {state for state, _ in out}
            states[name] = ("failed" if "failed" in ended else
                            "skipped" if "skipped" in ended else "succeeded")
            if states[name] == "succeeded":
                values[name] = [value for _, value in out]
            continue
        if any(states[u] not in OK for u in ups):
            states[name] = "skipped"
            continue
        calls[name] = 1
        if kind == "raise":
            states[name] = "failed"
            continue
        inputs = [values[u] for u in ups]
        states[name] = "succeeded"
        if name.startswith("list_"):
            values[name] = [combine(name, inputs + [i]) for i in range(3)]
        else:
            values[name] = combine(name, inputs)
    return states, values, calls


@st.composite
def random_flows(draw):
    n = draw(st.integers(1, 25))
    parents: dict[str, list[str]] = {}
    mapped: set[str] = set()
    behaviour: dict[str, str] = {}
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
            misbehaves = ["plain"] * 4 + ["fail_some", "mutate"]
        else:
            ups = draw(st.lists(st.sampled_from(names), max_size=3, unique=True)) if names else []
            name = f"list_{i}" if kind == "list" else f"t{i}"
            parents[name] = ups
            misbehaves = ["plain"] * 5 + ["raise", "mutate"]
        behaviour[name] = draw(st.sampled_from(misbehaves))
        names.append(name)
    return parents, mapped, behaviour


def check(parents, mapped, behaviour, executor):
    log = Log()
    flow = build(parents, mapped, behaviour, log)
    run = flow.run(executor=executor, raise_on_failure=False)
    states, values, calls = reference(parents, mapped, behaviour)
    assert run.states == states
    assert dict(run.results) == values
    assert run.status == ("failed" if "failed" in states.values() else "succeeded")
    failed = {f.label.split("[")[0] for f in run.failures}
    assert failed == {name for name, state in states.items() if state == "failed"}
    assert log.calls == calls
    for name, ups in parents.items():
        if name not in log.start:
            continue
        for up in ups:
            # the (last) branch of a mapped task starts after its upstreams ended
            assert log.start[name] > log.end[up], (up, name)
    return flow, states, values


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_flows())
def test_random_flows_inline(flow_spec):
    check(*flow_spec, "inline")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_flows())
def test_random_flows_threads_and_cache(flow_spec):
    flow, states, values = check(*flow_spec, "threads")
    rerun = flow.run(executor="threads", raise_on_failure=False)
    # what had a result comes from the cache; failures run (and fail) again
    assert rerun.states == {name: "cached" if state == "succeeded" else state
                            for name, state in states.items()}
    assert dict(rerun.results) == values
