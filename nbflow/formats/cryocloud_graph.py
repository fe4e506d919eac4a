"""The graph of a CryoCloud workflow: checks, split regions, and the nbflow tasks of each node.

See :mod:`nbflow.formats.cryocloud` for how nodes become tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import suggest
from ..spec import KeyPath, Spec
from .runif import RunIfError, parse_runif

__all__ = ["INPUT_MODULES", "RUN_ON", "Graph", "Node", "build_graph", "items_task"]

RUN_ON = ("success", "error", "timeout", "always", "never")
#: CryoCloud's input modules, built into the runtime: module -> (outputs, parameter it reads)
INPUT_MODULES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "cmdline": ((), None),
    "dirwatcher": (("fullpath", "relpath", "datasize"), "fullpath"),
    "netwatcher": (("fullpath", "relpath", "datasize", "config_override"), "request"),
}


@dataclass
class Node:
    """One CryoCloud node, as written and as checked."""

    name: str
    path: KeyPath
    raw: dict[str, Any]
    module: str
    parents: list[str] = field(default_factory=list)
    from_entry: bool = False
    ccmodule: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.raw.get("args") or {})

    def default(self, key: str, fallback: Any) -> Any:
        """The node's value for ``key``, else its module's default, else ``fallback``."""
        if key in self.raw:
            return self.raw[key]
        return (self.ccmodule.get("defaults") or {}).get(key, fallback)

    @property
    def run_on(self) -> str:
        return str(self.default("runOn", "always"))  # CryoCloud's own default

    @property
    def outputs(self) -> set[str]:
        outs = set(self.ccmodule.get("outputs") or {})
        return outs | set(self.raw.get("outputs") or {})


def check_runif(spec: Spec, node: Node, graph: Graph) -> None:
    """Parse the node's ``runIf`` and check the nodes and options it reads."""
    text = node.raw.get("runIf")
    if text is None:
        return
    where = (*node.path, "runIf")
    try:
        expr = parse_runif(text)
    except RunIfError as exc:
        at = f" (column {exc.column})" if exc.column else ""
        raise spec.error(f"runIf {text!r}: {exc.problem}{at}", where) from None
    for ref in expr.refs:
        if ref.source == "option":
            name = graph.check_option(ref.name, where)
            if name not in graph.option_reads.setdefault(node.name, []):
                graph.option_reads[node.name].append(name)
        elif ref.node != "parent":
            graph.check_node_ref(node, ref.node, where)


def items_task(node: str) -> str:
    """The name of the task that resolves the list a ``splitOn`` node splits."""
    return f"{node}__items"


@dataclass
class Graph:
    """The checked graph: order, split regions, and what each node reads."""

    spec: Spec
    nodes: dict[str, Node]
    options: dict[str, Any]
    order: list[str] = field(default_factory=list)
    #: node -> the split node whose items it runs over (None outside a split)
    region: dict[str, str | None] = field(default_factory=dict)
    #: node -> the parent it maps over, element-wise (region nodes only)
    mapped: dict[str, str] = field(default_factory=dict)
    #: node -> nodes its args and runIf read with ``output:``
    reads: dict[str, list[str]] = field(default_factory=dict)
    #: node -> options its args and runIf read
    option_reads: dict[str, list[str]] = field(default_factory=dict)
    #: split node -> the task resolving its list
    items_tasks: dict[str, str] = field(default_factory=dict)

    def open_region(self, name: str) -> str | None:
        """The split whose items ``name``'s value is per item of (None once merged)."""
        if self.nodes[name].raw.get("merge"):
            return None
        return self.region.get(name)

    def check_option(self, option: Any, where: KeyPath) -> str:
        if not isinstance(option, str) or option.strip() not in self.options:
            raise self.spec.error(f"{option!r} is not an option of this workflow."
                                  + suggest(str(option), self.options), where)
        return option.strip()

    def check_node_ref(self, node: Node, ref: str, where: KeyPath) -> None:
        if ref not in self.nodes:
            raise self.spec.error(f"{ref!r} is not a node of this workflow."
                                  + suggest(ref, [*self.nodes, "parent"]), where)
        if ref == node.name or node.name in self.ancestors(ref):
            raise self.spec.error(f"{node.name!r} reads the output of {ref!r}, which runs after "
                                  "it (downstream of it)", where)
        if self.nodes[ref].raw.get("global") and not node.raw.get("global"):
            raise self.spec.error(f"{node.name!r} reads the output of the global node {ref!r}, "
                                  "which runs after every other node", where)
        split = self.open_region(ref)
        if split is not None and split == self.region.get(node.name) \
                and ref != self.mapped.get(node.name):
            raise self.spec.error(f"{node.name!r} reads {ref!r} inside the split of {split!r}: "
                                  "inside a split a node reads only its parent there, or nodes "
                                  "before the split", where)
        self.reads.setdefault(node.name, [])
        if ref not in self.reads[node.name]:
            self.reads[node.name].append(ref)

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.nodes[name].parents)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.nodes[n].parents)
        return seen

    def descendants(self, name: str) -> set[str]:
        return {n for n in self.nodes if name in self.ancestors(n)}

    def merged(self, name: str, read: str) -> list[str] | None:
        """The nodes of the split ``read`` belongs to, as ``name`` sees them merged into lists."""
        split = self.region.get(read)
        if split is None or split == self.region.get(name):
            return None
        return [n for n in self.order if self.region.get(n) == split
                and (n == read or n in self.ancestors(read))]

    def tasks_of(self, name: str, base_dir: Path | None) -> dict[str, Any]:
        """The nbflow tasks of one node: ``{name: task}`` (and its items task for a split)."""
        node = self.nodes[name]
        raw = node.raw
        role = "global" if raw.get("global") else "node"
        if role == "global":
            inputs = [n for n in self.order if not self.nodes[n].raw.get("global")
                      and not self._under_global(n)]
        else:
            inputs = list(dict.fromkeys([*node.parents, *self.reads.get(name, [])]))
        merged = {r: m for r in inputs if (m := self.merged(name, r)) is not None}
        extra = [n for m in merged.values() for n in m if n not in inputs]
        args: dict[str, Any] = {}
        for n in [*inputs, *dict.fromkeys(extra)]:
            args[f"node:{n}"] = {"$task": n}
            if role == "global" and n in self.items_tasks:
                args[f"node:{self.items_tasks[n]}"] = {"$task": self.items_tasks[n]}
        for o in self.option_reads.get(name, []):
            args[f"option:{o}"] = {"$param": o}
        wanted = INPUT_MODULES.get(node.module, ((), None))[1]
        if wanted is not None:
            args["value"] = {"$param": wanted}
        cc = {"node": name, "module": node.module, "kind": role,
              "dir": str(base_dir.resolve()) if base_dir else None,
              "args": node.args, "parents": node.parents, "run_on": node.run_on,
              "run_if": raw.get("runIf"), "resolve_on_any": bool(node.default("resolveOnAny", False)),
              "loop": raw.get("loop"), "split_on": raw.get("splitOn"), "merged": merged,
              "mapped": self.mapped.get(name), "priority": int(node.default("priority", 50))}
        if node.module in INPUT_MODULES:
            cc["kind"] = node.module
        task: dict[str, Any] = {"use": f"{RUNTIME}:process", "args": {"cc": cc, **args},
                                "run_on": "always", "run_if": f"{RUNTIME}:should_run",
                                "priority": cc["priority"], "export": True, "cache": False}
        if name in self.mapped:
            task["map"] = self.mapped[name]
        if raw.get("deferred"):
            late = {n for d in self.nodes if self.nodes[d].raw.get("deferred")
                    for n in (d, *self.descendants(d))}
            after = [n for n in self.order if n not in late and not self.nodes[n].raw.get("global")
                     and not self._under_global(n) and n not in inputs]
            if after:
                task["after"] = after
        if "max_parallel" in raw and name in self.mapped:
            task["max_parallel"] = int(raw["max_parallel"])
        if not raw.get("splitOn"):
            return {name: task}
        items = dict(task, use=f"{RUNTIME}:split_items", export=False)
        items.pop("max_parallel", None)
        items["args"] = {"cc": dict(cc, kind="items"), **args}
        per_item = {"use": f"{RUNTIME}:process", "map": self.items_tasks[name],
                    "args": {"cc": dict(cc, kind="item"), "items": {"$task": self.items_tasks[name]}},
                    "priority": cc["priority"], "export": True, "cache": False}
        if "max_parallel" in raw:
            per_item["max_parallel"] = int(raw["max_parallel"])
        return {self.items_tasks[name]: items, name: per_item}

    def _under_global(self, name: str) -> bool:
        return any(self.nodes[a].raw.get("global") for a in self.ancestors(name))


RUNTIME = "nbflow.formats.cryocloud_runtime"


def build_graph(spec: Spec, nodes: dict[str, Node], options: dict[str, Any]) -> Graph:
    """Check edges, cycles, args, runIf, runOn and splits; :class:`SpecError` on the first problem."""
    graph = Graph(spec, nodes, options)
    for node in nodes.values():
        _check_node(graph, node)
    graph.order = _order(spec, nodes)
    for name in graph.order:
        _place(graph, nodes[name])
    for name in graph.order:
        _check_reads(graph, nodes[name])
    return graph


def _check_node(graph: Graph, node: Node) -> None:
    spec, path, raw = graph.spec, node.path, node.raw
    for parent in node.parents:
        if parent not in graph.nodes:
            raise spec.error(f"downstreamOf names {parent!r}, which is not a node."
                             + suggest(parent, [*graph.nodes, "entry"]), _edge(node, parent))
    if raw.get("global"):
        if node.parents or node.from_entry:
            raise spec.error("a global node runs when any node fails: give it no downstreamOf",
                             (*path, "downstreamOf"))
    elif not node.parents and not node.from_entry:
        raise spec.error(f"node {node.name!r} has no parent, so it would never run: give it "
                         "downstreamOf: [\"entry\"] (the start) or a parent node",
                         _key_or_name(node, "downstreamOf"))
    if node.run_on not in RUN_ON:
        raise spec.error(f"runOn {node.run_on!r} is not one of {', '.join(RUN_ON)}."
                         + suggest(str(node.run_on), RUN_ON), (*path, "runOn"))
    for key in ("global", "deferred", "resolveOnAny", "merge", "runOnHead"):
        if key in raw and not isinstance(raw[key], bool):
            raise spec.error(f"{key} must be true or false", (*path, key))
    for key in ("priority", "max_parallel"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or (key == "max_parallel" and value < 1)):
            raise spec.error(f"{key} must be {'a positive' if key == 'max_parallel' else 'an'} "
                             "integer", (*path, key))
    if not isinstance(raw.get("args", {}), dict):
        raise spec.error("args must be a mapping of argument names", (*path, "args"))
    inputs = node.ccmodule.get("inputs") or {}
    if node.module not in INPUT_MODULES:
        for arg in node.args:
            if arg not in inputs:
                raise spec.error(f"module {node.module!r} takes no input {arg!r}."
                                 + suggest(arg, inputs) + f" Its inputs: {', '.join(inputs)}.",
                                 (*path, "args", arg))
    for key in ("splitOn", "loop"):
        if key in raw and raw[key] not in node.args:
            raise spec.error(f"{key} names {raw[key]!r}, which is not one of the node's args."
                             + suggest(str(raw[key]), node.args), (*path, key))


def _key_or_name(node: Node, key: str) -> KeyPath:
    """The node's ``key`` if written, else its name (else the node)."""
    for k in (key, "name"):
        if k in node.raw:
            return (*node.path, k)
    return node.path


def _edge(node: Node, parent: str) -> KeyPath:
    """The key path of ``parent`` in the node's downstreamOf (the node itself for a child)."""
    down = node.raw.get("downstreamOf")
    if isinstance(down, list) and parent in down:
        return (*node.path, "downstreamOf", down.index(parent))
    return node.path


def _order(spec: Spec, nodes: dict[str, Node]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name):], name]
            raise spec.error("the nodes depend on each other in a loop: " + " -> ".join(cycle),
                             _edge(nodes[name], cycle[1]))
        state[name] = 1
        for parent in nodes[name].parents:
            visit(parent, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in nodes:
        visit(name, [])
    return order


def _place(graph: Graph, node: Node) -> None:
    """Put ``node`` in its split region (or none), checking splits and merges."""
    spec, path = graph.spec, node.path
    open_parents = [p for p in node.parents if graph.open_region(p) is not None]
    regions = {graph.open_region(p) for p in open_parents}
    if node.raw.get("splitOn"):
        if open_parents:
            raise spec.error(f"{node.name!r} splits again inside the split of "
                             f"{graph.open_region(open_parents[0])!r}: nested splits are not "
                             "supported (nor in CryoCloud); merge first", (*path, "splitOn"))
        graph.region[node.name] = node.name
        graph.items_tasks[node.name] = items_task(node.name)
        return
    if len(regions) > 1 or len(open_parents) > 1:
        raise spec.error(f"{node.name!r} has several parents inside splits "
                         f"({', '.join(open_parents)}): inside a split a node follows one "
                         "parent; merge first", (*path, "downstreamOf"))
    if open_parents:
        graph.region[node.name] = graph.open_region(open_parents[0])
        graph.mapped[node.name] = open_parents[0]
    elif node.raw.get("merge"):
        raise spec.error(f"merge: true on {node.name!r}, which is not inside a split",
                         (*path, "merge"))


def _check_reads(graph: Graph, node: Node) -> None:
    """Check every ``output``/``option`` reference of the node's args and runIf."""
    spec, path = graph.spec, node.path
    for arg, value in node.args.items():
        if not isinstance(value, dict):
            continue
        where = (*path, "args", arg)
        option = value.get("option", value.get("options"))
        if option is not None:
            name = graph.check_option(option, (*where, "option" if "option" in value else "options"))
            graph.option_reads.setdefault(node.name, [])
            if name not in graph.option_reads[node.name]:
                graph.option_reads[node.name].append(name)
        elif "output" in value:
            _check_output(graph, node, value, (*where, "output"))
    check_runif(spec, node, graph)
    depends = node.raw.get("depends", node.ccmodule.get("depends")) or []
    provided = {p for a in graph.ancestors(node.name) for p in _provides(graph.nodes[a])}
    missing = [d for d in depends if d not in provided]
    if missing:
        raise spec.error(f"{node.name!r} ({node.module}) depends on {', '.join(missing)}, which "
                         f"no upstream node provides (they provide: "
                         f"{', '.join(sorted(provided)) or 'nothing'})", _key_or_name(node, "depends"))


def _provides(node: Node) -> list[str]:
    return [*(node.ccmodule.get("provides") or []), *(node.raw.get("provides") or [])]


def _check_output(graph: Graph, node: Node, value: dict[str, Any], where: KeyPath) -> None:
    text = value["output"]
    source, dot, key = str(text).partition(".")
    if not isinstance(text, str) or not dot or not source or not key or "." in key:
        raise graph.spec.error(f"output {text!r} must be 'Node.key' or 'parent.key'", where)
    if key == "error" or "default" in value:
        outputs_ok = True  # an error message is always there; a default covers the rest
    elif source == "parent":
        owners = graph.nodes if node.raw.get("global") else node.parents  # global: any node
        outputs_ok = any(key in graph.nodes[p].outputs for p in owners)
    else:
        outputs_ok = source in graph.nodes and key in graph.nodes[source].outputs
    if source != "parent":
        graph.check_node_ref(node, source, where)
    elif not node.parents and not node.raw.get("global"):
        raise graph.spec.error("output 'parent...' in a node without parents", where)
    if not outputs_ok:
        owners = node.parents if source == "parent" else [source]
        known = sorted({o for p in owners for o in graph.nodes[p].outputs})
        who = "no parent declares an output" if source == "parent" else \
            f"{source!r} declares no output"
        raise graph.spec.error(f"{who} {key!r} (ccmodule outputs: {', '.join(known) or 'none'})."
                               + suggest(key, known) + " Give a default, or declare it in the "
                               "node's outputs", where)
