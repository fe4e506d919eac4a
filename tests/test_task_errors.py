"""Whatever a task raises or returns, its outcome reaches the scheduler (issue 20).

A ``BaseException`` (``sys.exit()``, an argparse error, ``KeyboardInterrupt``) or a
result whose iteration raises used to hang the run, or kill the scheduler thread for
every later run. These run in a subprocess with a deadline, so that a regression fails
instead of hanging the test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf

#: seconds a script gets; each run in it takes well under a second when nothing hangs
DEADLINE = 90

RAISING = '''
import argparse, asyncio, json, sys
import nbflow as nf

class Custom(BaseException):
    pass

def build():
    flow = nf.Flow("raising")

    @flow.task(cache=False)
    def exits():
        sys.exit(3)

    @flow.task(cache=False)
    def bad_argument():
        argparse.ArgumentParser(prog="job").parse_args(["--nope"])

    @flow.task(cache=False)
    def interrupted():
        raise KeyboardInterrupt

    @flow.task(cache=False)
    def custom():
        raise Custom("mine")

    @flow.task(cache=False)
    async def async_interrupted():
        raise KeyboardInterrupt

    @flow.task(cache=False)
    def items():
        return [1, 2, 3]

    @flow.task(map="items", cache=False)
    def some_branches(items):
        if items == 2:
            raise SystemExit("branch 2 exits")
        return items

    @flow.task(cache=False, run_if=lambda items: sys.exit(1))
    def condition_exits(items):
        return items

    @flow.task(cache=False)
    def fine():
        return "fine"

    return flow

def outcome(run):
    return {
        "status": run.status,
        "states": run.states,
        "errors": sorted(f"{f.label}: {type(f.error).__name__}" for f in run.failures),
        "notes": all("fails the task" in f.traceback for f in run.failures
                     if not isinstance(f.error, Exception)),
        "fine": run.results.get("fine"),
    }

if __name__ == "__main__":
    executor = sys.argv[1]
    first = build().run(executor=executor, raise_on_failure=False)
    # the scheduler thread survived: a later run in the same process runs
    second = build().run(executor=executor, raise_on_failure=False)
    print(json.dumps([outcome(first), outcome(second)]))
'''


def run_script(tmp_path: Path, source: str, *args: str) -> Any:
    """Run ``source`` as a script with a deadline; the JSON it prints last."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    try:
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=DEADLINE, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script hung (no answer after {DEADLINE}s): {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_base_exceptions_fail_their_task_and_nothing_else(tmp_path, executor):
    first, second = run_script(tmp_path, RAISING, executor)
    assert first == second
    assert first["status"] == "failed"
    assert first["states"] == {
        "exits": "failed", "bad_argument": "failed", "interrupted": "failed",
        "custom": "failed", "async_interrupted": "failed", "items": "succeeded",
        "some_branches": "failed", "condition_exits": "failed", "fine": "succeeded",
    }
    assert first["errors"] == [
        "async_interrupted: KeyboardInterrupt", "bad_argument: SystemExit",
        "condition_exits: RuntimeError",  # run_if raised: "run_if of task ... raised SystemExit"
        "custom: Custom", "exits: SystemExit", "interrupted: KeyboardInterrupt",
        "some_branches[1]: SystemExit",
    ]
    assert first["notes"]  # the traceback text says it only failed the task
    assert first["fine"] == "fine"


ITERATION = '''
import json, sys
import nbflow as nf

class BadIter:
    def __iter__(self):
        raise ValueError("no iteration today")

class Halfway:
    def __iter__(self):
        yield 1
        yield 2
        raise KeyboardInterrupt  # even this: it fails the mapping task

def numbers():
    yield 10
    yield 20
    raise ValueError("generator broke")

if __name__ == "__main__":
    flow = nf.Flow("iteration")

    @flow.task
    def bad_iter():
        return BadIter()

    @flow.task(map="bad_iter")
    def over_bad_iter(bad_iter):
        return bad_iter

    @flow.task
    def halfway():
        return Halfway()

    @flow.task(map="halfway")
    def over_halfway(halfway):
        return halfway

    @flow.task
    def generator():
        return numbers()

    @flow.task(map="generator")
    def over_generator(generator):
        return generator

    run = flow.run(executor=sys.argv[1], raise_on_failure=False)
    print(json.dumps({"states": run.states,
                      "errors": {f.label: [type(f.error).__name__, str(f.error)]
                                 for f in run.failures}}))
'''


def test_a_result_whose_iteration_raises_fails_with_the_item_index(tmp_path, executor):
    out = run_script(tmp_path, ITERATION, executor)
    assert out["states"] == {
        "bad_iter": "succeeded", "over_bad_iter": "failed",
        "halfway": "succeeded", "over_halfway": "failed",
        # a generator is read where its task ran: its error is that task's
        "generator": "failed", "over_generator": "skipped",
    }
    errors = out["errors"]
    assert errors["over_bad_iter"] == [
        "IterationError", "cannot map over the result of task 'bad_iter': iter() of the "
        "BadIter raised ValueError: no iteration today"]
    assert errors["over_halfway"] == [
        "IterationError", "cannot map over the result of task 'halfway': reading item 2 of "
        "the Halfway raised KeyboardInterrupt: "]
    assert errors["generator"] == [
        "IterationError", "task 'generator' returned a generator that raised ValueError at "
        "item 2 while its items were read: generator broke"]


# -- generators are never cached as generators ------------------------------------------------


def generator_flow() -> tuple[nf.Flow, list[str]]:
    flow = nf.Flow("generators")
    calls: list[str] = []

    @flow.task
    def numbers():
        calls.append("numbers")
        return (i * i for i in range(4))

    @flow.task(map="numbers")
    def plus_one(numbers):
        return numbers + 1

    @flow.task
    def total(numbers):  # a second consumer of the same generator result
        return sum(numbers)

    @flow.task
    def letters():
        return map(str.upper, "abc")

    return flow, calls


def test_a_returned_generator_is_kept_as_its_items(executor):
    flow, calls = generator_flow()
    first = flow.run(executor=executor)
    second = flow.run(executor=executor)  # from the cache: the items, not a spent generator
    for run in (first, second):
        assert run.results["numbers"] == [0, 1, 4, 9]
        assert run.results["plus_one"] == [1, 2, 5, 10]
        assert run.results["total"] == 14
        assert run.results["letters"] == ["A", "B", "C"]
    assert set(second.states.values()) == {"cached"}
    assert second.task("plus_one").branches == 4
    assert calls == ([] if executor == "processes" else ["numbers"])


def test_an_open_file_is_handed_on_as_it_is(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a\nb\n")
    flow = nf.Flow("file")

    @flow.task(cache=False)
    def opened():
        return open(path)  # the consumer closes it

    @flow.task(cache=False)
    def first_line(opened):
        with opened:
            return opened.readline()

    assert flow.run(executor="inline").results["first_line"] == "a\n"


@pytest.mark.logs_nbflow_errors
def test_the_scheduler_loop_survives_a_callback_that_lets_keyboard_interrupt_out():
    """The last line of defence: asyncio lets KeyboardInterrupt and SystemExit out of its
    loop; nbflow's loop thread logs them and goes on, so later runs still run."""
    import threading

    from nbflow.loop import get_loop_thread

    loop = get_loop_thread().loop
    resumed = threading.Event()

    def escapes() -> None:
        raise KeyboardInterrupt

    loop.call_soon_threadsafe(escapes)
    loop.call_soon_threadsafe(resumed.set)
    assert resumed.wait(10), "the scheduler loop did not go on"
    assert get_loop_thread().loop is loop
    flow = nf.Flow("after")

    @flow.task
    def one():
        return 1

    assert flow.run(executor="inline").results["one"] == 1
