"""The badge of a command task's node: a small ``$`` in the top left corner of its box.

Which tasks are commands is part of a flow's structure
(:attr:`~nbflow.widget.layout.Structure.commands`): their nodes get the class
``nbf-command`` in the layout, and :func:`mark` adds the badge to a laid-out SVG,
both the one the front end shows (:func:`mark_svg`) and the static picture
(:func:`~nbflow.widget.layout.colour_svg`). The static PNG, a Graphviz drawing of its
own, writes the badge before the task's name (:data:`LABEL_PREFIX`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

__all__ = ["COMMAND_CLASS", "LABEL_PREFIX", "mark", "mark_svg"]

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
#: the class Graphviz writes on a command task's node (``<g class="node nbf-task nbf-command">``)
COMMAND_CLASS = "nbf-command"
#: the class of the badge's ``<text>``
BADGE_CLASS = "nbf-badge"
#: what the badge says
BADGE = "$"
#: the badge in a label (the static PNG)
LABEL_PREFIX = BADGE + " "
#: its tooltip (the front end replaces it with the command once it knows it)
TOOLTIP = "command task"

#: the class as Graphviz writes it ("-" escaped)
_ESCAPED = COMMAND_CLASS.replace("-", "&#45;")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SHAPES = ("path", "polygon", "ellipse")


def mark(root: ET.Element) -> int:
    """Add the badge to every command node of a laid-out SVG that has none; returns how
    many it added."""
    added = 0
    for g in root.iter(f"{{{SVG_NS}}}g"):
        classes = (g.get("class") or "").split()
        if "node" not in classes or COMMAND_CLASS not in classes:
            continue
        if any((t.get("class") or "") == BADGE_CLASS for t in g):
            continue
        corner = _corner(g)
        if corner is None:
            continue
        badge = ET.SubElement(g, f"{{{SVG_NS}}}text", {
            "class": BADGE_CLASS, "x": f"{corner[0] + 6:.2f}", "y": f"{corner[1] + 11:.2f}",
            "font-family": "Menlo,Consolas,monospace", "font-size": "9.00",
            "font-weight": "bold", "fill": "#555555"})
        badge.text = BADGE
        ET.SubElement(badge, f"{{{SVG_NS}}}title").text = TOOLTIP
        added += 1
    return added


def mark_svg(svg: str) -> str:
    """``svg`` with the badges of its command nodes (unchanged when it has none)."""
    if COMMAND_CLASS not in svg and _ESCAPED not in svg:
        return svg
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(svg)
    if not mark(root):
        return svg
    return ET.tostring(root, encoding="unicode")


def _corner(g: ET.Element) -> tuple[float, float] | None:
    """The top left corner of a node's outline (the least x and y of its points)."""
    for shape in g:
        tag = shape.tag.rsplit("}", 1)[-1]
        if tag not in _SHAPES:
            continue
        if tag == "ellipse":
            try:
                return (float(shape.get("cx", "")) - float(shape.get("rx", "")),
                        float(shape.get("cy", "")) - float(shape.get("ry", "")))
            except ValueError:
                return None
        numbers = [float(n) for n in _NUMBER.findall(shape.get("d") or shape.get("points") or "")]
        if len(numbers) >= 2:
            return min(numbers[0::2]), min(numbers[1::2])
    return None
