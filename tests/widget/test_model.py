"""DagWidget without a browser: deltas are batched, details travel with them, the static
SVG shows the final states, the repr is stable, actions start runs through the runner,
and layouts never stall an event loop. Tests wait on events, never on the clock."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import wait_until

import nbflow as nf
from nbflow.events import RunEvent, TaskEvent
from nbflow.views import TaskView
from nbflow.widget import DagWidget
from nbflow.widget.layout import to_graphviz
from nbflow.widget.service import LayoutService
from nbflow.widget.throttle import Throttle

from .conftest import gated_flow, node_states, random_structure
from .test_throttle import FakeTimers


def when(widget: DagWidget, condition: Callable[[dict[str, Any]], bool]) -> threading.Event:
    """An event set once a delta sent by ``widget`` satisfies ``condition``."""
    seen = threading.Event()

    def check(change: dict[str, Any]) -> None:
        if condition(change["new"]):
            seen.set()

    widget.observe(check, names="delta")
    return seen


def started_event(run: nf.Run, task: str, state: str = "running") -> threading.Event:
    """An event set once ``run`` reports ``task`` in ``state`` (an observer, no polling)."""
    seen = threading.Event()

    def check(events: Sequence[Any]) -> None:
        if any(type(e) is TaskEvent and e.task == task and e.state == state for e in events):
            seen.set()

    run.observe(check)
    if run.task(task).state == state:  # it got there before we listened
        seen.set()
    return seen


def finished_widget(flow: nf.Flow) -> DagWidget:
    run = flow.run(background=True)
    widget = run.widget(flow)
    run.wait()
    assert widget.wait_layout(60)
    return widget


def test_repr_is_stable_and_counts_states():
    flow = nf.Flow("five")
    for i in range(5):
        flow.task(name=f"t{i}")(lambda: 1)
    widget = flow.widget()
    assert repr(widget) == "DagWidget(5 tasks: 5 pending)"
    flow.run()
    widget.refresh()
    assert repr(widget) == "DagWidget(5 tasks: 5 succeeded)"


def test_final_states_details_and_static_svg(demo_flow):
    widget = finished_widget(demo_flow)
    expected = {"load_data": "succeeded", "numbers": "succeeded", "square": "succeeded",
                "total": "succeeded", "fails": "failed", "report": "skipped"}
    assert {n: i["s"] for n, i in widget.snapshot["nodes"].items()} == expected
    assert repr(widget) == "DagWidget(6 tasks: 4 succeeded, 1 failed, 1 skipped)"
    assert widget.run_status == "failed"
    nodes = widget.snapshot["nodes"]
    assert "ValueError: total 14 is no good" in nodes["fails"]["err"]
    assert nodes["square"]["d"] == 3 and nodes["square"]["n"] == 3
    assert "squaring 2" in nodes["square"]["out"]
    assert nodes["total"]["res"] == {"text": "14"}
    assert nodes["total"]["w"].startswith("thread")
    assert nodes["total"]["t1"] >= nodes["total"]["t0"]
    assert "fails" in nodes["report"]["why"]

    data = widget._repr_mimebundle_()
    bundle = data[0] if isinstance(data, tuple) else data
    assert bundle["text/plain"] == repr(widget)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert node_states(bundle["image/svg+xml"]) == expected
    # the synced SVG is the bare layout: the front end paints it
    assert set(node_states(widget.svg)) == set(expected)


def test_result_preview_uses_repr_html_when_there_is_one():
    class Table:
        def _repr_html_(self):
            return "<table><tr><td>42</td></tr></table>"

    flow = nf.Flow("html")
    flow.task(name="table")(lambda: Table())
    flow.task(name="long")(lambda: "x" * 100_000)
    nodes = finished_widget(flow).snapshot["nodes"]
    assert nodes["table"]["res"] == {"html": "<table><tr><td>42</td></tr></table>"}
    assert len(nodes["long"]["res"]["text"]) < 1000


def test_deltas_are_batched():
    flow = nf.Flow("many")

    @flow.task
    def items():
        return list(range(400))

    @flow.task(map="items")
    def work(items):
        time.sleep(0.002)  # work to do, so the run spans several deltas
        return items

    events: list[int] = []  # an observer from the start, which wants every branch's events
    run = flow.run(background=True, executor=nf.ThreadExecutor(max_workers=2),
                   observers=[lambda batch: events.append(len(batch))])
    widget = run.widget(flow)
    deltas: list[dict] = []
    snapshots: list[int] = []
    widget.observe(lambda change: deltas.append(change["new"]), names="delta")
    widget.observe(lambda change: snapshots.append(widget.snapshot["seq"]),
                   names="snapshot_json")
    run.wait()
    assert sum(events) > 1000  # ready, running and finished for each of 400 branches
    # the last delta may still be on its way from the event thread when the run ends
    wait_until(lambda: len(deltas) == widget.deltas_sent and snapshots
               and snapshots[-1] > deltas[-1]["seq"], what="the last delta and snapshot")
    assert 2 <= len(deltas) <= sum(events) / 20  # many events to a delta
    seqs = [d["seq"] for d in deltas]
    assert seqs == sorted(set(seqs))  # in order, none twice
    assert snapshots and snapshots[-1] > seqs[-1]  # the final snapshot comes last
    assert widget.snapshot["nodes"]["work"]["d"] == 400
    assert widget.snapshot["nodes"]["work"]["s"] == "succeeded"


def test_the_widget_sends_at_most_one_delta_per_interval_and_the_final_one_at_once():
    """Driven with a fake clock: events in, deltas out, in that order (no sleeping)."""
    flow = nf.Flow("throttled")
    flow.task(name="a")(lambda: 1)
    flow.task(name="b")(lambda: 2)
    run = flow.run()
    widget = run.widget(flow)
    timers = FakeTimers()
    widget._throttle = Throttle(widget.flush, widget.interval, clock=timers.clock,
                                start_timer=timers.start)
    deltas: list[dict] = []
    widget.observe(lambda change: deltas.append(change["new"]["nodes"]), names="delta")

    def event(task: str, state: str) -> TaskEvent:
        view = TaskView(task, state, attempts=1, started=1.0)  # type: ignore[arg-type]
        return TaskEvent(run.id, task, None, view.state, 1, 1.0, view=view)

    widget([event("a", "running")])
    assert [list(d) for d in deltas] == [["a"]]  # the first change goes out at once
    widget([event("b", "running")])
    other = TaskEvent("another-run", "a", None, "failed", 1, 1.0, view=TaskView("a", "failed"))
    widget([event("a", "retrying"), other, event("b", "retrying")])  # other runs: ignored
    assert len(deltas) == 1 and len(timers.started) == 1  # held back...
    timers.fire()
    assert deltas[1] == {"a": {"s": "retrying", "a": 1, "t0": 1.0},
                         "b": {"s": "retrying", "a": 1, "t0": 1.0}}  # ...and sent together
    timers.now += widget.interval / 2
    widget([event("a", "running"), RunEvent(run.id, flow.name, "failed", 2.0)])
    assert len(deltas) == 3 and deltas[2] == {"a": {"s": "running", "a": 1, "t0": 1.0}}
    assert widget.run_status == "failed"  # the final event's status, not the run's own
    assert not timers.started  # nothing left to send after the end
    assert widget.snapshot["seq"] > 0 and widget.snapshot["nodes"]["a"]["s"] == "running"


def test_a_mapped_task_with_10000_branches_is_one_node():
    flow = nf.Flow("wide")
    flow.task(name="root")(lambda: list(range(10_000)))
    flow.task(name="leaf", map="root")(lambda root: root)
    widget = finished_widget(flow)
    assert set(node_states(widget.svg)) == {"root", "leaf"}
    leaf = widget.snapshot["nodes"]["leaf"]
    assert (leaf["d"], leaf["n"], leaf["c"]) == (10_000, 10_000, {"succeeded": 10_000})


def test_node_actions_rerun_downstream_and_run_what_it_needs(demo_flow):
    widget = finished_widget(demo_flow)
    run = widget.act("rerun", "square")
    assert run is widget.run
    run.wait()
    assert run.states == {"load_data": "cached", "numbers": "cached", "square": "succeeded",
                          "total": "succeeded", "fails": "failed", "report": "skipped"}
    run = widget.act("needs", "total")
    run.wait()
    assert run.states == {"load_data": "cached", "numbers": "cached", "square": "cached",
                          "total": "cached"}
    assert widget.snapshot["nodes"]["fails"]["s"] == "failed"  # not in this run: kept
    with pytest.raises(ValueError, match="unknown widget action"):
        widget.act("explode", "total")


def test_cancel_action_cancels_the_followed_run():
    release = threading.Event()
    flow = nf.Flow("slow")
    flow.task(name="nap")(lambda: release.wait(10))
    flow.task(name="after_nap")(lambda nap: 1)
    run = flow.run(background=True)
    widget = run.widget(flow)
    try:
        assert started_event(run, "nap").wait(10)
        widget.act("cancel")
        run.wait(timeout=10)
    finally:
        release.set()
    assert run.status == "cancelled"
    assert widget.run_status == "cancelled"


def test_cancel_task_action_cancels_that_task_only():
    release = threading.Event()
    flow = nf.Flow("partial")
    flow.task(name="nap")(lambda: release.wait(10))
    flow.task(name="after_nap")(lambda nap: 1)
    flow.task(name="other")(lambda: 2)
    run = flow.run(background=True)
    widget = run.widget(flow)
    try:
        assert started_event(run, "nap").wait(10)
        widget.act("cancel_task", "nap")
        run.wait(timeout=10)
    finally:
        release.set()
    assert run.states == {"nap": "cancelled", "after_nap": "skipped", "other": "succeeded"}
    widget.flush(final=True)
    assert widget.snapshot["nodes"]["nap"]["s"] == "cancelled"
    assert widget.run_status == "cancelled"


def test_the_layout_process_does_not_stall_an_event_loop():
    """A 2,000-node layout takes Graphviz about a second in another process; meanwhile an
    event loop goes on: its ticker ticks many times between the request and the SVG."""
    structure = random_structure(2000)
    service = LayoutService()

    async def measure() -> tuple[bool, int]:
        future = service.layout(structure.key, lambda: to_graphviz(structure).source)
        pending_at_return = not future.done()
        ticks = 0
        while not future.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert "<svg" in future.result()
        return pending_at_return, ticks

    try:
        pending_at_return, ticks = asyncio.run(measure())
        assert service.pid is not None and service.pid != os.getpid()
    finally:
        service.close()
    assert pending_at_return  # the request returned before the layout was done...
    assert ticks >= 10  # ...and the loop kept ticking while Graphviz worked


def test_a_mapped_task_s_progress_reaches_the_front_end_while_it_runs():
    """No branch events reach the widget; a delta still shows 2/4 before the run ends."""
    release = threading.Event()
    flow = nf.Flow("progress")
    flow.task(name="items")(lambda: [0, 1, 2, 3])

    @flow.task(map="items")
    def work(items):
        if items >= 2:
            release.wait(10)
        return items

    run = flow.run(background=True, executor=nf.ThreadExecutor(max_workers=4))
    widget = run.widget(flow)
    halfway = when(widget, lambda d: d["nodes"].get("work", {}).get("d") == 2)
    try:
        assert halfway.wait(10)
        assert not run.done and widget.run_status == "running"
    finally:
        release.set()
    run.wait(10)
    work_node = widget.snapshot["nodes"]["work"]
    assert (work_node["s"], work_node["d"], work_node["n"]) == ("succeeded", 4, 4)
    assert widget.run_status == "succeeded"


def test_a_widget_of_a_finished_run_is_complete_at_once():
    flow = nf.Flow("done")
    flow.task(name="one")(lambda: 1)
    flow.task(name="two")(lambda one: 1 / 0)
    run = flow.run(raise_on_failure=False)
    widget = run.widget()  # no flow: the run's tasks, and no actions
    assert widget.run_status == "failed"
    assert {n: i["s"] for n, i in widget.snapshot["nodes"].items()} == {
        "one": "succeeded", "two": "failed"}
    assert "ZeroDivisionError" in widget.snapshot["nodes"]["two"]["err"]
    assert not widget.actions
    with pytest.raises(ValueError, match="cannot start runs"):
        widget.act("needs", "one")


def test_actions_start_runs_through_the_runner(demo_flow):
    calls: list[tuple[list[str] | None, list[str]]] = []

    def runner(targets: Sequence[str] | None, force: Sequence[str]) -> nf.Run:
        calls.append((None if targets is None else list(targets), list(force)))
        # an observer from the start, as %nbflow's runner has (it binds results)
        return demo_flow.run(targets, force=force, background=True,
                             observers=[lambda events: None])

    run = demo_flow.run(background=True)
    widget = DagWidget(demo_flow, run, runner=runner)
    assert widget.actions
    run.wait()
    new = widget.act("rerun", "total")
    assert new is widget.run
    new.wait()
    new = widget.act("rerun_failed")  # the run's tasks again, the failed one forced
    new.wait()
    new = widget.act("needs", "square")
    new.wait()
    with pytest.raises(ValueError, match="no failed task"):
        widget.act("rerun_failed")  # that run has none
    assert calls == [(["total", "fails", "report"], ["total", "fails", "report"]),
                     (["load_data", "numbers", "square", "total", "fails", "report"],
                      ["fails", "report"]),
                     (["square"], [])]


def test_the_default_runner_is_flow_run_with_force(demo_flow):
    widget = finished_widget(demo_flow)
    run = widget.act("rerun", "total")
    assert run is demo_flow.last_run  # started the way any run is
    run.wait()
    assert run.task("total").forced and run.task("fails").forced
    assert not run.task("square").forced


def test_stale_results_are_drawn_stale_with_the_reason():
    class Changing(nf.Flow):
        def stale(self, name: str) -> str | None:
            super().stale(name)
            return "its code changed" if name == "clean" else None

    flow = Changing("stale")
    flow.task(name="load")(lambda: 1)
    flow.task(name="clean")(lambda load: load)
    flow.run()
    widget = flow.widget()
    nodes = widget.snapshot["nodes"]
    assert (nodes["load"]["s"], nodes["clean"]["s"]) == ("succeeded", "stale")
    assert nodes["clean"]["stale"] == "its code changed"
    assert repr(widget) == "DagWidget(2 tasks: 1 succeeded, 1 stale)"


def test_the_front_end_gets_the_states_from_python(demo_flow):
    from nbflow.states import TASK_STATES
    from nbflow.widget import layout

    widget = demo_flow.widget()
    assert widget.legend == list(layout.STATES)
    assert widget.styles == layout.STYLES
    assert widget.state_rules == layout.state_rules()
    assert set(widget.state_rules["open"]) < set(TASK_STATES)
    js = (layout.__file__.rsplit("/", 1)[0]) + "/widget.js"
    with open(js, encoding="utf-8") as f:
        source = f.read()
    source = source.replace('layout === "pending"', "").replace('layout !== "ready"', "")
    for state in (*TASK_STATES, "stale"):  # (those two are layout statuses)
        assert f'"{state}"' not in source, state


def test_the_kernel_answers_a_views_ping():
    """A view pings on render; the answer tells it a kernel is behind it (a view drawn
    from saved widget state gets none, and says so: see test_browser.py)."""
    flow = nf.Flow("ping")
    flow.task(name="a")(lambda: 1)
    widget = flow.widget()
    sent: list[Any] = []
    widget.send = sent.append  # type: ignore[method-assign]
    widget._on_message(widget, {"action": "ping"}, [])
    assert sent == [{"pong": None}]
    assert widget.run is None  # and nothing else happened


def test_attach_leaves_the_snapshot_to_the_helper_thread(monkeypatch):
    """attach() on the kernel's thread only starts following the run: the snapshot (every
    view, read and sent) is taken on the widgets' helper thread; the structure is built
    again only when the flow's tasks changed."""
    flow, gate = gated_flow("helped")

    widget = DagWidget(flow)
    structure = widget._structure
    taken: list[str] = []
    take = DagWidget._take_snapshot

    def recording(self: DagWidget, run: Any) -> None:
        taken.append(threading.current_thread().name)
        take(self, run)

    monkeypatch.setattr(DagWidget, "_take_snapshot", recording)
    run = flow.run(background=True)
    try:
        widget.attach(run)
        assert widget._structure is structure  # the same tasks: not built again
        wait_until(lambda: taken, 30, "the snapshot is taken")
        assert taken == ["nbflow-widget"]
        wait_until(lambda: widget.counts() == {"succeeded": 1, "running": 1}, 30,
                   "the widget shows the run")
    finally:
        gate.set()
        run.wait(30)
    wait_until(lambda: widget.run_status == "succeeded", 30, "the run's end")

    @flow.task
    def third(second: int) -> int:
        return second

    widget.attach(flow.run(background=True).wait())
    assert widget._structure is not structure and "third" in widget._structure.names
