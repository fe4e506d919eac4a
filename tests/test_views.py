"""Task views, stories, forced re-runs and the machine's table: what the rest of nbflow reads."""

from __future__ import annotations

import dataclasses
import logging
import threading

import pytest

import nbflow as nf
from nbflow.messages import CacheAnswer, Finished, Start, Take
from nbflow.transitions import ITEM_TABLE, RUN_TABLE, Transitions


def test_a_view_is_a_frozen_snapshot_of_a_task():
    flow = nf.Flow("views")

    @flow.task
    def numbers(n: int = 3):
        print("numbers runs")
        return list(range(n))

    @flow.task(map="numbers")
    def square(numbers):
        return numbers * numbers

    run = flow.run()
    plain, mapped = run.task("numbers"), run.task("square")
    assert isinstance(plain, nf.TaskView) and plain.name == "numbers"
    assert (plain.state, plain.attempts, plain.mapped, plain.branches) == ("succeeded", 1, False, None)
    assert plain.ok and plain.final and plain.duration is not None and plain.duration >= 0
    assert plain.where is not None and plain.where.startswith("thread")
    assert plain.output[None].text() == "numbers runs\n"
    assert plain.key is not None and not plain.forced
    assert (mapped.branches, mapped.done, dict(mapped.counts), mapped.label) == (
        3, 3, {"succeeded": 3}, "3/3")
    assert run.tasks == {"numbers": plain, "square": mapped}
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.state = "failed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        mapped.counts["failed"] = 1  # type: ignore[index]
    with pytest.raises(nf.ResultUnavailableError, match="nope"):
        run.task("nope")


def test_failed_and_skipped_tasks_say_why_in_their_views():
    flow = nf.Flow("why")

    @flow.task
    def broken():
        raise ValueError("no data")

    @flow.task
    def after(broken):
        return broken

    run = flow.run(raise_on_failure=False)
    failed, skipped = run.task("broken"), run.task("after")
    assert failed.state == "failed" and isinstance(failed.error, nf.Failed)
    assert "ValueError: no data" in failed.error.traceback
    assert skipped.state == "skipped" and skipped.skip_reason == "upstream 'broken' failed"


def test_a_story_tells_each_transition_and_its_cause():
    flow = nf.Flow("story")

    @flow.task(retries=1, cache=False)
    def flaky(marker: list = []):  # noqa: B006 - counts calls across attempts
        marker.append(1)
        if len(marker) == 1:
            raise RuntimeError("first attempt fails")
        return len(marker)

    run = flow.run()
    story = run.story("flaky")
    assert [(e.state, e.cause) for e in story] == [
        ("ready", "Start"), ("running", "Take"), ("retrying", "Finished"),
        ("ready", "RetryDue"), ("running", "Take"), ("succeeded", "Finished")]
    assert all(isinstance(e, nf.StoryEntry) and e.branch is None for e in story)
    assert [e.time for e in story] == sorted(e.time for e in story)


def test_a_mapped_tasks_story_keeps_its_first_branch_transitions():
    flow = nf.Flow("long story")

    @flow.task
    def items():
        return list(range(500))

    @flow.task(map="items", cache=False)
    def each(items):
        return items

    run = flow.run()
    story = run.story("each")
    branch_entries = [e for e in story if e.branch is not None]
    assert len(branch_entries) <= 200
    assert story[-1].branch is None and story[-1].state == "succeeded"


def test_force_recomputes_and_replaces_what_the_cache_holds():
    flow = nf.Flow("force")
    calls: list[int] = []

    @flow.task
    def reading():
        calls.append(1)
        return len(calls)  # a new value on every call: the cache must not serve an old one

    @flow.task
    def report(reading):
        return f"reading {reading}"

    assert flow.run().results["report"] == "reading 1"
    cached = flow.run()
    assert cached.states == {"reading": "cached", "report": "cached"}
    forced = flow.run(force=["reading", "report"])
    assert forced.states == {"reading": "succeeded", "report": "succeeded"}
    assert forced.task("reading").forced and forced.results["report"] == "reading 2"
    again = flow.run()  # the forced results replaced the cached ones
    assert again.states == {"reading": "cached", "report": "cached"}
    assert again.results["report"] == "reading 2"
    assert len(calls) == 2


def test_force_adds_its_tasks_to_the_targets_and_checks_their_names():
    flow = nf.Flow("force targets")

    @flow.task
    def a():
        return 1

    @flow.task
    def b():
        return 2

    run = flow.run("a", force="b")
    assert run.states == {"a": "succeeded", "b": "succeeded"}
    with pytest.raises(nf.UnknownTaskError, match="bb"):
        flow.run(force=["bb"])


def test_cache_key_parts_are_computed_on_the_callers_thread_not_the_schedulers():
    flow = nf.Flow("key parts")
    threads: list[str] = []

    def key_extra() -> str:
        threads.append(threading.current_thread().name)
        return "globals v1"

    task = nf.Task.from_function(lambda: 1, name="cell", key_extra=key_extra)
    flow.add(task)
    assert flow.run().states == {"cell": "succeeded"}
    assert threads == [threading.current_thread().name]


def test_a_failing_key_part_means_no_cache_not_a_failed_run(caplog):
    flow = nf.Flow("bad key part")

    def key_extra() -> str:
        raise RuntimeError("cannot inspect the notebook")

    flow.add(nf.Task.from_function(lambda: 1, name="cell", key_extra=key_extra))
    with caplog.at_level(logging.WARNING, logger="nbflow"):
        first = flow.run()
        second = flow.run()
    assert first.states == second.states == {"cell": "succeeded"}  # never cached
    assert first.task("cell").key is None
    assert "cache key of task 'cell' could not be computed" in caplog.text


def test_views_read_from_another_thread_are_consistent_while_the_run_changes_them():
    flow = nf.Flow("readers")
    go = threading.Event()

    @flow.task
    def items():
        return list(range(3000))

    @flow.task(map="items", cache=False)
    def each(items):
        return items

    problems: list[str] = []
    seen_running = threading.Event()

    def read(run: nf.Run) -> None:
        go.wait()
        while not run.done:
            view = run.task("each")
            if view.done != sum(view.counts.values()):
                problems.append(f"done {view.done} but counts {dict(view.counts)}")
            if view.final and view.ended is None:
                problems.append("final without an end time")
            if view.state == "running":
                seen_running.set()

    run = flow.run(background=True, executor="inline")
    reader = threading.Thread(target=read, args=(run,))
    reader.start()
    go.set()
    run.wait()
    reader.join()
    assert problems == []
    assert run.task("each").done == 3000


def test_a_tasks_own_events_carry_its_view():
    flow = nf.Flow("event views")

    @flow.task
    def a():
        return 1

    seen: list[nf.TaskEvent] = []
    flow.run(observers=[lambda batch: seen.extend(e for e in batch if isinstance(e, nf.TaskEvent))])
    assert [(e.state, e.view.state) for e in seen] == [
        ("ready", "ready"), ("running", "running"), ("succeeded", "succeeded")]
    assert seen[-1].view.ended is not None


def test_the_table_names_a_handler_for_every_entry():
    plan = nf.Flow("empty").plan()
    machine = Transitions(plan, "r")
    for name in list(ITEM_TABLE.values()) + list(RUN_TABLE.values()):
        assert callable(getattr(machine, name)), name


def test_a_late_answer_is_dropped_by_the_table():
    flow = nf.Flow("late")

    @flow.task
    def a():
        return 1

    machine = Transitions(flow.plan(), "r")
    [lookup] = machine.handle(Start())
    assert machine.handle(CacheAnswer(lookup.item, False)) == []  # a miss: a is ready
    assert machine.handle(CacheAnswer(lookup.item, True, 1)) == []  # a second answer: late
    [execute] = machine.handle(Take(1))
    assert machine.handle(Finished((execute.item, execute.attempt + 1), True, 2, 0.0, 0.0)) == []
    assert machine.view(0).state == "running"  # an answer for another attempt changed nothing
    machine.validate_state()


def test_a_plain_flow_holds_nothing_stale():
    flow = nf.Flow("fresh")

    @flow.task
    def a():
        return 1

    assert flow.stale("a") is None
    with pytest.raises(nf.UnknownTaskError):
        flow.stale("b")
