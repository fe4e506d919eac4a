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
    assert nodes.details(failed) == {"err": error.traceback,
                                     "exc": "ValueError: total 14 is no good",
                                     "out": "hello\n", "stderr": "careful\n"}
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


def test_the_exception_line_is_the_end_of_the_traceback_whole_and_last_of_a_chain():
    def failure(raiser) -> str:
        try:
            raiser()
        except Exception as exc:
            return Failed.from_exception("t", exc).traceback
        raise AssertionError("it did not raise")

    def chained() -> None:
        try:
            {}["key"]
        except KeyError as exc:
            raise RuntimeError("could not load") from exc

    def two_lines() -> None:
        raise ValueError("first line\nsecond line")

    assert nodes.exception_line(failure(chained)) == "RuntimeError: could not load"
    assert nodes.exception_line(failure(two_lines)) == "ValueError: first line\nsecond line"
    assert nodes.exception_line("ZeroDivisionError: division by zero\n") == \
        "ZeroDivisionError: division by zero"
    long = nodes.exception_line("Traceback (most recent call last):\n  x\nE: " + "y" * 900)
    assert len(long) == nodes.EXCEPTION_CHARS + 1 and long.endswith("…")
    assert nodes.exception_line("") == ""


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


def test_buttons_show_only_when_they_apply():
    # before any run: run what a task needs; nothing to cancel or re-run
    assert nodes.available_actions("", 0, can_run=True) == ["needs"]
    assert nodes.available_actions("", 0, can_run=False) == []
    # while a run goes on: cancelling it or a task, and no second run
    for status in ("pending", "running"):
        assert nodes.available_actions(status, 0, can_run=True) == ["cancel", "cancel_task"]
        assert nodes.available_actions(status, 2, can_run=False) == ["cancel", "cancel_task"]
    # after it: re-running, and re-running the failed tasks when there are some
    assert nodes.available_actions("succeeded", 0, can_run=True) == ["rerun", "needs"]
    assert nodes.available_actions("failed", 1, can_run=True) == [
        "rerun_failed", "rerun", "needs"]
    assert nodes.available_actions("cancelled", 0, can_run=True) == ["rerun", "needs"]
    assert nodes.available_actions("failed", 1, can_run=False) == []  # no runner, no runs
    for status in ("", "running", "failed"):
        assert set(nodes.available_actions(status, 1, True)) <= set(nodes.ACTIONS)


def test_the_status_line_never_says_succeeded_beside_a_failed_node():
    assert nodes.status_line("", 0) == "not run yet"
    assert nodes.status_line("running", 0) == "run running"
    assert nodes.status_line("running", 2) == "run running · 2 failed tasks"
    assert nodes.status_line("succeeded", 0) == "run succeeded"
    assert nodes.status_line("failed", 1, 1) == "run failed (1 failed task)"
    assert nodes.status_line("cancelled", 1, 1) == "run cancelled (1 failed task)"
    # a run whose status says succeeded while one of its tasks failed
    assert nodes.status_line("succeeded", 1, 1) == "run failed (1 failed task)"
    # the run succeeded; a node kept from an earlier run is failed
    assert nodes.status_line("succeeded", 0, 1) == "run ended (1 failed task from an earlier run)"
    for status in ("running", "succeeded", "failed", "cancelled"):
        for failed, shown in ((1, 1), (0, 1), (1, 3)):
            assert "succeeded" not in nodes.status_line(status, failed, shown)


def test_the_table_knows_the_followed_run_s_failed_tasks():
    table = nodes.NodeTable()
    table.follow("run-1")
    table.update(TaskView("a", "failed"), None)
    table.update(TaskView("b", "succeeded"), None)
    assert table.run_id == "run-1" and table.failed() == ["a"]
    table.follow("run-2")  # a new run: "a" is still drawn failed, but not this run's
    table.update(TaskView("b", "running"), None)
    assert table.failed() == [] and table.counts() == {"running": 1, "failed": 1}


def test_snapshot_text_encodes_each_node_once_until_it_changes():
    """NodeTable.to_json: the same text as one json.dumps of the snapshot, re-encoding
    only replaced infos, forgetting nodes that left (and any extra nodes)."""
    table = nodes.NodeTable()
    failed = {"s": "failed", "err": 'ValueError: "x"\n'}
    table.nodes = {"load-data": {"s": "pending"}, "fails": failed}
    fold = {"group/prep": {"s": "running", "g": "group", "d": 1, "n": 2}}
    text = table.to_json(3, 1.5, fold)
    assert text == json.dumps({"seq": 3, "time": 1.5, "nodes": {**table.nodes, **fold}})
    texts = dict(table._texts)
    table.nodes = {"fails": failed, "new": {"s": "running"}}
    again = json.loads(table.to_json(4, 2.0))
    assert again == {"seq": 4, "time": 2.0, "nodes": table.nodes}
    assert table._texts["fails"] is texts["fails"]  # kept, not encoded again
    assert set(table._texts) == {"fails", "new"}
    table.nodes = {"fails": {"s": "succeeded"}, "new": table.nodes["new"]}
    assert json.loads(table.to_json(5, 0.0))["nodes"]["fails"] == {"s": "succeeded"}
