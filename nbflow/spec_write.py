"""Flows as specs: the spec mapping of a flow, and spec text (YAML or JSON).

The inverse of :func:`nbflow.spec.flow_from_spec`: a flow whose task functions
can be imported by name (or that came from a spec) becomes a spec mapping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .commands import CommandSpec, declared
from .errors import SpecError
from .spec_calls import SpecCall, SpecCondition, importable_name
from .task import OPTION_NAMES, TaskOptions

if TYPE_CHECKING:
    from .flow import Flow

_DEFAULT_OPTIONS = TaskOptions()


def flow_to_spec(flow: Flow) -> dict[str, Any]:
    """The spec of a flow whose task functions can be imported by name (or came from a spec)."""
    tasks: dict[str, Any] = {}
    for name, task in flow.tasks.items():
        fn = task.fn
        command = declared(task)
        if command is not None:
            tasks[name] = {**_command_entry(command), **_options_spec(name, task.options)}
            continue
        if isinstance(fn, SpecCall):
            entry: dict[str, Any] = {"use": fn.use}
            args = fn.args_spec()
        else:
            use = importable_name(fn)
            if use is None:
                msg = (f"task {name!r}: its function cannot be named in a spec (it is defined in "
                       "__main__, a notebook, a closure or a lambda); move it to a module")
                raise SpecError(msg)
            entry = {"use": use}
            args = {i: ({"$task": i} if i in flow else {"$param": i}) for i in task.inputs}
        if args:
            entry["args"] = args
        entry.update(_options_spec(name, task.options))
        tasks[name] = entry
    data: dict[str, Any] = {"nbflow": 1, "name": flow.name}
    description = getattr(flow, "description", "")
    if description:
        data["description"] = description
    info = getattr(flow, "parameter_info", {}) or {}
    parameters: dict[str, Any] = {}
    for pname, default in flow.parameters().items():
        entry = dict(info.get(pname, {}))
        if default is not ... and "default" not in entry:
            entry["default"] = default
        parameters[pname] = entry
    if parameters:
        data["parameters"] = parameters
    data["tasks"] = tasks
    return data


def _command_entry(command: CommandSpec) -> dict[str, Any]:
    """The ``command:`` entry of a command task, with the keys that differ from the defaults."""
    entry: dict[str, Any] = {"command": command.command if isinstance(command.command, str)
                             else list(command.command)}
    if command.outputs:
        entry["outputs"] = dict(command.outputs)
    if command.stdin is not None:
        entry["stdin"] = command.stdin
    if command.env:
        entry["env"] = dict(command.env)
    if not command.text:
        entry["text"] = False
    if command.shell != "sh":
        entry["shell"] = command.shell
    return entry


def _options_spec(task: str, options: TaskOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in OPTION_NAMES:
        value = getattr(options, key)
        if value == getattr(_DEFAULT_OPTIONS, key):
            continue
        if key == "after":
            value = list(value)
        elif key == "run_if":
            value = value.use if isinstance(value, SpecCondition) else importable_name(value)
            if value is None:
                raise SpecError(f"task {task!r}: its run_if cannot be named in a spec; "
                                "use a function defined in a module")
        elif key == "executor" and not isinstance(value, str):
            raise SpecError(f"task {task!r}: executor objects cannot be written to a spec")
        elif key == "resources":
            value = dict(value)
        out[key] = value
    return out


def dump_spec(data: Mapping[str, Any], path: str | os.PathLike[str] | None = None,
              fmt: str | None = None) -> str:
    """Spec text as YAML (default) or JSON (``fmt="json"`` or a ``.json`` path); written if a path is given."""
    if fmt is None:
        fmt = "json" if path is not None and str(path).endswith(".json") else "yaml"
    if fmt == "json":
        try:
            text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        except ValueError as exc:  # NaN or an infinity: JSON has none (YAML does)
            raise SpecError(f"the spec cannot be written as JSON: {exc}; write it as YAML "
                            "(.yaml), which can hold NaN and infinities") from None
    else:
        text = yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text)
    return text
