"""Command tasks in the widget: their nodes carry the command (as declared, then the line
that ran), the host and the image, and are drawn with a "$" badge, live and in the static
pictures."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import config
from nbflow.views import TaskView
from nbflow.widget import nodes
from nbflow.widget.badges import BADGE_CLASS, mark_svg
from nbflow.widget.collapse import fold
from nbflow.widget.layout import Fold, Structure, colour_svg, static_graph, structure_of

SVG = "{http://www.w3.org/2000/svg}"
HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def _job_base(tmp_path: Path):
    with config.set(job_dir_base=str(tmp_path / "jobs")):
        yield


def command_flow() -> nf.Flow:
    flow = nf.Flow("cmds")
    flow.command("count", "printf 'a\\nb\\n' | wc -l")
    flow.command("greet", "echo {who}")

    @flow.task
    def total(count: nf.CommandResult) -> int:
        return int(count.stdout)

    return flow


def badged(svg: str) -> set[str]:
    """The titles of the nodes that have a badge."""
    out = set()
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        if any(t.get("class") == BADGE_CLASS for t in g.findall(f"{SVG}text")):
            out.add(g.find(f"{SVG}title").text)  # type: ignore[union-attr]
    return out


def test_node_info_carries_command_host_and_image():
    view = TaskView("warp", "succeeded", attempts=1, started=1.0, ended=2.0,
                    where="thread nbflow-worker-1", command="gdalwarp a.tif b.tif",
                    host="node-7", image="osgeo/gdal:3")
    info = nodes.node_info(view)
    assert (info["cmd"], info["host"], info["img"]) == ("gdalwarp a.tif b.tif", "node-7",
                                                        "osgeo/gdal:3")
    assert info["w"] == "thread nbflow-worker-1"
    plain = nodes.node_info(TaskView("fit", "running"))
    assert not {"cmd", "host", "img"} & plain.keys()
    long = nodes.node_info(TaskView("big", "running", command="x" * 10_000))
    assert len(long["cmd"]) < 2_100 and "more characters" in long["cmd"]


def test_a_finished_widget_shows_the_command_that_ran_and_the_host():
    flow = command_flow()
    run = flow.run(params={"who": "a b"}, background=True)
    widget = run.widget(flow)
    run.wait()
    assert widget.wait_layout(60)
    widget.flush(final=True)
    shown = widget.snapshot["nodes"]
    assert shown["greet"]["cmd"] == "echo 'a b'" and shown["greet"]["host"] == HOST
    assert shown["count"]["cmd"] == "printf 'a\\nb\\n' | wc -l"
    assert "cmd" not in shown["total"] and "host" not in shown["total"]
    # the synced layout has the badge on the command nodes only
    assert badged(widget.svg) == {"count", "greet"}
    assert badged(widget.static_svg()) == {"count", "greet"}


def test_a_flow_not_run_yet_draws_the_badges_from_its_structure():
    widget = command_flow().widget()
    assert widget.wait_layout(60)
    assert badged(widget.svg) == {"count", "greet"}
    assert structure_of(command_flow()).commands == frozenset({0, 1})


def test_the_static_png_labels_command_nodes():
    flow = command_flow()
    source = static_graph(structure_of(flow), {"count": {"s": "succeeded"}}).source
    assert "$ count" in source and "$ total" not in source


def test_collapsing_keeps_the_commands_in_place():
    structure = Structure("s", ("a", "b", "c", "d"), ((0, 1), (1, 2), (2, 3)), frozenset(),
                          commands=frozenset({0, 3}))
    folded = fold(structure, [Fold("chain/b", "chain", "b … c", ("b", "c"))])
    assert folded.names == ("a", "chain/b", "d")
    assert folded.commands == frozenset({0, 2})
    assert folded.key != fold(Structure("s", structure.names, structure.edges, frozenset()),
                              [Fold("chain/b", "chain", "b … c", ("b", "c"))]).key


def test_badges_are_added_once_and_only_to_command_nodes():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg"><g class="node nbf-task nbf-command">'
           '<title>c</title><path d="M10.5,-40C10.5,-40 90,-40 90,-40 96,-4 4,-8 4,-20"/>'
           '<text>c</text><text> </text></g><g class="node nbf-task"><title>p</title>'
           '<polygon points="0,0 5,5"/></g></svg>')
    once = mark_svg(svg)
    assert badged(once) == {"c"}
    assert mark_svg(once).count(BADGE_CLASS) == 1
    badge = next(t for t in ET.fromstring(once).iter(f"{SVG}text") if t.get("class") == BADGE_CLASS)
    assert (float(badge.get("x", "")), float(badge.get("y", ""))) == (10.0, -29.0)
    assert mark_svg('<svg xmlns="http://www.w3.org/2000/svg"/>') == '<svg xmlns="http://www.w3.org/2000/svg"/>'
    assert badged(colour_svg(svg, {"c": {"s": "running"}})) == {"c"}
