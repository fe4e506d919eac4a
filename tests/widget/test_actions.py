"""The widget's actions without a browser: "re-run failed" re-runs the failed tasks and
what depends on them (the rest from the cache); the buttons that show and the status
line follow the run (decided in Python). Tests wait on conditions, never on the clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import nbflow as nf
from nbflow.widget import DagWidget

from .test_model import started_event

#: failures left for the flaky task (reset by each test that builds the flow)
FAILS_LEFT = {"flaky": 0}
#: how often each task of the flaky flow was computed
CALLS: dict[str, int] = {}


def build_flaky() -> nf.Flow:
    """``source -> flaky -> after`` and an ``unrelated`` task; ``flaky`` fails once."""
    FAILS_LEFT["flaky"] = 1
    CALLS.clear()
    flow = nf.Flow("flaky")

    def count(name: str) -> None:
        CALLS[name] = CALLS.get(name, 0) + 1

    @flow.task
    def source():
        count("source")
        return 2

    @flow.task
    def flaky(source):
        count("flaky")
        if FAILS_LEFT["flaky"]:
            FAILS_LEFT["flaky"] -= 1
            raise ValueError("flaky: not this time")
        return source * 10

    @flow.task
    def after(flaky):
        count("after")
        return flaky + 1

    @flow.task
    def unrelated():
        count("unrelated")
        return "same"

    return flow


def until(widget: DagWidget, trait: str, condition: Callable[[Any], bool],
          timeout: float = 30) -> Any:
    """Wait until ``widget``'s ``trait`` satisfies ``condition`` (a trait observer, no
    polling); returns its value. Fails with the last value after ``timeout``."""
    seen = threading.Event()

    def check(change: dict[str, Any]) -> None:
        if condition(change["new"]):
            seen.set()

    widget.observe(check, names=trait)
    try:
        if not condition(getattr(widget, trait)):
            assert seen.wait(timeout), f"{trait} stayed {getattr(widget, trait)!r}"
    finally:
        widget.unobserve(check, names=trait)
    return getattr(widget, trait)


def states(widget: DagWidget) -> dict[str, str]:
    return {name: info["s"] for name, info in widget.snapshot["nodes"].items()}


def test_rerun_failed_reruns_the_failed_tasks_and_their_downstream_only():
    flow = build_flaky()
    run = flow.run(background=True)
    widget = run.widget(flow)
    run.wait(timeout=30)
    until(widget, "status_line", lambda s: s == "run failed (1 failed task)")
    assert "rerun_failed" in widget.available and "cancel" not in widget.available
    assert states(widget) == {"source": "succeeded", "flaky": "failed", "after": "skipped",
                              "unrelated": "succeeded"}

    new = widget.act("rerun_failed")
    assert new is not None and new is widget.run and new is not run
    new.wait(timeout=30)
    assert new.states == {"source": "cached", "flaky": "succeeded", "after": "succeeded",
                          "unrelated": "cached"}
    assert new.task("flaky").forced and new.task("after").forced
    assert not new.task("unrelated").forced and not new.task("source").forced
    assert CALLS == {"source": 1, "flaky": 2, "after": 1, "unrelated": 1}
    assert new.results["after"] == 21

    until(widget, "status_line", lambda s: s == "run succeeded")
    assert states(widget) == new.states
    assert "rerun_failed" not in widget.available
    with pytest.raises(ValueError, match="no failed task"):
        widget.act("rerun_failed")


def test_rerun_failed_from_a_flow_widget_shown_after_the_run():
    flow = build_flaky()
    flow.run(raise_on_failure=False)
    widget = flow.widget()  # the last run's states, not attached to it
    assert widget.status_line == "run failed (1 failed task)"
    assert widget.available == ["rerun_failed", "rerun", "needs"]
    new = widget.act("rerun_failed")
    assert new is not None
    new.wait(timeout=30)
    assert new.states == {"source": "cached", "flaky": "succeeded", "after": "succeeded",
                          "unrelated": "cached"}
    until(widget, "available", lambda a: a == ["rerun", "needs"])


def test_no_cancel_or_rerun_buttons_before_a_run_and_cancel_only_while_one_goes_on():
    release = threading.Event()
    flow = nf.Flow("buttons")
    flow.task(name="nap")(lambda: release.wait(30))
    flow.task(name="after_nap")(lambda nap: 1)
    widget = flow.widget()
    assert widget.available == ["needs"]  # nothing to cancel or re-run yet
    assert widget.status_line == "not run yet"

    run = widget.act("needs", "after_nap")
    assert run is not None
    try:
        assert started_event(run, "nap").wait(30)
        until(widget, "status_line", lambda s: s == "run running")
        assert widget.available == ["cancel", "cancel_task"]  # no second run meanwhile
    finally:
        release.set()
    run.wait(timeout=30)
    until(widget, "status_line", lambda s: s == "run succeeded")
    assert widget.available == ["rerun", "needs"]  # nothing failed: no "re-run failed"


def test_the_status_line_does_not_say_succeeded_beside_a_failed_node(demo_flow):
    run = demo_flow.run(background=True)
    widget = run.widget(demo_flow)
    run.wait(timeout=30)
    until(widget, "status_line", lambda s: s == "run failed (1 failed task)")
    new = widget.act("needs", "total")  # succeeds; "fails" is not in it and stays red
    assert new is not None
    new.wait(timeout=30)
    line = until(widget, "status_line", lambda s: s != "run failed (1 failed task)"
                 and "running" not in s and "pending" not in s)
    assert widget.run_status == "succeeded" and states(widget)["fails"] == "failed"
    assert line == "run ended (1 failed task from an earlier run)"
    assert "rerun_failed" not in widget.available  # that run has no failed task


def test_a_widget_of_a_run_without_its_flow_offers_no_runs():
    flow = nf.Flow("alone")
    flow.task(name="one")(lambda: 1)
    flow.task(name="two")(lambda one: 1 / 0)
    run = flow.run(raise_on_failure=False)
    widget = run.widget()
    assert widget.status_line == "run failed (1 failed task)"
    assert widget.available == []
    with pytest.raises(ValueError, match="cannot start runs"):
        widget.act("rerun_failed")


def test_the_failed_node_s_exception_line_travels_with_its_details(demo_flow):
    run = demo_flow.run(background=True)
    widget = run.widget(demo_flow)
    run.wait(timeout=30)
    until(widget, "status_line", lambda s: s.startswith("run failed"))
    node = widget.snapshot["nodes"]["fails"]
    assert node["exc"] == "ValueError: total 14 is no good"
    assert node["err"].rstrip().endswith(node["exc"])
