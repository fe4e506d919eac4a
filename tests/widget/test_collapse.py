"""Collapsing groups and long chains: units, the folded structure, aggregate states, and
the widget's collapse/expand actions (messages from the front end). No browser."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

import nbflow as nf
from nbflow.notebook.parser import build_parser, task_options
from nbflow.widget import DagWidget, draw
from nbflow.widget.collapse import Folding, chains, fold, fold_info, fold_state, units
from nbflow.widget.layout import Structure, colour_svg, structure_of, to_graphviz

from .conftest import node_states

NAMES = ("src", "a1", "a2", "a3", "a4", "mid", "b1", "b2", "end", "x", "y")


def sample() -> Structure:
    """``src -> a1 -> a2 -> a3 -> a4 -> end``, ``src -> mid -> end``, ``mid -> b1 -> b2``
    (b1, b2 in group "bees"), and ``x -> y`` (mapped y)."""
    index = {n: i for i, n in enumerate(NAMES)}
    pairs = [("src", "a1"), ("a1", "a2"), ("a2", "a3"), ("a3", "a4"), ("a4", "end"),
             ("src", "mid"), ("mid", "end"), ("mid", "b1"), ("b1", "b2"), ("x", "y")]
    edges = tuple((index[u], index[d]) for u, d in pairs)
    return Structure("sample", NAMES, edges, frozenset({index["y"]}),
                     (("bees", (index["b1"], index["b2"])),))


def test_chains_are_one_to_one_paths_of_ungrouped_tasks():
    s = sample()
    # a1..a4: src has two children and end two parents, so the chain stops there; b1 -> b2
    # is grouped; x -> y is too short
    assert [[s.names[i] for i in c] for c in chains(s)] == [["a1", "a2", "a3", "a4"]]
    assert [[s.names[i] for i in c] for c in chains(s, 2)] == [["a1", "a2", "a3", "a4"],
                                                               ["x", "y"]]
    assert chains(s, 5) == []
    assert list(units(s)) == ["group/bees", "chain/a1"]
    assert units(s)["chain/a1"].label == "a1 … a4"
    assert units(s)["group/bees"].members == ("b1", "b2")


def test_a_chain_is_never_the_whole_flow():
    names = tuple(f"t{i}" for i in range(8))
    path = Structure("p", names, tuple((i, i + 1) for i in range(7)), frozenset())
    assert chains(path) == []  # the whole flow: nothing to gain
    longer = Structure("p", (*names, "side"), (*path.edges, (0, 8)), frozenset())
    assert chains(longer) == [list(range(1, 8))]


def test_folding_draws_each_unit_as_one_node():
    s = sample()
    shown = fold(s, units(s).values())
    assert shown.names == ("src", "chain/a1", "mid", "group/bees", "end", "x", "y")
    named = {(shown.names[u], shown.names[d]) for u, d in shown.edges}
    assert named == {("src", "chain/a1"), ("chain/a1", "end"), ("src", "mid"), ("mid", "end"),
                     ("mid", "group/bees"), ("x", "y")}
    assert len(shown.edges) == len(named)
    assert {shown.names[i] for i in shown.mapped} == {"y"}
    assert shown.groups == ()  # a collapsed group has no box
    assert {f.id for f in shown.folded} == {"group/bees", "chain/a1"}
    assert shown.key != s.key and fold(s, []).key == s.key


@pytest.mark.parametrize("states, drawn", [
    (["succeeded", "cached"], "succeeded"),
    (["cached", "cached"], "cached"),
    (["skipped", "skipped"], "skipped"),
    (["succeeded", "failed", "skipped"], "failed"),
    (["succeeded", "cancelled"], "cancelled"),
    (["succeeded", "stale"], "stale"),
    (["succeeded", "running", "pending"], "running"),
    (["retrying", "pending"], "retrying"),
    (["failed", "pending"], "failed"),
    (["succeeded", "ready"], "ready"),
    (["pending", "pending"], "pending"),
])
def test_a_collapsed_node_aggregates_its_members(states, drawn):
    assert fold_state(states) == drawn


def test_fold_info_counts_ended_members_and_spans_their_times():
    s = sample()
    bees = units(s)["group/bees"]
    info = fold_info(bees, {"b1": {"s": "succeeded", "t0": 1.0, "t1": 2.0},
                            "b2": {"s": "running", "t0": 1.5}})
    assert info == {"s": "running", "d": 1, "n": 2, "c": {"succeeded": 1}, "g": "group",
                    "t0": 1.0}
    info = fold_info(bees, {"b1": {"s": "succeeded", "t0": 1.0, "t1": 2.0},
                            "b2": {"s": "failed", "t0": 1.5, "t1": 3.0}})
    assert (info["s"], info["d"], info["t1"]) == ("failed", 2, 3.0)


def test_folding_resolves_names_and_refuses_unknown_ones():
    folding = Folding()
    folding.set_structure(sample())
    assert folding.resolve("group/bees") == folding.resolve("bees") == "group/bees"
    assert folding.resolve("a3") == folding.resolve("chain/a1") == "chain/a1"
    with pytest.raises(ValueError, match=r"'beez'.*Did you mean 'bees'.*'group/bees', 'chain/a1'"):
        folding.collapse(["bees", "beez"])
    assert folding.collapsed == set()  # nothing changed: all names are checked first
    empty = Folding()
    empty.set_structure(Structure("tiny", ("a",), (), frozenset()))
    with pytest.raises(ValueError, match="no groups and no chains"):
        empty.resolve("a")
    with pytest.raises(ValueError, match="chain_min must be 2 or more"):
        Folding(1)


def test_collapsed_units_survive_a_structure_change_and_report_their_nodes():
    folding = Folding()
    folding.set_structure(sample())
    shown = folding.collapse(["bees"])
    assert "group/bees" in shown.names and "b1" not in shown.names
    nodes = {"b1": {"s": "succeeded"}, "b2": {"s": "succeeded"}, "src": {"s": "running"}}
    assert folding.infos(nodes)["group/bees"]["s"] == "succeeded"
    assert list(folding.touched(["b2", "src"], nodes)) == ["group/bees"]
    assert folding.touched(["src"], nodes) == {}
    # the same units in a bigger structure: still collapsed
    s = sample()
    bigger = Structure(s.flow, (*s.names, "z"), s.edges, s.mapped, s.groups)
    assert "group/bees" in folding.set_structure(bigger).names
    units_json = folding.graph_json()["units"]
    assert units_json["group/bees"]["collapsed"] and not units_json["chain/a1"]["collapsed"]
    assert "group/bees" not in folding.collapse(["bees"], on=False).names


def test_groups_come_from_the_task_option_and_are_drawn_as_boxes():
    flow = nf.Flow("grouped")

    @flow.task(group="clean: step 1")  # a colon: graphviz's edge() would read a port
    def a():
        return 1

    @flow.task(group="clean: step 1")
    def b(a):
        return a

    @flow.task
    def c(b):
        return b

    s = structure_of(flow)
    assert s.groups == (("clean: step 1", (0, 1)),)
    assert structure_of(flow.plan()).groups == s.groups
    assert s.key != Structure(s.flow, s.names, s.edges, s.mapped).key
    svg = draw(to_graphviz(s))
    assert "<title>cluster_0</title>" in svg and "clean: step 1" in svg
    assert set(node_states(svg)) == {"a", "b", "c"}

    shown = fold(s, units(s).values())
    svg = draw(to_graphviz(shown))
    assert set(node_states(svg)) == {"group/clean: step 1", "c"}
    assert "nbf&#45;folded&#45;group" in svg and "cluster" not in svg
    info = fold_info(units(s)["group/clean: step 1"], {"a": {"s": "succeeded"},
                                                        "b": {"s": "succeeded"}})
    coloured = colour_svg(svg, {"group/clean: step 1": info})
    assert node_states(coloured)["group/clean: step 1"] == "succeeded"
    assert "succeeded 2/2" in coloured


def test_notebook_cells_group_with_a_header_flag():
    args = build_parser().parse_command(["task", "clean", "--group", "cleaning"])
    assert task_options(args) == {"group": "cleaning"}
    assert task_options(build_parser().parse_command(["task", "plain"])) == {}


# -- the widget ------------------------------------------------------------------------------


def grouped_flow() -> nf.Flow:
    """``load``, a group ``prep`` of three tasks, then a chain ``s0 -> ... -> s4 -> report``."""
    flow = nf.Flow("grouped")
    flow.task(name="load")(lambda: 1)
    for i in range(3):
        flow.task(name=f"prep{i}", group="prep")(lambda load: load)
    flow.task(name="s0")(lambda prep0, prep1, prep2: 1)
    for i in range(1, 5):
        flow.add(nf.Task.from_function(lambda: 1, name=f"s{i}", options={"after": [f"s{i - 1}"]}))
    flow.task(name="report")(lambda s4: s4)
    return flow


def test_the_widget_collapses_and_expands_on_messages():
    flow = grouped_flow()
    flow.run()
    widget = flow.widget()
    assert widget.wait_layout(60)
    assert set(widget.collapsible) == {"group/prep", "chain/s0"}
    assert widget.graph["units"]["chain/s0"]["members"] == [*(f"s{i}" for i in range(5)),
                                                            "report"]

    widget._on_message(widget, {"action": "collapse", "task": "group/prep"}, [])
    assert widget.collapsed == ["group/prep"]
    # the collapsed node's info goes out at once, its layout when it is ready
    assert widget.snapshot["nodes"]["group/prep"] == {
        "s": "succeeded", "d": 3, "n": 3, "c": {"succeeded": 3}, "g": "group",
        "t0": min(widget.snapshot["nodes"][f"prep{i}"]["t0"] for i in range(3)),
        "t1": max(widget.snapshot["nodes"][f"prep{i}"]["t1"] for i in range(3))}
    assert widget.wait_layout(60)
    assert "group/prep" in widget.graph["folded"]
    assert set(node_states(widget.svg)) == {"load", "group/prep", "s0", "s1", "s2", "s3", "s4",
                                            "report"}
    assert repr(widget) == "DagWidget(10 tasks: 10 succeeded)"  # tasks, not drawn nodes

    widget.act("collapse_all", "chain")
    assert widget.collapsed == ["chain/s0", "group/prep"]
    assert widget.wait_layout(60)
    assert set(node_states(widget.svg)) == {"load", "group/prep", "chain/s0"}
    static = widget.static_svg(timeout=30)
    assert node_states(static)["chain/s0"] == "succeeded" and "succeeded 6/6" in static
    assert widget.static_png(timeout=30)  # drawn with the collapsed nodes too

    widget.act("expand", "s2")  # a task of a unit names the unit
    widget.expand()
    assert widget.collapsed == []
    assert widget.wait_layout(60)
    assert "group/prep" not in node_states(widget.svg)
    assert "group/prep" not in widget.snapshot["nodes"]

    sent: list[Any] = []
    widget.send = sent.append  # type: ignore[method-assign]
    widget._on_message(widget, {"action": "collapse", "task": "perp"}, [])
    assert "Did you mean 'prep'" in sent[0]["error"]
    with pytest.raises(ValueError, match="cannot collapse or expand 'nope'"):
        widget.collapse("nope")


class FrontEnd:
    """What a view shows: the last snapshot and the deltas after it, applied by their
    ``seq`` as ``widget.js`` does; :meth:`wait` waits (on a condition) until it shows
    something."""

    def __init__(self, widget: DagWidget) -> None:
        self.changed = threading.Condition()
        self.seq = -1
        self.nodes: dict[str, Any] = {}
        widget.observe(self._snapshot, names="snapshot_json")
        widget.observe(self._delta, names="delta")
        self._snapshot({"new": widget.snapshot_json})

    def _snapshot(self, change: dict[str, Any]) -> None:
        data = json.loads(change["new"])
        with self.changed:
            if data.get("seq", -1) > self.seq:
                self.seq, self.nodes = data["seq"], dict(data["nodes"])
                self.changed.notify_all()

    def _delta(self, change: dict[str, Any]) -> None:
        data = change["new"]
        with self.changed:
            if data.get("seq", -1) > self.seq:
                self.seq = data["seq"]
                self.nodes.update(data["nodes"])
                self.changed.notify_all()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.nodes), timeout), self.nodes


def test_a_collapsed_node_follows_its_members_during_a_run():
    flow = grouped_flow()
    gate = threading.Event()
    flow.replace(nf.Task.from_function(lambda load: gate.wait(30) and load, name="prep1",
                                       options={"group": "prep"}))
    run = flow.run(background=True)
    widget = run.widget(flow)
    shown = FrontEnd(widget)
    widget.collapse("prep")
    try:
        shown.wait(lambda nodes: nodes.get("group/prep", {}).get("s") == "running"
                   and nodes["group/prep"]["d"] == 2)
    finally:
        gate.set()
        run.wait(timeout=30)
    shown.wait(lambda nodes: nodes["group/prep"]["s"] == "succeeded"
               and nodes["group/prep"]["d"] == 3 and nodes["report"]["s"] == "succeeded")
