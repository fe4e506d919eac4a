"""Ephemeral job maps read as nbflow specs.

An Ephemeral job map (JSON) has a ``datasource`` (``direct`` content, or a JSON
file), a list of ``tasks`` (one ``input``, ``function`` tasks with
``namespace``, ``method`` and ``init_args``, and ``output`` tasks) and a
``workflow`` of ``[from, to]`` edges; every task but the input has one parent.
:func:`ephemeral_spec` checks all of it (every problem with the file, the key
path and the line, before anything runs) and returns the equivalent nbflow
spec mapping, whose tasks run the adapters of ``ephemeral_runtime.py``:

- the ``input`` task hands on the datasource's content;
- the first function task below it is a plain task; every other function task
  ``map:``-s its parent, so the dicts of a returned list become branches at run
  time (nothing is declared up front), and each branch goes on down the job
  without waiting for its siblings (element-wise maps);
- an ``output`` task collects every dict that reached it, in input order, and
  is exported.

``namespace`` and ``method`` name the registered task ``namespace.method``, or
the function ``method`` of the module ``namespace`` (the job file's folder is
importable); ``ephemeral_checks.py`` checks each function task against its
function (``init_args``, annotations, ``consumes``/``produces``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import suggest
from ..spec import Spec, schema
from ..spec_calls import looks_like_ref, nested_ref
from ..task import code_hash
from .ephemeral_checks import check_types, function_of

__all__ = ("ephemeral_spec", "ephemeral_uses")

RUNTIME = "nbflow.formats.ephemeral_runtime"
TOP_KEYS = ("name", "id", "datasource", "tasks", "workflow")
TASK_KEYS = ("name", "type", "id", "namespace", "method", "init_args", "consumes", "produces")
TYPES = ("input", "function", "output")
SOURCES = ("direct", "file")


def ephemeral_spec(spec: Spec) -> dict[str, Any]:
    """The nbflow spec mapping of the Ephemeral job map ``spec`` (see the module docstring).

    Raises :class:`~nbflow.errors.SpecError` for the first problem found, with the file,
    the key path and the line.
    """
    data = spec.data
    for key in data:
        if key not in TOP_KEYS:
            raise spec.error(f"{key!r} is not a key of an Ephemeral job map (it has "
                             f"{', '.join(TOP_KEYS)})." + suggest(str(key), TOP_KEYS), (key,))
    for key in ("datasource", "tasks", "workflow"):
        if key not in data:
            raise spec.error(f"an Ephemeral job map needs {key!r}")
    name = data.get("name", Path(spec.file).stem if spec.file else "ephemeral-job")
    if not isinstance(name, str) or not name:
        raise spec.error("the job's name must be a non-empty string", ("name",))
    content = _datasource(spec)
    tasks = _tasks(spec)
    parent = _workflow(spec, tasks)
    entry = next(t for t, info in tasks.items() if info["type"] == "input")
    functions = {t: function_of(spec, info, _base_dir(spec)) for t, info in tasks.items()
                 if info["type"] == "function"}
    check_types(spec, tasks, functions)
    base_dir = _base_dir(spec)
    out: dict[str, Any] = {}
    for task in _in_order(entry, parent):
        info = tasks[task]
        if info["type"] == "input":
            out[task] = {"use": f"{RUNTIME}:source", "args": {"content": _literal(content)}}
        elif info["type"] == "output":
            out[task] = {"use": f"{RUNTIME}:collect", "args": {"data": {"$task": parent[task]}},
                         "export": True}
        else:
            out[task] = _function_task(info, parent[task], parent[task] != entry,
                                       functions[task], base_dir)
    return {"nbflow": 1, "name": name,
            "description": f"Ephemeral job map {spec.file or name}", "tasks": out}


def ephemeral_uses(mapping: Mapping[str, Any]) -> list[str]:
    """The job's own functions behind an :func:`ephemeral_spec` mapping, as
    :func:`~nbflow.spec_calls.imported_modules` takes them (``nbflow validate`` lists
    their modules): ``namespace.method`` when registered, else ``namespace:method``."""
    from ..registry import registry

    out: list[str] = []
    for entry in mapping["tasks"].values():
        if entry["use"] == f"{RUNTIME}:call":
            namespace, method = entry["args"]["namespace"], entry["args"]["method"]
            name = f"{namespace}.{method}"
            out.append(name if name in registry else f"{namespace}:{method}")
    return list(dict.fromkeys(out))


def _base_dir(spec: Spec) -> str | None:
    """The job file's folder (absolute), where its modules may sit."""
    return str(Path(spec.file).resolve().parent) if spec.file else None


def _datasource(spec: Spec) -> dict[str, Any]:
    """The datasource's content: ``direct`` content, or the JSON object of a file."""
    ds = spec.data["datasource"]
    where: tuple[str, ...] = ("datasource",)
    if not isinstance(ds, dict):
        raise spec.error("'datasource' must be a mapping with 'source' and 'content'", where)
    source = ds.get("source")
    if source not in SOURCES:
        raise spec.error(f"'source' must be 'direct' (with 'content') or 'file' (with 'path'), "
                         f"not {source!r}." + suggest(str(source), SOURCES), (*where, "source"))
    known = ("source", "content") if source == "direct" else ("source", "path")
    for key in ds:
        if key not in known:
            raise spec.error(f"{key!r} is not a key of a {source!r} datasource (it has "
                             f"{', '.join(known)})." + suggest(str(key), known), (*where, key))
    if source == "direct":
        if not isinstance(ds.get("content"), dict):
            raise spec.error("a 'direct' datasource needs 'content', a mapping (the input "
                             "task's dict)", (*where, "content"))
        return dict(ds["content"])
    path = ds.get("path")
    if not isinstance(path, str) or not path:
        raise spec.error("a 'file' datasource needs 'path', the JSON file to read", where)
    file = Path(path)
    if not file.is_absolute() and spec.file:
        file = Path(spec.file).parent / file
    try:
        loaded = json.loads(file.read_text())
    except OSError as exc:
        raise spec.error(f"cannot read the datasource {str(file)!r}: {exc.strerror or exc}",
                         (*where, "path")) from None
    except ValueError as exc:
        raise spec.error(f"the datasource {str(file)!r} is not valid JSON: {exc}",
                         (*where, "path")) from None
    if not isinstance(loaded, dict):
        raise spec.error(f"the datasource {str(file)!r} holds a {type(loaded).__name__}; "
                         "it must hold a JSON object (the input task's dict)", (*where, "path"))
    return loaded


def _tasks(spec: Spec) -> dict[str, dict[str, Any]]:
    """The tasks by name, each checked: its keys, its type, and one input task in all."""
    raw = spec.data["tasks"]
    if not isinstance(raw, list) or not raw:
        raise spec.error("'tasks' must be a non-empty list of tasks", ("tasks",))
    tasks: dict[str, dict[str, Any]] = {}
    for i, info in enumerate(raw):
        where: tuple[str | int, ...] = ("tasks", i)
        if not isinstance(info, dict):
            raise spec.error("a task must be a mapping with 'name' and 'type'", where)
        for key in info:
            if key not in TASK_KEYS:
                raise spec.error(f"{key!r} is not a key of an Ephemeral task."
                                 + suggest(str(key), TASK_KEYS), (*where, key))
        name = info.get("name")
        if not isinstance(name, str) or not name:
            raise spec.error("a task needs a 'name', a non-empty string", (*where, "name"))
        if name in tasks:
            raise spec.error(f"two tasks are named {name!r}", (*where, "name"))
        rule = _name_rule()
        if not re.fullmatch(rule["pattern"], name) or len(name) > rule["maxLength"]:
            raise spec.error(f"{name!r} cannot be a task name under nbflow: "
                             f"{rule['description'].partition(': ')[2]}, at most "
                             f"{rule['maxLength']} characters", (*where, "name"))
        kind = info.get("type")
        if kind not in TYPES:
            raise spec.error(f"'type' must be one of {', '.join(TYPES)}, not {kind!r}."
                             + suggest(str(kind), TYPES), (*where, "type"))
        if kind == "function":
            for key in ("namespace", "method"):
                if not isinstance(info.get(key), str) or not info[key]:
                    raise spec.error(f"a function task needs {key!r}, a non-empty string",
                                     (*where, key))
            if not isinstance(info.get("init_args", {}), dict):
                raise spec.error("'init_args' must be a mapping (keyword arguments)",
                                 (*where, "init_args"))
        for key in ("consumes", "produces"):
            if key in info and not isinstance(info[key], str):
                raise spec.error(f"{key!r} must be a string", (*where, key))
        tasks[name] = {**info, "index": i}
    inputs = [t for t, info in tasks.items() if info["type"] == "input"]
    if len(inputs) != 1:
        what = "none" if not inputs else ", ".join(map(repr, inputs))
        raise spec.error(f"an Ephemeral job has exactly one input task; this one has {what}",
                         ("tasks",) if not inputs else ("tasks", tasks[inputs[1]]["index"]))
    return tasks


def _name_rule() -> dict[str, Any]:
    """nbflow's rule for task names (the spec schema's ``name``)."""
    rule: dict[str, Any] = schema()["$defs"]["name"]
    return rule


def _workflow(spec: Spec, tasks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each task's parent, from the ``[from, to]`` edges, checked."""
    edges = spec.data["workflow"]
    if not isinstance(edges, list):
        raise spec.error("'workflow' must be a list of [from, to] edges", ("workflow",))
    parent: dict[str, str] = {}
    for i, edge in enumerate(edges):
        where: tuple[str | int, ...] = ("workflow", i)
        if not (isinstance(edge, list) and len(edge) == 2 and all(isinstance(e, str)
                                                                for e in edge)):
            raise spec.error(f"an edge is a [from, to] pair of task names, not {edge!r}", where)
        for end, name in enumerate(edge):
            if name not in tasks:
                raise spec.error(f"{name!r} is not a task of this job."
                                 + suggest(name, tasks), (*where, end))
        src, dst = edge
        if tasks[src]["type"] == "output":
            raise spec.error(f"{src!r} is an output task: nothing flows out of it", (*where, 0))
        if tasks[dst]["type"] == "input":
            raise spec.error(f"{dst!r} is the input task: nothing flows into it", (*where, 1))
        if dst in parent:
            raise spec.error(f"{dst!r} already comes from {parent[dst]!r}; an Ephemeral task "
                             "has one parent", (*where, 1))
        parent[dst] = src
    for name, info in tasks.items():
        if info["type"] != "input" and name not in parent:
            raise spec.error(f"no edge leads to task {name!r}: it would never run",
                             ("tasks", info["index"], "name"))
    entry = next(t for t, info in tasks.items() if info["type"] == "input")
    for name in parent:
        seen = [name]
        while seen[-1] != entry:
            up = parent[seen[-1]]
            if up in seen:
                cycle = " -> ".join([*reversed(seen[seen.index(up):]), up])
                raise spec.error(f"the workflow has a cycle: {cycle}", ("workflow",))
            seen.append(up)
    return parent


def _in_order(entry: str, parent: Mapping[str, str]) -> list[str]:
    """The tasks from the input down, each after its parent (children in edge order)."""
    children: dict[str, list[str]] = {}
    for child, up in parent.items():
        children.setdefault(up, []).append(child)
    order, stack = [], [entry]
    while stack:
        task = stack.pop()
        order.append(task)
        stack.extend(reversed(children.get(task, [])))
    return order


def _literal(value: dict[str, Any]) -> Any:
    """``value`` as a spec argument: wrapped in ``$value`` only where it would read as
    a reference."""
    return {"$value": value} if looks_like_ref(value) or nested_ref(value) else value


def _function_task(info: Mapping[str, Any], up: str, mapped: bool,
                   fn: Callable[..., Any], base_dir: str | None) -> dict[str, Any]:
    """A function task: the adapter, mapped over its parent unless the parent is the input."""
    args: dict[str, Any] = {
        "data": {"$task": up}, "task": info["name"], "namespace": info["namespace"],
        "method": info["method"], "init_args": _literal(dict(info.get("init_args") or {})),
        "base_dir": base_dir, "code": code_hash(fn),
    }
    entry: dict[str, Any] = {"use": f"{RUNTIME}:call", "args": args}
    if mapped:
        entry["map"] = up
    return entry
