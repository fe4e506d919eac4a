"""One contract suite, run against every local executor."""

from __future__ import annotations

import os

import pytest

import nbflow as nf


def test_values_flow_through_a_diamond(executor):
    flow = nf.Flow("diamond")

    @flow.task
    def a(x: int = 2):
        return x

    @flow.task
    def b(a):
        return a * 10

    @flow.task
    def c(a):
        return a + 1

    @flow.task
    def d(b, c):
        return (b, c)

    run = flow.run(executor=executor, params={"x": 3})
    assert run.status == "succeeded"
    assert run.results["d"] == (30, 4)
    assert dict(run.results) == {"a": 3, "b": 30, "c": 4, "d": (30, 4)}


def test_mapping_chain_and_fan_in(executor):
    flow = nf.Flow("map")

    @flow.task
    def items(n: int = 6):
        return list(range(n))

    @flow.task(map="items")
    def square(items):
        return items * items

    @flow.task(map="square")
    def plus(square, offset: int = 1):
        return square + offset

    @flow.task
    def total(plus):
        return sum(plus)

    run = flow.run(executor=executor)
    assert run.results["plus"] == [i * i + 1 for i in range(6)]
    assert run.results["total"] == sum(i * i + 1 for i in range(6))
    assert run.task("square").branches == 6


def test_failure_is_recorded_with_traceback(executor):
    flow = nf.Flow("fail")

    @flow.task
    def ok():
        return 1

    @flow.task
    def bad(ok):
        raise ValueError(f"bad value {ok}")

    @flow.task
    def after_bad(bad):
        return bad

    @flow.task
    def sibling(ok):
        return ok + 1

    run = flow.run(executor=executor, raise_on_failure=False)
    assert run.status == "failed"
    assert run.states == {"ok": "succeeded", "bad": "failed", "after_bad": "skipped",
                          "sibling": "succeeded"}
    (failure,) = run.failures
    assert isinstance(failure.error, ValueError)
    assert "bad value 1" in failure.traceback
    assert "raise ValueError" in failure.traceback
    assert run.results["sibling"] == 2
    with pytest.raises(nf.FlowFailed) as info:
        run.raise_for_failure()
    assert "bad" in str(info.value) and "ValueError: bad value 1" in str(info.value)


def test_retries(executor, tmp_path):
    marker = tmp_path / "attempts"
    flow = nf.Flow("retry")

    @flow.task(retries=2, cache=False)
    def flaky(path: str = str(marker)):
        import pathlib

        p = pathlib.Path(path)
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        if n < 3:
            raise RuntimeError(f"attempt {n}")
        return n

    run = flow.run(executor=executor)
    assert run.results["flaky"] == 3
    assert run.task("flaky").attempts == 3


def test_output_is_captured_per_task(executor):
    flow = nf.Flow("out")

    @flow.task
    def talk():
        import sys

        print("to stdout")
        print("to stderr", file=sys.stderr)
        return 1

    run = flow.run(executor=executor)
    output = run.task("talk").output[None]
    assert output.text("stdout") == "to stdout\n"
    assert output.text("stderr") == "to stderr\n"


def test_second_run_is_cached(executor):
    flow = nf.Flow("cache")

    @flow.task
    def a():
        return [1, 2]

    @flow.task(map="a")
    def b(a):
        return a * 2

    flow.run(executor=executor)
    run = flow.run(executor=executor)
    assert run.states == {"a": "cached", "b": "cached"}
    assert run.results["b"] == [2, 4]
    assert all(rec.attempts == 0 for rec in (run.task("a"), run.task("b")))


def test_tracebacks_start_at_the_task_code(executor):
    flow = nf.Flow("tb")

    @flow.task(cache=False)
    def broken():
        raise ValueError("from the task")

    run = flow.run(executor=executor, raise_on_failure=False)
    lines = run.failures[0].traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in broken" in lines[1]  # no nbflow executor frames before the task's own
    # the frame names this file and shows the source line, also from a worker process
    assert f'File "{__file__}"' in lines[1]
    assert lines[2].strip() == 'raise ValueError("from the task")'
    package_dir = os.path.dirname(os.path.abspath(nf.__file__))
    assert package_dir not in run.failures[0].traceback
