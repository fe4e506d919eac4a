"""Layout: the SVG has every task, layouts run in another process, the static SVG shows states."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import graphviz
import pytest

import nbflow as nf
from nbflow.widget import draw, layout
from nbflow.widget.service import LayoutService

from .conftest import SVG, node_states


def test_svg_contains_every_task_by_title(demo_flow):
    svg = draw(demo_flow.to_graphviz())
    titles = set(node_states(svg))
    assert titles == set(demo_flow.tasks)


def test_titles_are_decoded_names_even_when_graphviz_escapes_them():
    structure = layout.Structure("x", ("load-data", "a<b", "plain"), ((0, 1), (1, 2)),
                                 frozenset({1}))
    svg = draw(layout.to_graphviz(structure))
    assert "load&#45;data" in svg  # why the front end reads titles through the DOM
    assert set(node_states(svg)) == {"load-data", "a<b", "plain"}
    coloured = layout.colour_svg(svg, {"load-data": {"s": "running"}, "a<b": {"s": "failed"}})
    assert node_states(coloured) == {"load-data": "running", "a<b": "failed", "plain": "pending"}


def test_to_graphviz_returns_a_customisable_digraph(demo_flow):
    g = demo_flow.to_graphviz()
    assert isinstance(g, graphviz.Digraph)
    g.attr(rankdir="LR")
    g.node("total", fillcolor="gold")
    assert "rankdir=LR" in g.source
    svg = draw(g)
    assert set(node_states(svg)) == set(demo_flow.tasks)
    edges = [e.find(f"{SVG}title").text for e in ET.fromstring(svg).iter(f"{SVG}g")
             if e.get("class") == "edge"]
    assert sorted(edges) == sorted(["load_data->numbers", "numbers->square", "square->total",
                                    "total->fails", "fails->report"])


def test_large_graphs_get_fast_layout_attributes():
    assert "nslimit" not in layout.graph_attributes(20)
    assert "nslimit" not in layout.graph_attributes(200)  # a 200-task flow stays polished
    fast = layout.graph_attributes(2000)
    assert fast["splines"] == "line" and float(fast["nslimit"]) < 1


def test_structure_key_changes_only_with_structure(demo_flow):
    key = layout.structure_of(demo_flow).key
    assert layout.structure_of(layout.structure_of(demo_flow) and demo_flow).key == key

    @demo_flow.task
    def extra(total):
        return total

    assert layout.structure_of(demo_flow).key != key


def test_layouts_are_cached_by_key_and_errors_are_layout_errors():
    service = LayoutService()
    try:
        first = service.layout("k", "digraph { a -> b }")
        assert "<svg" in first.result(30)
        assert service.layout("k", "digraph { ignored }") is first
        assert service.cached("k") == first.result()
        pid = service.pid
        assert pid is not None and pid != __import__("os").getpid()
        with pytest.raises(nf.LayoutError, match="could not lay out"):
            service.layout("bad", "digraph { a -> ").result(30)
        assert service.cached("bad") is None
    finally:
        service.close()


def test_a_structure_is_laid_out_from_its_dot_built_in_the_layout_process(demo_flow):
    """service.layout(key, structure): the layout process builds the DOT source (the
    kernel's process does not) from Structure.to_wire, which from_wire reads back whole."""
    import json

    structure = layout.structure_of(demo_flow)
    folded = layout.Structure("f", ("a", "group/g"), ((0, 1),), frozenset({0}),
                              (("box", (0,)),), (layout.Fold("group/g", "group", "g", ("x",)),),
                              frozenset({0}))
    for each in (structure, folded):
        again = layout.Structure.from_wire(json.loads(json.dumps(each.to_wire())))
        assert again == each and again.key == each.key
    service = LayoutService()
    try:
        assert service.layout("s", structure).result(60) == \
            service.layout("d", layout.to_graphviz(structure).source).result(60)
    finally:
        service.close()


def test_static_svg_colours_nodes_and_adds_a_legend(demo_flow):
    svg = draw(demo_flow.to_graphviz())
    nodes = {"square": {"s": "succeeded", "d": 3, "n": 3}, "fails": {"s": "failed"}}
    coloured = layout.colour_svg(svg, nodes)
    states = node_states(coloured)
    assert states["square"] == "succeeded" and states["fails"] == "failed"
    assert states["total"] == "pending"
    root = ET.fromstring(coloured)
    legend = [t.text for t in root.iter(f"{SVG}text") if t.text in layout.STATES]
    assert {"succeeded", "failed", "pending"} <= set(legend)
    assert "succeeded 3/3" in coloured
    assert layout.STYLES["failed"]["fill"] in coloured


def test_the_fontconfig_warning_never_reaches_our_stderr():
    """A fresh process lays out twice; nothing of Graphviz's appears on its stderr."""
    code = ("from nbflow.widget import draw\n"
            "big = 'digraph {' + ' '.join(f'n{i} -> n{i + 1};' for i in range(300)) + '}'\n"
            "assert '<svg' in draw('digraph { a -> b }') and '<svg' in draw(big)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_widget_benchmark_quick_mode_runs():
    """benchmarks/widget.py stays runnable (its targets are checked by running it in full)."""
    out = subprocess.run([sys.executable, "benchmarks/widget.py", "--quick"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "nodes, local" in out.stdout and "live widget" in out.stdout
