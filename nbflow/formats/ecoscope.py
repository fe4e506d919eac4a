"""ecoscope-workflows compilation specs: ``name``, ``cache_root`` and ``tasks: {task: {arg:
upstream}}``, read into an nbflow spec.

Each task key names a registered task by its function name (the ``nbflow.tasks``
entry points: ``eco.fetch`` is found as ``fetch``); two packages registering the name
is an error listing both. An argument's value is the name of the upstream task whose
result it takes. Every argument the spec leaves out becomes a parameter of the run,
with the type, default, constraints and description of the function's annotation
(``Annotated[int, Field(ge=1, description=...)]``), so ``nbflow params`` describes it
and ``-p``/``-f`` fill it. A parameter is named after its argument, or
``TASK-ARG`` when two tasks leave an argument of the same name open.
"""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import suggest
from ..registry import registry
from ..spec import KeyPath, Spec

__all__ = ["ecoscope_spec", "is_ecoscope"]

#: JSON Schema type -> a spec parameter's type
_TYPES = {"string": "string", "integer": "integer", "number": "number",
          "boolean": "boolean", "array": "list", "object": "object"}
#: JSON Schema keywords a spec parameter block takes as they are
_KEPT = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
         "minLength", "maxLength", "minItems", "maxItems", "pattern", "enum", "description")


def is_ecoscope(data: Mapping[str, Any]) -> bool:
    """``tasks`` whose entries map arguments to task names (no ``use``, no ``command``)."""
    tasks = data.get("tasks")
    if not isinstance(tasks, Mapping) or "nbflow" in data:
        return False
    return all(isinstance(entry, Mapping) and not {"use", "command"} & set(entry)
               and all(isinstance(v, str) for v in entry.values())
               for entry in tasks.values()) and set(data) <= {"name", "id", "cache_root",
                                                              "tasks", "description"}


def ecoscope_spec(spec: Spec) -> dict[str, Any]:
    """The nbflow spec of an ecoscope compilation spec; ``spec.error`` for bad input."""
    data = spec.data
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise spec.error("an ecoscope spec needs a 'name'", ("name",))
    tasks = data.get("tasks")
    if not isinstance(tasks, Mapping) or not tasks:
        raise spec.error("an ecoscope spec needs 'tasks': {task: {argument: upstream task}}",
                         ("tasks",))
    functions = {name: _resolve(spec, name) for name in tasks}
    open_args: dict[str, list[tuple[str, inspect.Parameter, Callable[..., Any]]]] = {}
    out_tasks: dict[str, Any] = {}
    for name, entry in tasks.items():
        fn, registered = functions[name]
        params = _parameters(spec, name, fn)
        args: dict[str, Any] = {}
        for arg, upstream in (entry or {}).items():
            where: KeyPath = ("tasks", name, arg)
            if arg not in params:
                raise spec.error(f"{registered} takes no argument {arg!r}."
                                 + suggest(arg, params), where)
            if upstream not in tasks:
                raise spec.error(f"{upstream!r} is not a task of this spec."
                                 + suggest(str(upstream), tasks), where)
            args[arg] = {"$task": upstream}
        for arg, p in params.items():
            if arg not in args:
                open_args.setdefault(arg, []).append((name, p, fn))
        out_tasks[name] = {"use": registered, "args": args}
    parameters: dict[str, Any] = {}
    for arg, users in open_args.items():
        for task, p, fn in users:
            pname = arg if len(users) == 1 else f"{task}-{arg}"
            parameters[pname] = _parameter_block(spec, task, p, fn)
            out_tasks[task]["args"][arg] = {"$param": pname}
    out: dict[str, Any] = {"nbflow": 1, "name": data["name"], "tasks": out_tasks}
    if parameters:
        out["parameters"] = parameters
    if data.get("description"):
        out["description"] = str(data["description"])
    return out


def _resolve(spec: Spec, name: str) -> tuple[Callable[..., Any], str]:
    """The registered task whose function is called ``name``, and its registered name."""
    found = [full for full in registry if full.rpartition(".")[2] == name]
    if len(found) > 1:
        raise spec.error(f"task {name!r} is registered by more than one package: "
                         f"{', '.join(found)}; keep one of them installed", ("tasks", name))
    if not found:
        known = {full.rpartition(".")[2] for full in registry}
        raise spec.error(f"no registered task is called {name!r}." + suggest(name, known)
                         + " `nbflow tasks` lists the registered ones", ("tasks", name))
    return registry.get(found[0]).fn, found[0]


def _parameters(spec: Spec, name: str, fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise spec.error(f"{name} has no signature to read ({exc})", ("tasks", name)) from None
    return {p.name: p for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _parameter_block(spec: Spec, task: str, p: inspect.Parameter,
                     fn: Callable[..., Any]) -> dict[str, Any]:
    """A spec parameter block from the function's annotation and default."""
    from ..jsonvalues import jsonable
    from ..typed_params import TypedParam

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}
    block: dict[str, Any] = {"type": "any"}
    has_default = p.default is not p.empty
    annotation = hints.get(p.name)
    if annotation is not None:
        typed = TypedParam(p.name, annotation, p.default if has_default else None,
                           has_default, where=f"{task}()")
        with warnings.catch_warnings():  # an opaque type is `any`, said once at run time
            warnings.simplefilter("ignore")
            schema = typed.schema()
        kind = schema.get("type")
        if isinstance(kind, str) and kind in _TYPES:
            block["type"] = _TYPES[kind]
        block.update({k: schema[k] for k in _KEPT if k in schema})
    if has_default:
        block["default"] = jsonable(p.default)
    if not block.get("description"):
        block["description"] = f"argument {p.name} of {task}"
    return block
