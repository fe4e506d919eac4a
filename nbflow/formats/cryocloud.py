"""CryoCloud workflows (``{"workflow": {...}}``) read into nbflow spec mappings.

Each CryoCloud node becomes an nbflow task that calls the node's module through
:mod:`nbflow.formats.cryocloud_runtime`:

- the node's parents (``downstreamOf``, inline ``children``) and every node its
  ``args`` or ``runIf`` read (``{"output": "Node.key"}``) are its inputs, named
  ``node:NAME``; the workflow options it reads are parameters, ``option:NAME``;
- every task runs once its inputs are final (``run_on: always``) and its
  ``run_if`` gate (:func:`~nbflow.formats.cryocloud_runtime.should_run`)
  decides as CryoCloud does: ``runOn`` against the parents' outcome,
  ``resolveOnAny``, then the ``runIf`` expression (:mod:`nbflow.formats.runif`);
- ``splitOn`` adds a task ``NODE__items`` that resolves the split list, and the
  node maps over it; nodes downstream map element-wise until the ``merge: true``
  node, whose values reach later nodes as lists in split order;
- a ``global`` node takes every other node as input and runs when one failed;
  a ``deferred`` node runs after every node that is not downstream of it.

Everything is checked before anything runs; keys that nbflow cannot honour on
one machine are refused by name unless ``allow_unsupported`` (then a warning).
The workflow's ``options`` become parameters; :mod:`.cryocloud_options` turns
them into command-line options, and says what ``nbflow serve`` should watch.
The files: :mod:`.cryocloud_graph` (graph checks, splits, tasks),
:mod:`.cryocloud_runtime` (what the tasks call), :mod:`.runif` (``runIf``).
"""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import NbflowError, SpecError, suggest
from ..spec import KeyPath, Spec
from ..spec_calls import import_module
from .cryocloud_graph import INPUT_MODULES, RUN_ON, Node, build_graph
from .cryocloud_options import option_parameters

__all__ = ["INPUT_MODULES", "UnsupportedKeyWarning", "cryocloud_spec", "load_nodes", "module_uses"]

WORKFLOW_KEYS = ("name", "description", "nodes", "options")
NODE_KEYS = ("module", "name", "args", "downstreamOf", "children", "runOn", "runIf", "global",
             "deferred", "resolveOnAny", "splitOn", "merge", "loop", "max_parallel", "priority",
             "outputs", "provides", "depends", "runOnHead", "type", "description")
#: keys nbflow cannot honour on one machine, and why
UNSUPPORTED: dict[str, str] = {
    "ccnode": "runs the node on a chosen CryoCloud processing node",
    "restrictions": "waits on status values of other CryoCloud nodes",
    "replicas": "starts Kubernetes replicas",
    "serviceURL": "calls a remote microservice",
    "post": "uploads results to s3 or ssh",
    "gpu": "sends the node to GPU workers",
    "image": "runs the node in a Kubernetes container",
    "docker": "runs the module in a CryoCloud docker environment",
    "volumes": "mounts docker volumes",
    "config": "reads CryoCore configuration",
    "workdir": "runs the module in a worker's directory",
    "dir": "runs the module in a worker's directory",
    "cache": "uses CryoCloud's result cache",
    "options": "passes node options to CryoCloud",
    "pip": "installs packages on workers",
}
ARG_KEYS = ("output", "option", "options", "default")
UNSUPPORTED_ARG_KEYS = {"config": "CryoCore configuration", "stat": "runtime statistics",
                        "type": "file staging and temporary directories", "unzip": "unzipping",
                        "copy": "file copying", "proto": "file transfer", "id": "tempdir ids"}


class UnsupportedKeyWarning(UserWarning):
    """A CryoCloud key nbflow cannot honour on one machine, run without it (``--allow-unsupported``)."""


def cryocloud_spec(spec: Spec, *, allow_unsupported: bool = False) -> dict[str, Any]:
    """The nbflow spec mapping of a CryoCloud workflow; every problem is a :class:`SpecError`."""
    workflow = _workflow(spec)
    options = option_parameters(spec)  # all checked; those no node reads are left out below
    nodes = load_nodes(spec, allow_unsupported=allow_unsupported)
    graph = build_graph(spec, nodes, options)
    used = {o for reads in graph.option_reads.values() for o in reads}
    params = {name: info for name, info in options.items() if name in used}
    watchers: list[str] = []
    for node in nodes.values():
        wanted = INPUT_MODULES.get(node.module, ((), None))[1]
        if wanted is not None:
            if watchers:
                raise spec.error(f"a second watching input node ({node.name!r}, after "
                                 f"{watchers[0]!r}): nbflow runs a workflow with one dirwatcher "
                                 "or netwatcher", (*node.path, "module"))
            watchers.append(node.name)
            if wanted in params:
                raise spec.error(f"the {node.module} node {node.name!r} takes its value from a "
                                 f"parameter {wanted!r}, and an option has that name; rename "
                                 "the option", (*node.path, "module"))
            kind = "string" if wanted == "fullpath" else "object"
            params[wanted] = {"type": kind, "description":
                              f"what {node.module} {node.name!r} would have found (set by "
                              "`nbflow serve` triggers)"}
    clash = sorted(set(params) & (set(nodes) | set(graph.items_tasks.values())))
    if clash:
        raise spec.error(f"{clash[0]!r} names both an option and a node; rename one",
                         ("workflow", "options", clash[0]))
    tasks: dict[str, Any] = {}
    for name in graph.order:
        tasks.update(graph.tasks_of(name, spec.base_dir))
    out: dict[str, Any] = {"nbflow": 1, "name": str(workflow["name"]), "parameters": params,
                           "tasks": tasks}
    if workflow.get("description"):
        out["description"] = str(workflow["description"])
    return out


def module_uses(mapping: dict[str, Any]) -> list[str]:
    """The CryoCloud modules the tasks of a :func:`cryocloud_spec` mapping call, as ``module:process_task``.

    ``nbflow validate`` can list them with :func:`nbflow.spec_calls.imported_modules`
    (the mapping's own ``use:`` names only the runtime adapter).
    """
    modules = [task["args"]["cc"]["module"] for task in mapping["tasks"].values()
               if isinstance(task.get("args", {}).get("cc"), dict)]
    return [f"{m}:process_task" for m in dict.fromkeys(modules) if m not in INPUT_MODULES]


def _workflow(spec: Spec) -> dict[str, Any]:
    extra = [k for k in spec.data if k != "workflow"]
    if extra:
        raise spec.error(f"{extra[0]!r}: a CryoCloud file holds only 'workflow'", (extra[0],))
    workflow = spec.data.get("workflow")
    if not isinstance(workflow, dict):
        raise spec.error("'workflow' must be a mapping with 'name' and 'nodes'", ("workflow",))
    for key in workflow:
        if key not in WORKFLOW_KEYS:
            raise spec.error(f"{key!r} is not a workflow key." + suggest(key, WORKFLOW_KEYS)
                             + f" Keys: {', '.join(WORKFLOW_KEYS)}.", ("workflow", key))
    if not isinstance(workflow.get("name"), str) or not workflow["name"].strip():
        raise spec.error("a workflow needs a 'name' (a string)", ("workflow", "name"))
    if not isinstance(workflow.get("nodes"), list) or not workflow["nodes"]:
        raise spec.error("a workflow needs 'nodes', a non-empty list", ("workflow", "nodes"))
    return workflow


def load_nodes(spec: Spec, *, allow_unsupported: bool = False) -> dict[str, Node]:
    """Every node (inline children included) by name, with its module's ``ccmodule`` read."""
    nodes: dict[str, Node] = {}
    unsupported: list[tuple[str, str, KeyPath]] = []

    def visit(raw: Any, path: KeyPath, enclosing: str | None) -> None:
        if not isinstance(raw, dict):
            raise spec.error("a node must be a mapping with 'module'", path)
        found: list[tuple[str, str, KeyPath]] = []
        for key in raw:
            if key in UNSUPPORTED:
                found.append((key, UNSUPPORTED[key], (*path, key)))
            elif key not in NODE_KEYS:
                raise spec.error(f"{key!r} is not a CryoCloud node key."
                                 + suggest(key, (*NODE_KEYS, *UNSUPPORTED)), (*path, key))
        module = raw.get("module")
        if not isinstance(module, str) or not module:
            raise spec.error("a node needs 'module' (the name of a Python module)", path)
        name = raw.get("name", module)
        if not isinstance(name, str) or not name or name == "entry":
            raise spec.error(f"a node name must be a non-empty string other than 'entry', "
                             f"got {name!r}", (*path, "name"))
        if "name" not in raw:  # CryoCloud invents a random name; ours is stable
            n = 2
            while name in nodes:
                name, n = f"{module}_{n}", n + 1
        if name in nodes:
            raise spec.error(f"a second node named {name!r} (the first is at line "
                             f"{spec.lines.get((*nodes[name].path, 'name'), '?')})", (*path, "name"))
        node = Node(name, path, raw, module)
        down = raw.get("downstreamOf", [])
        if isinstance(down, str):
            down = [down]
        if not isinstance(down, list) or not all(isinstance(d, str) for d in down):
            raise spec.error("downstreamOf must be a list of node names", (*path, "downstreamOf"))
        node.from_entry = "entry" in down
        node.parents = [d for d in down if d != "entry"]
        if enclosing is not None and enclosing not in node.parents:
            node.parents.insert(0, enclosing)
        for arg, value in node.args.items():
            if isinstance(value, dict):
                for key in value:
                    if key in UNSUPPORTED_ARG_KEYS:
                        found.append((key, f"an argument from {UNSUPPORTED_ARG_KEYS[key]}",
                                      (*path, "args", arg, key)))
                    elif key not in ARG_KEYS:
                        raise spec.error(f"{key!r} is not an argument key." + suggest(key, ARG_KEYS),
                                         (*path, "args", arg, key))
        unsupported.extend((key, f"{why}, on node {name!r}", at) for key, why, at in found)
        node.ccmodule = _ccmodule(spec, node)
        nodes[name] = node
        children = raw.get("children", [])
        if not isinstance(children, list):
            raise spec.error("children must be a list of nodes", (*path, "children"))
        for i, child in enumerate(children):
            visit(child, (*path, "children", i), name)

    for i, raw in enumerate(spec.data["workflow"]["nodes"]):
        visit(raw, ("workflow", "nodes", i), None)
    if unsupported:
        listed = "; ".join(f"{key} ({why})" for key, why, _ in unsupported)
        if not allow_unsupported:
            raise spec.error(f"nbflow cannot honour these CryoCloud keys on one machine: {listed}. "
                             "Remove them, or pass --allow-unsupported to run without them",
                             unsupported[0][2])
        where = f"{spec.file or '<workflow>'}"
        warnings.warn(f"{where}: running without these CryoCloud keys: {listed}",
                      UnsupportedKeyWarning, stacklevel=2)
    return nodes


def _ccmodule(spec: Spec, node: Node) -> dict[str, Any]:
    """The module's ``ccmodule`` (the built-in one of an input module), checked."""
    where = (*node.path, "module")
    if node.module in INPUT_MODULES:
        outputs, _ = INPUT_MODULES[node.module]
        if node.module == "cmdline":  # it passes on its args (the options it reads)
            outputs = tuple(node.args)
        return {"inputs": {}, "outputs": dict.fromkeys(outputs, ""), "provides": ["Input"],
                "defaults": {"runOn": "always", "priority": 0}}
    try:
        module = import_module(node.module, spec.base_dir)
    except SpecError as exc:
        raise spec.error(exc.problem, where) from None
    except NbflowError as exc:
        raise spec.error(str(exc), where) from None
    info = getattr(module, "ccmodule", None)
    if not isinstance(info, dict):
        raise spec.error(f"module {node.module!r} has no 'ccmodule' dict, so it is not a "
                         "CryoCloud module", where)
    if not callable(getattr(module, "process_task", None)):
        raise spec.error(f"module {node.module!r} has no process_task(worker, task, "
                         "cancel_event=None)", where)
    for key in ("inputs", "outputs", "defaults"):
        if not isinstance(info.get(key, {}), dict):
            raise spec.error(f"ccmodule[{key!r}] of {node.module!r} must be a dict", where)
    run_on = (info.get("defaults") or {}).get("runOn")
    if run_on is not None and run_on not in RUN_ON:
        raise spec.error(f"ccmodule defaults of {node.module!r}: runOn {run_on!r} is not one of "
                         f"{', '.join(RUN_ON)}", where)
    return info
