"""The Run handle: results, summary, failures, cache across runs, interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import nbflow as nf

from conftest import wait_until


def pipeline():
    flow = nf.Flow("pipe")
    calls: list[str] = []

    @flow.task
    def load(n: int = 3):
        calls.append("load")
        return list(range(n))

    @flow.task(map="load")
    def square(load):
        calls.append("square")
        return load * load

    @flow.task
    def total(square):
        calls.append("total")
        return sum(square)

    @flow.task
    def report(total):
        calls.append("report")
        return f"total={total}"

    return flow, calls


def test_results_mapping():
    flow, _ = pipeline()
    run = flow.run(executor="inline")
    assert run.results["square"] == [0, 1, 4]
    assert list(run.results) == ["load", "square", "total", "report"]
    assert len(run.results) == 4
    with pytest.raises(nf.ResultUnavailableError, match="Did you mean 'total'"):
        run.results["totl"]
    with pytest.raises(KeyError):  # a ResultUnavailableError is also a KeyError
        run.results["nope"]


def test_missing_result_says_why():
    flow = nf.Flow("f")

    @flow.task
    def bad():
        raise ValueError("x")

    run = flow.run(raise_on_failure=False)
    with pytest.raises(nf.ResultUnavailableError, match="'bad' has no result: it is failed"):
        run.results["bad"]
    assert "bad" not in run.results


def test_rerun_uses_cache_and_code_change_recomputes_downstream_only():
    flow, calls = pipeline()
    flow.run(executor="inline")
    assert calls == ["load", "square", "square", "square", "total", "report"]
    calls.clear()
    run = flow.run(executor="inline")
    assert calls == []
    assert set(run.states.values()) == {"cached"}

    def total(square):  # new code for one task
        calls.append("total2")
        return sum(square) + 1

    flow.replace(nf.Task.from_function(total))
    run = flow.run(executor="inline")
    assert calls == ["total2", "report"]
    assert run.states == {"load": "cached", "square": "cached", "total": "succeeded",
                          "report": "succeeded"}
    assert run.results["report"] == "total=6"


def test_parameter_change_recomputes_only_what_reads_it():
    flow, calls = pipeline()
    flow.run(executor="inline", params={"n": 2})
    calls.clear()
    run = flow.run(executor="inline", params={"n": 3})
    assert calls.count("load") == 1
    # branches 0 and 1 have the same inputs as before, but the list they come from
    # changed, so every branch of the new list is a new item
    assert run.results["total"] == 5


def test_cache_false_always_runs_and_its_downstream_too():
    flow = nf.Flow("c")
    calls = []

    @flow.task(cache=False)
    def now():
        calls.append("now")
        return 1

    @flow.task
    def later(now):
        calls.append("later")
        return now

    flow.run()
    flow.run()
    assert calls == ["now", "later", "now", "later"]


def test_summary_table():
    flow, _ = pipeline()
    run = flow.run(executor="threads")
    text = str(run.summary())
    assert text.splitlines()[0].startswith(f"Run {run.id} of flow 'pipe': succeeded")
    assert "task" in text and "branches" in text and "attempts" in text
    row = next(r for r in run.summary().rows if r.task == "square")
    assert row.branches == (3, 3) and row.state == "succeeded" and row.attempts == 1
    assert row.duration is not None and row.duration >= 0
    assert run.summary().to_dicts()[0]["task"] == "load"
    assert repr(run).startswith("Run('pipe', succeeded, 4 tasks")


def test_flow_failed_lists_every_failed_task():
    flow = nf.Flow("ff")

    @flow.task
    def one():
        raise ValueError("first problem")

    @flow.task
    def two():
        raise KeyError("second problem")

    @flow.task(map="three_items")
    def three(three_items):
        if three_items == 1:
            raise ZeroDivisionError("branch problem")
        return three_items

    @flow.task
    def three_items():
        return [0, 1, 2]

    with pytest.raises(nf.FlowFailed) as info:
        flow.run()
    err = info.value
    labels = sorted(f.label for f in err.failures)
    assert labels == ["one", "three[1]", "two"]
    text = str(err)
    for fragment in ("first problem", "second problem", "branch problem", "Traceback"):
        assert fragment in text
    assert err.run is not None and err.run.status == "failed"
    assert err.run.results["three_items"] == [0, 1, 2]  # nothing computed is lost


@pytest.mark.logs_nbflow_errors
def test_observers_receive_batched_events_and_a_raising_one_is_harmless(caplog):
    flow, _ = pipeline()
    batches = []

    def broken(events):
        raise RuntimeError("observer bug")

    run = flow.run(observers=[batches.append, broken], executor="threads")
    events = [e for batch in batches for e in batch]
    assert run.status == "succeeded"
    assert events[0].status == "running" and events[-1].status == "succeeded"
    task_events = [e for e in events if isinstance(e, nf.TaskEvent)]
    finals = {e.task: e.state for e in task_events if e.branch is None}
    assert finals == {"load": "succeeded", "square": "succeeded", "total": "succeeded",
                      "report": "succeeded"}
    branch_states = [(e.branch, e.state) for e in task_events
                     if e.task == "square" and e.branch is not None]
    for b in range(3):
        assert (b, "succeeded") in branch_states
    assert len(batches) < len(events)  # delivered in batches, not one call per event
    logged = [r for r in caplog.records if r.name == "nbflow.events"]
    assert logged and all("stays registered" in r.getMessage() for r in logged)
    assert len(logged) == len(batches)  # once per batch it could not take, and kept


class RunEventsOnly(list):
    """An observer that asks for run events only (as the run history does)."""

    wants_task_events = False

    def __call__(self, events):
        self.extend(events)


def test_an_observer_of_run_events_only_makes_the_run_build_no_task_events():
    flow, _ = pipeline()
    only_runs = RunEventsOnly()
    run = flow.run(observers=[only_runs], executor="threads")
    assert run.status == "succeeded"
    assert only_runs and all(isinstance(e, nf.RunEvent) for e in only_runs)
    assert [e.status for e in only_runs] == ["running", "succeeded"]
    # the views are built when asked for, and are the same
    assert {n: v.state for n, v in run.tasks.items()} == {
        "load": "succeeded", "square": "succeeded", "total": "succeeded", "report": "succeeded"}
    assert run.tasks["square"].done == 3

    # with an observer of task events beside it, task events are built (and both get them)
    flow.cache.clear()
    both, every = RunEventsOnly(), []
    flow.run(observers=[both, every.extend], executor="threads")
    assert any(isinstance(e, nf.TaskEvent) for e in every)
    assert [e for e in both] == every


def test_slow_observer_does_not_slow_the_run():
    flow = nf.Flow("slow-observer")

    @flow.task(cache=False)
    def items():
        return list(range(200))

    @flow.task(map="items", cache=False)
    def work(items):
        return items

    calls = []
    release = threading.Event()

    def slow(events):
        calls.append(len(events))
        release.wait(30)  # busy with its first batch until the test says so

    everything = []
    run = flow.run(observers=[slow, everything.extend], background=True)
    # the scheduler finishes every task while the observer still holds its first batch
    wait_until(lambda: calls and all(v.final for v in run.tasks.values()))
    assert len(calls) == 1  # its first batch (which may hold everything) and no other
    assert run.status == "running" and not run.done  # final inside, events still in flight
    release.set()
    run.wait(30)
    assert run.status == "succeeded"
    # each observer saw every event once: 2 run events, 3 per task, 3 per branch
    assert sum(calls) == len(everything) == 2 + 2 * 3 + 200 * 3
    assert everything[-1] == nf.RunEvent(run.id, "slow-observer", "succeeded", everything[-1].time)


def test_async_observer_is_awaited():
    flow, _ = pipeline()
    seen = []

    async def observer(events):
        seen.extend(events)

    flow.run(observers=[observer])
    assert seen and seen[-1].status == "succeeded"


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import nbflow as nf

    flow = nf.Flow("interrupt")

    @flow.task(cache=False)
    def long():
        time.sleep(120)  # ends only if the interrupt failed to cancel the run

    @flow.task(cache=False)
    def after(long):
        return long

    def started(events):
        if any(getattr(e, "task", None) == "long" and e.state == "running" for e in events):
            print("running", flush=True)

    if __name__ == "__main__":
        try:
            flow.run(executor=sys.argv[1], observers=[started])
        except KeyboardInterrupt:
            run = flow.last_run
            print("interrupted", run.status, run.states["long"], run.states["after"], flush=True)
    """
)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_keyboard_interrupt_cancels_a_blocking_run(tmp_path, executor):
    script = tmp_path / "interrupt.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), executor], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # cancelled, not succeeded: the run ended on the interrupt, before the task could
    assert out.strip() == "interrupted cancelled cancelled cancelled"


def test_processes_run_functions_defined_in_main(tmp_path):
    script = tmp_path / "main_funcs.py"
    script.write_text(textwrap.dedent(
        """
        import os
        import nbflow as nf

        def helper(x):
            return x * 3

        flow = nf.Flow("main")

        @flow.task
        def items():
            return [1, 2, 3]

        @flow.task(map="items")
        def triple(items):
            return (helper(items), os.getpid())

        if __name__ == "__main__":
            run = flow.run(executor="processes")
            values = [v for v, _ in run.results["triple"]]
            pids = {p for _, p in run.results["triple"]}
            print(values, os.getpid() in pids)
        """
    ))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[3, 6, 9] False"


def test_unguarded_script_with_processes_gets_a_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(
        """
        import nbflow as nf
        flow = nf.Flow("u")

        @flow.task
        def a():
            return 1

        run = flow.run(executor="processes", raise_on_failure=False)
        print(run.status, "__name__ == '__main__'" in run.failures[0].traceback)
        """
    ))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "failed True"
