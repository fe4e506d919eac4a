"""Task views -> node JSON, without anywidget or ipywidgets: node info, details, previews,
counts, staleness, and the state table the front end gets instead of naming states."""

from __future__ import annotations

import json
import subprocess
import sys
from types import MappingProxyType

import pytest

import nbflow as nf
from nbflow.capture import Capture
from nbflow.states import FINAL, TASK_STATES
from nbflow.values import Failed
from nbflow.views import TaskView
from nbflow.widget import layout, nodes


def captured(out: str = "", err: str = "") -> Capture:
    cap = Capture()
    if out:
        cap.stdout.append(out)
    if err:
        cap.stderr.append(err)
    return cap


def test_the_nodes_module_needs_no_widget_library():
    code = ("import sys, nbflow.widget.nodes, nbflow.widget.layout, nbflow.widget.throttle\n"
            "bad = [m for m in ('anywidget', 'ipywidgets', 'IPython') if m in sys.modules]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_node_info_of_a_running_mapped_task_and_of_a_finished_one():
    running = TaskView("square", "running", attempts=1, started=10.0, ended=11.0,
                       where="thread nbflow-worker-1", mapped=True, branches=4, done=1,
                       counts=MappingProxyType({"succeeded": 1}))
    assert nodes.node_info(running) == {"s": "running", "a": 1, "t0": 10.0,
                                        "w": "thread nbflow-worker-1", "d": 1, "n": 4,
                                        "c": {"succeeded": 1}}  # no t1 until it ends
    ended = TaskView("total", "succeeded", attempts=2, started=10.0, ended=12.5)
    assert nodes.node_info(ended) == {"s": "succeeded", "a": 2, "t0": 10.0, "t1": 12.5}
    assert nodes.node_info(TaskView("later", "pending")) == {"s": "pending", "a": 0}
    assert nodes.moving(running) and not nodes.moving(ended)
    assert not nodes.moving(TaskView("plain", "running"))  # events say when it changes


def test_details_error_skip_reason_result_and_output():
    try:
        raise ValueError("total 14 is no good")
    except ValueError as exc:
        error = Failed.from_exception("fails", exc)
    failed = TaskView("fails", "failed", error=error,
                      output=MappingProxyType({None: captured("hello\n", "careful\n")}))
    assert nodes.details(failed) == {"err": error.traceback, "out": "hello\n",
                                     "stderr": "careful\n"}
    assert "ValueError: total 14 is no good" in error.traceback

    skipped = TaskView("report", "skipped", skip_reason="upstream 'fails' failed")
    assert nodes.details(skipped) == {"why": "upstream 'fails' failed"}

    asked: list[str] = []

    def result(name: str) -> dict[str, str]:
        asked.append(name)
        return {"text": "14"}

    mapped = TaskView("square", "succeeded", mapped=True, output=MappingProxyType(
        {b: captured(f"squaring {b}\n") for b in range(8)}))
    out = nodes.details(mapped, result)
    assert out["res"] == {"text": "14"} and asked == ["square"]
    # the first five branches' output, each labelled
    assert out["out"].count("squaring") == nodes.OUTPUT_BRANCHES
    assert out["out"].startswith("[square[0]]\nsquaring 0\n")
    assert "res" not in nodes.details(failed, result)  # no result to preview


def test_previews_prefer_html_clip_long_text_and_survive_broken_reprs():
    class Table:
        def _repr_html_(self) -> str:
            return "<table><tr><td>42</td></tr></table>"

    class Huge:
        def _repr_html_(self) -> str:
            return "<p>" + "x" * (nodes.PREVIEW_CHARS + 1)

        def __repr__(self) -> str:
            return "Huge()"

    class Broken:
        def _repr_html_(self) -> str:
            raise RuntimeError("no html")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert nodes.preview(Table()) == {"html": "<table><tr><td>42</td></tr></table>"}
    assert nodes.preview(Table) != {"html": "<table><tr><td>42</td></tr></table>"}  # a class
    assert nodes.preview(Huge()) == {"text": "Huge()"}
    assert nodes.preview(Broken())["text"].startswith("<Broken instance")  # reprlib copes
    assert len(nodes.preview("x" * 100_000)["text"]) < 1000
    long = "y" * (nodes.PREVIEW_CHARS + 5)
    assert nodes.clip(long).endswith("\n... (5 more characters)")
    assert nodes.clip("short") == "short"


def test_counts_draw_ready_as_pending_in_legend_order():
    table = {"a": {"s": "failed"}, "b": {"s": "ready"}, "c": {"s": "pending"},
             "d": {"s": "stale"}, "e": {"s": "succeeded"}}
    assert list(nodes.counts(table).items()) == [("pending", 2), ("succeeded", 1),
                                                 ("failed", 1), ("stale", 1)]


def test_the_table_rebuilds_a_node_only_when_its_view_changed_and_details_once():
    calls: list[str] = []

    def result(name: str) -> dict[str, str]:
        calls.append(name)
        return {"text": "1"}

    table = nodes.NodeTable()
    table.follow("run-1")
    running = TaskView("t", "running", attempts=1, started=1.0)
    assert table.update(running, result) == {"s": "running", "a": 1, "t0": 1.0}
    assert table.update(running, result) is None  # the same view: nothing to send
    done = TaskView("t", "succeeded", attempts=1, started=1.0, ended=2.0)
    assert table.update(done, result) == {"s": "succeeded", "a": 1, "t0": 1.0, "t1": 2.0,
                                          "res": {"text": "1"}}
    again = TaskView("t", "succeeded", attempts=1, started=1.0, ended=2.0)
    assert table.update(again, result) is not None and calls == ["t"]  # details kept
    table.follow("run-2")  # another run: its own details
    assert table.update(again, result) is not None and calls == ["t", "t"]
    snap = json.loads(table.to_json(7, 123.0))
    assert snap == {"seq": 7, "time": 123.0, "nodes": table.nodes}


def test_flow_nodes_show_stale_results_with_the_flow_s_reason():
    class Changing(nf.Flow):
        def stale(self, name: str) -> str | None:
            super().stale(name)
            return "its code changed" if name == "clean" else None

    flow = Changing("stale")
    flow.task(name="load")(lambda: 1)
    flow.task(name="clean")(lambda load: load)
    flow.task(name="later")(lambda clean: clean)
    run = flow.run(["clean"])
    table = nodes.NodeTable()
    table.follow(run.id)
    table.flow_nodes(flow, run.tasks, nodes.result_preview(run))
    assert {n: i["s"] for n, i in table.nodes.items()} == {
        "load": "succeeded", "clean": "stale", "later": "pending"}
    assert table.nodes["clean"]["stale"] == "its code changed"
    assert table.nodes["load"]["res"] == {"text": "1"}


def test_flow_nodes_keep_what_they_showed_and_what_the_flow_remembers():
    class Snapshot:
        state = "failed"

    class History:
        def get(self, name: str) -> Snapshot | None:
            return Snapshot() if name == "old" else None

    flow = nf.Flow("remembers")
    flow.history = History()  # type: ignore[attr-defined]  # as the notebook's flow has
    flow.task(name="old")(lambda: 1)
    flow.task(name="new")(lambda: 2)
    flow.task(name="shown")(lambda: 3)
    table = nodes.NodeTable()
    table.nodes = {"shown": {"s": "cancelled"}}
    table.flow_nodes(flow, {}, None)
    assert table.nodes == {"old": {"s": "failed"}, "new": {"s": "pending"},
                           "shown": {"s": "cancelled"}}


def test_shown_status_is_final_once_every_task_is():
    flow = nf.Flow("status")
    flow.task(name="ok")(lambda: 1)
    flow.task(name="bad")(lambda: 1 / 0)
    run = flow.run(raise_on_failure=False)
    assert nodes.shown_status(run) == run.status == "failed"
    assert nodes.result_preview(run)("ok") == {"text": "1"}


def test_the_front_end_gets_every_state_from_python():
    assert layout.STATES == (*(s for s in TASK_STATES if s != "ready"), "stale")
    assert set(layout.STYLES) == set(layout.STATES)
    rules = layout.state_rules()
    assert rules["drawn_as"] == {"ready": "pending"} and rules["initial"] == TASK_STATES[0]
    assert set(rules["open"]) == set(TASK_STATES) - FINAL  # a cancel button for these
    assert set(rules["lines"]) <= set(TASK_STATES)
    json.dumps(rules)  # it travels as a synced trait


@pytest.mark.parametrize("state", TASK_STATES)
def test_every_task_state_has_a_style_and_a_legend_place(state):
    drawn = layout.DRAWN_AS.get(state, state)
    assert drawn in layout.STATES and drawn in layout.STYLES
