"""DagWidget without a browser: deltas are batched, details travel with them, the static
SVG shows the final states, the repr is stable, and layouts never stall an event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import nbflow as nf
from nbflow.widget import DagWidget
from nbflow.widget.layout import to_graphviz
from nbflow.widget.service import LayoutService

from .conftest import node_states, random_structure


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


def test_deltas_are_batched_to_about_ten_per_second():
    flow = nf.Flow("many")

    @flow.task
    def items():
        return list(range(400))

    @flow.task(map="items")
    def work(items):
        time.sleep(0.002)
        return items

    events: list[int] = []  # an observer from the start, which wants every branch's events
    run = flow.run(background=True, executor=nf.ThreadExecutor(max_workers=2),
                   observers=[lambda batch: events.append(len(batch))])
    widget = run.widget(flow)
    deltas: list[dict] = []
    widget.observe(lambda change: deltas.append(change["new"]), names="delta")
    started = time.monotonic()
    run.wait()
    elapsed = time.monotonic() - started
    assert sum(events) > 1000  # ready, running and finished for each of 400 branches
    assert len(deltas) == widget.deltas_sent
    assert 2 <= len(deltas) <= elapsed / widget.interval + 3
    # never faster than the throttle, except the run's final delta, which goes out at once
    gaps = [b["time"] - a["time"] for a, b in zip(deltas[:-1], deltas[1:-1])]
    assert gaps and min(gaps) >= widget.interval * 0.8
    assert widget.snapshot["nodes"]["work"]["d"] == 400
    assert widget.snapshot["nodes"]["work"]["s"] == "succeeded"


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
    flow = nf.Flow("slow")
    flow.task(name="nap")(lambda: time.sleep(5))
    flow.task(name="after_nap")(lambda nap: 1)
    run = flow.run(background=True)
    widget = run.widget(flow)
    time.sleep(0.2)
    widget.act("cancel")
    run.wait(timeout=10)
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
    deadline = time.monotonic() + 10
    while run.states["nap"] != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    widget.act("cancel_task", "nap")
    run.wait(timeout=10)
    release.set()
    assert run.states == {"nap": "cancelled", "after_nap": "skipped", "other": "succeeded"}
    widget.flush(final=True)
    assert widget.snapshot["nodes"]["nap"]["s"] == "cancelled"
    assert widget.run_status == "cancelled"


def test_the_layout_process_does_not_stall_an_event_loop():
    """A 2,000-node layout takes Graphviz about a second; a 10 ms ticker keeps beating."""
    structure = random_structure(2000)
    service = LayoutService()

    async def measure() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        future = service.layout(structure.key, lambda: to_graphviz(structure).source)
        worst, last, started = 0.0, loop.time(), loop.time()
        while not future.done():
            await asyncio.sleep(0.01)
            now = loop.time()
            worst, last = max(worst, now - last), now
        return worst, loop.time() - started

    try:
        worst, took = asyncio.run(measure())
    finally:
        service.close()
    assert took > 0.2  # the layout was real work...
    assert worst < 0.15  # ...and the loop kept its 10 ms beat (generous for a busy CI box)
