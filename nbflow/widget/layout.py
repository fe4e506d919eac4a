"""Flow + states -> ``graphviz.Digraph`` -> SVG, and the static (coloured) SVG.

Pure functions, tested without a browser or a kernel:

- :func:`structure_of` reduces a flow (or a run's plan) to what the layout
  depends on: task names, their dependencies and which tasks are mapped;
  :func:`structure_key` hashes it, so layouts are cached by structure.
- :func:`to_graphviz` builds the ``graphviz.Digraph`` (``flow.to_graphviz()``),
  with attributes that keep Graphviz fast on large graphs.
- :func:`colour_svg` paints node states onto a laid-out SVG: the static
  ``image/svg+xml`` rendering that papermill outputs, nbconvert and GitHub show.
- :func:`static_graph` is the same picture as a graph of its own, drawn as the
  ``image/png`` rendering: untrusted notebooks (an ``nbflow run`` output opened in
  JupyterLab) do not show SVG, but do show PNG.

Laying out (Graphviz holds the GIL) happens in another process:
see :mod:`nbflow.widget.service`.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..states import FINAL, TASK_STATES
from .badges import COMMAND_CLASS, LABEL_PREFIX, mark

if TYPE_CHECKING:
    import graphviz

    from ..flow import Flow
    from ..plan import Plan

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

#: States drawn like another one: a ready task waits like a pending one.
DRAWN_AS: dict[str, str] = {"ready": "pending"}
#: The state of a task nothing is known about yet.
INITIAL: str = TASK_STATES[0]
#: Node states the widget shows, in legend order: the task states (``ready`` drawn as
#: ``pending``), then ``stale``, a result whose task changed since (``Flow.stale``).
STATES: tuple[str, ...] = (*(s for s in TASK_STATES if s not in DRAWN_AS), "stale")

#: One style per state: fill tint, stroke colour (Okabe-Ito, colour-blind safe), stroke
#: width and dash pattern, so states differ in lightness and outline, not only in hue.
STYLES: dict[str, dict[str, str]] = {
    "pending": {"fill": "#f7f7f7", "stroke": "#8c8c8c", "width": "1", "dash": "4 3"},
    "running": {"fill": "#cfe8f8", "stroke": "#0072b2", "width": "2.5", "dash": ""},
    "retrying": {"fill": "#fbf3b0", "stroke": "#e69f00", "width": "2.5", "dash": "8 3"},
    "succeeded": {"fill": "#b9e4d3", "stroke": "#009e73", "width": "2", "dash": ""},
    "cached": {"fill": "#e2f3ec", "stroke": "#009e73", "width": "2", "dash": "2 2"},
    "failed": {"fill": "#f6c4a8", "stroke": "#d55e00", "width": "3", "dash": ""},
    "skipped": {"fill": "#ececec", "stroke": "#b0b0b0", "width": "1", "dash": "1 3"},
    "cancelled": {"fill": "#d9d9d9", "stroke": "#000000", "width": "1.5", "dash": "6 2 1 2"},
    "stale": {"fill": "#f3dcea", "stroke": "#cc79a7", "width": "2", "dash": "5 2"},
}

#: How a node's status line reads in each state (the front end formats it): the time
#: since it started, the attempt it is on, or how long it took. Other states: their name.
STATUS_LINES: dict[str, str] = {"running": "elapsed", "retrying": "attempt",
                                "succeeded": "duration", "failed": "duration"}


def state_rules() -> dict[str, Any]:
    """What the front end needs to know about states besides their styles and order.

    ``widget.js`` names no state itself: it gets this table (the ``state_rules`` trait)
    with the styles and the legend, so a state added in :mod:`nbflow.states` needs
    no front-end change.

    Returns
    -------
    dict
        ``drawn_as`` (state -> the state it is drawn as), ``initial`` (the state of a
        node without info), ``open`` (states in which a task can still be cancelled),
        ``lines`` (state -> how its status line reads, see :data:`STATUS_LINES`).
    """
    return {"drawn_as": dict(DRAWN_AS), "initial": INITIAL,
            "open": [s for s in TASK_STATES if s not in FINAL], "lines": dict(STATUS_LINES)}


#: Above this many nodes the layout trades polish for speed (see :func:`graph_attributes`):
#: with full polish, 500 nodes take about 0.5 s and 1,000 about 1.5 s in the layout process.
LARGE = 500
#: How an expanded group's box is drawn (a Graphviz cluster, labelled with the group).
CLUSTER: dict[str, str] = {"class": "nbf-cluster", "style": "rounded,dashed", "color": "#9a9a9a",
                           "fontname": "Helvetica", "fontsize": "10", "fontcolor": "#555555",
                           "labeljust": "l", "margin": "6"}


@dataclass(frozen=True)
class Fold:
    """Tasks drawn as one node: a collapsed group, or a collapsed long chain.

    The node's name is :attr:`id`, which no task can have (task names are Python
    identifiers): ``group/<group name>`` or ``chain/<first task>``.
    """

    id: str
    #: "group" (tasks declared with ``group=``) or "chain" (a long linear chain)
    kind: str
    #: what the node says: the group's name, or the chain's first and last task
    label: str
    #: the tasks it stands for, in the order of the structure they came from
    members: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "members": list(self.members)}


@dataclass(frozen=True)
class Structure:
    """What a layout depends on: node names, edges (by index), mapped nodes, groups
    drawn as boxes and the nodes that stand for collapsed groups or chains."""

    flow: str
    names: tuple[str, ...]
    #: (upstream index, downstream index)
    edges: tuple[tuple[int, int], ...]
    mapped: frozenset[int]
    #: (group name, member indices): expanded groups, each drawn as a labelled box
    groups: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: nodes that stand for several tasks (their names are among ``names``)
    folded: tuple[Fold, ...] = ()
    #: command tasks (``flow.command``): their nodes get a ``$`` badge (:mod:`.badges`)
    commands: frozenset[int] = frozenset()

    @property
    def key(self) -> str:
        return structure_key(self)

    def parents(self) -> dict[str, list[str]]:
        """``{name: upstream names}``, the shape :mod:`nbflow.graph` works on."""
        out: dict[str, list[str]] = {name: [] for name in self.names}
        for u, d in self.edges:
            out[self.names[d]].append(self.names[u])
        return out

    def to_wire(self) -> dict[str, Any]:
        """All of it as JSON-able data (:meth:`from_wire` reads it back): the layout
        process builds the DOT source itself, so the kernel's process does not."""
        return {"flow": self.flow, "names": self.names, "edges": self.edges,
                "mapped": sorted(self.mapped), "groups": self.groups,
                "folded": [[f.id, f.kind, f.label, f.members] for f in self.folded],
                "commands": sorted(self.commands)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Structure:
        """The structure :meth:`to_wire` wrote."""
        return cls(data["flow"], tuple(data["names"]),
                   tuple((int(u), int(d)) for u, d in data["edges"]),
                   frozenset(data["mapped"]),
                   tuple((str(label), tuple(members)) for label, members in data["groups"]),
                   tuple(Fold(i, kind, label, tuple(members))
                         for i, kind, label, members in data["folded"]),
                   frozenset(data["commands"]))

    def to_json(self) -> dict[str, Any]:
        """The shape the front end uses for filters, group boxes and collapsed nodes."""
        return {"names": list(self.names), "edges": [list(e) for e in self.edges],
                "mapped": sorted(self.mapped),
                "groups": [[label, [self.names[i] for i in members]]
                           for label, members in self.groups],
                "folded": {fold.id: fold.to_json() for fold in self.folded}}


def structure_of(source: Flow | Plan) -> Structure:
    """The structure of a flow (all its tasks) or of a run's plan (the tasks it runs)."""
    from ..plan import Plan

    if isinstance(source, Plan):
        names = tuple(pt.name for pt in source.tasks)
        edges = tuple((d, pt.index) for pt in source.tasks for d in pt.deps)
        mapped = frozenset(pt.index for pt in source.tasks if pt.mapped)
        labels = [pt.task.options.group for pt in source.tasks]
        commands = frozenset(pt.index for pt in source.tasks if pt.task.command is not None)
        return Structure(source.flow, names, edges, mapped, _groups(labels), commands=commands)
    deps = source.dependencies()
    names = tuple(deps)
    index = {n: i for i, n in enumerate(names)}
    edge_list = [(index[u], index[n]) for n, ups in deps.items() for u in ups if u in index]
    tasks = source.tasks
    mapped = frozenset(index[n] for n in names if tasks[n].options.map is not None)
    labels = [tasks[n].options.group for n in names]
    commands = frozenset(index[n] for n in names if tasks[n].command is not None)
    return Structure(source.name, names, tuple(edge_list), mapped, _groups(labels),
                     commands=commands)


def _groups(labels: Sequence[str | None]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(group, member indices) from each node's ``group=`` (None: in no group), in
    the order groups first appear."""
    out: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            out.setdefault(label, []).append(i)
    return tuple((label, tuple(members)) for label, members in out.items())


def structure_key(structure: Structure) -> str:
    """A hash of the structure (names, edges, mapped, groups, collapsed nodes): equal
    keys share one layout."""
    parts: list[Any] = [structure.names, structure.edges, sorted(structure.mapped),
                        structure.groups, [f.to_json() for f in structure.folded]]
    if structure.commands:  # (the keys of flows without commands stay as they were)
        parts.append(sorted(structure.commands))
    data = json.dumps(parts)
    return hashlib.sha256(data.encode()).hexdigest()[:20]


def graph_attributes(n_nodes: int) -> dict[str, str]:
    """Graph attributes: polished for small graphs, fast for large ones.

    Limiting network-simplex iterations (``nslimit``, ``nslimit1``) and crossing
    minimisation (``mclimit``) and drawing straight edges took a 2,000-node DAG
    from 6-19 s to 0.3-1 s with the bundled Graphviz. Below :data:`LARGE` nodes the
    polish is worth its time: a 200-task flow laid out fast had its ranks scattered
    and straight edges across the nodes.
    """
    attrs = {"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.35", "bgcolor": "transparent"}
    if n_nodes > LARGE:
        attrs.update({"splines": "line", "nslimit": "0.01", "nslimit1": "0.01",
                      "mclimit": "0.01", "searchsize": "10", "remincross": "false"})
    return attrs


def to_graphviz(
    source: Flow | Plan | Structure, states: Mapping[str, str] | None = None
) -> graphviz.Digraph:
    """A ``graphviz.Digraph`` of the tasks, one node per task (mapped tasks included).

    Node names are task names (Graphviz writes them into each node's ``<title>``);
    mapped tasks get a ``box3d`` shape. ``states`` (task -> state) fills nodes with
    the state styles. The digraph can be customised before it is rendered, e.g. with
    :func:`nbflow.widget.draw` (no ``dot`` binary needed).
    """
    try:
        import graphviz
        from graphviz.quoting import quote
    except ImportError as exc:
        msg = 'flow.to_graphviz() needs the graphviz package: pip install "nbflow[widget]"'
        raise ImportError(msg) from exc
    structure = source if isinstance(source, Structure) else structure_of(source)
    g = graphviz.Digraph(
        name=structure.flow,
        graph_attr=graph_attributes(len(structure.names)),
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                   "fontsize": "11", "height": "0.45", "margin": "0.12,0.04",
                   # wide enough for the front end's status line ("succeeded 12.3s")
                   "width": "1.15",
                   "fillcolor": STYLES[INITIAL]["fill"], "color": STYLES[INITIAL]["stroke"]},
        edge_attr={"color": "#7a7a7a", "arrowsize": "0.6"},
    )
    folds = {fold.id: fold for fold in structure.folded}
    boxes = {i: k for k, (_, members) in enumerate(structure.groups) for i in members}
    clusters = [graphviz.Digraph(name=f"cluster_{k}", graph_attr={"label": _escape(label), **CLUSTER})
                for k, (label, _) in enumerate(structure.groups)]
    for i, name in enumerate(structure.names):
        attrs: dict[str, str] = {"class": "nbf-task"}
        fold = folds.get(name)
        # A second label line leaves room for the front end's status text.
        attrs["label"] = f"{_escape(fold.label if fold else name)}\\n "
        if i in structure.mapped:
            attrs["shape"] = "box3d"
            attrs["style"] = "filled"
            attrs["class"] = "nbf-task nbf-mapped"
        if i in structure.commands:  # a "$" badge (badges.mark)
            attrs["class"] += f" {COMMAND_CLASS}"
        if fold is not None:  # a double outline: it stands for several tasks
            attrs["peripheries"] = "2"
            attrs["class"] = f"nbf-task nbf-folded nbf-folded-{fold.kind}"
        if states is not None and name in states:
            style = STYLES.get(_style_name(states[name]), STYLES[INITIAL])
            attrs["fillcolor"] = style["fill"]
            attrs["color"] = style["stroke"]
        (clusters[boxes[i]] if i in boxes else g).node(name, **attrs)
    for cluster in clusters:
        g.subgraph(cluster)
    # (quoted here: graphviz's edge() reads "a:b" as node a, port b, and a group may
    # be named so)
    names = [quote(n) for n in structure.names]
    g.body.extend(f"\t{names[u]} -> {names[d]}\n" for u, d in structure.edges)
    return g


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\")


def _style_name(state: str) -> str:
    return DRAWN_AS.get(state, state)


# -- static rendering ----------------------------------------------------------------------


def colour_svg(svg: str, nodes: Mapping[str, Mapping[str, Any]], legend: bool = True) -> str:
    """Paint each node of a laid-out SVG with its state's style and status line.

    ``nodes`` maps task names to the widget's node info (``{"s": state, "d": done,
    "n": total, ...}``). Nodes are found by their ``<title>`` text, as the front end
    does. A legend of the states present is added under the graph.
    """
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(svg)
    seen: dict[str, int] = {}
    for g in root.iter(f"{{{SVG_NS}}}g"):
        if "node" not in (g.get("class") or "").split():
            continue
        title = g.find(f"{{{SVG_NS}}}title")
        if title is None or title.text is None:
            continue
        info = nodes.get(title.text, {})
        state = _style_name(str(info.get("s", INITIAL)))
        seen[state] = seen.get(state, 0) + 1
        style = STYLES.get(state, STYLES[INITIAL])
        g.set("data-state", state)
        for shape in g:
            tag = shape.tag.rsplit("}", 1)[-1]
            if tag in ("polygon", "path", "ellipse"):
                if shape.get("fill") not in (None, "none"):
                    shape.set("fill", style["fill"])
                shape.set("stroke", style["stroke"])
                shape.set("stroke-width", style["width"])
                if style["dash"]:
                    shape.set("stroke-dasharray", style["dash"])
        texts = [t for t in g if t.tag == f"{{{SVG_NS}}}text"]
        if len(texts) >= 2:
            texts[1].text = status_text(info)
            texts[1].set("font-size", "9.00")
    mark(root)
    if legend and seen:
        _add_legend(root, [s for s in STATES if s in seen])
    return ET.tostring(root, encoding="unicode")


def status_text(info: Mapping[str, Any]) -> str:
    """The node's second line: its state, and done/total branches for a mapped task."""
    state = str(info.get("s", INITIAL))
    total = info.get("n")
    if total is not None:
        return f"{state} {info.get('d', 0)}/{total}"
    return state


def _add_legend(root: ET.Element, states: Sequence[str]) -> None:
    width = float(root.get("width", "0pt").rstrip("pt") or 0)
    height = float(root.get("height", "0pt").rstrip("pt") or 0)
    box = root.get("viewBox", f"0 0 {width} {height}").split()
    vw, vh = float(box[2]), float(box[3])
    row = 18.0
    legend = ET.SubElement(root, f"{{{SVG_NS}}}g", {"class": "nbf-legend"})
    x = 4.0
    for state in states:
        style = STYLES[state]
        attrs = {"x": f"{x}", "y": f"{vh + 4}", "width": "12", "height": "10",
                 "fill": style["fill"], "stroke": style["stroke"], "stroke-width": style["width"]}
        if style["dash"]:
            attrs["stroke-dasharray"] = style["dash"]
        ET.SubElement(legend, f"{{{SVG_NS}}}rect", attrs)
        label = ET.SubElement(legend, f"{{{SVG_NS}}}text", {
            "x": f"{x + 16}", "y": f"{vh + 13}", "font-family": "Helvetica,sans-Serif",
            "font-size": "10.00"})
        label.text = state
        x += 24 + 6.5 * len(state)
    new_w, new_h = max(vw, x), vh + row + 4
    root.set("viewBox", f"{box[0]} {box[1]} {new_w:.2f} {new_h:.2f}")
    root.set("width", f"{new_w:.0f}pt")
    root.set("height", f"{new_h:.0f}pt")


#: Pixels per inch of the static PNG: 1 px per point keeps files small (11 pt text is 11 px).
PNG_DPI = 72
#: The largest static PNG, in inches (``size``: larger graphs are scaled down to fit):
#: at most 1,440 x 2,160 px, so even a 2,000-node flow stays near 1 MB.
PNG_SIZE = "20,30"


def _graphviz_style(style: Mapping[str, str], mapped: bool) -> dict[str, str]:
    """Node attributes drawing a state's style (the dash patterns as Graphviz's two)."""
    dash = style["dash"]
    line = "" if not dash else ",dotted" if float(dash.split()[0]) <= 2 else ",dashed"
    return {"fillcolor": style["fill"], "color": style["stroke"], "penwidth": style["width"],
            "style": ("filled" if mapped else "rounded,filled") + line}


def static_graph(structure: Structure, nodes: Mapping[str, Mapping[str, Any]],
                 legend: bool = True) -> graphviz.Digraph:
    """The static picture as a graph: each node styled by its state, with its status line.

    Draws what :func:`colour_svg` paints onto the layout, with Graphviz alone (so it can
    be rendered as PNG): the same styles, status lines and a legend of the states
    present (the graph's label). ``nodes`` is the widget's node info by task name.
    """
    g = to_graphviz(structure)
    g.attr(dpi=str(PNG_DPI), size=PNG_SIZE, bgcolor="white", pad="0.1")
    seen: list[str] = []
    for i, name in enumerate(structure.names):
        info = nodes.get(name, {})
        state = _style_name(str(info.get("s", INITIAL)))
        if state not in seen:
            seen.append(state)
        attrs = _graphviz_style(STYLES.get(state, STYLES[INITIAL]), i in structure.mapped)
        # a second statement for the node: its attributes override the first one's
        badge = LABEL_PREFIX if i in structure.commands else ""
        g.node(name, label=f"{badge}{_escape(name)}\\n{_escape(status_text(info))}", **attrs)
    if legend and seen:
        cells = "".join(
            f'<td bgcolor="{STYLES[s]["fill"]}" color="{STYLES[s]["stroke"]}" border="1" '
            f'width="12" height="10" fixedsize="true"></td><td align="left">{s}</td>'
            for s in STATES if s in seen)
        g.attr(label=f'<<table border="0" cellspacing="4"><tr>{cells}</tr></table>>',
               labelloc="b", labeljust="l", fontname="Helvetica", fontsize="10")
    return g


def placeholder_svg(structure: Structure, message: str = "laying out") -> str:
    """A small SVG shown (and stored) while the real layout is not available."""
    text = f"nbflow: {message} {len(structure.names)} tasks of flow {structure.flow!r}"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f'<svg xmlns="{SVG_NS}" width="{12 + 6 * len(text)}pt" height="24pt">'
            f'<text x="6" y="16" font-family="Helvetica,sans-Serif" font-size="11">{text}</text>'
            "</svg>")
