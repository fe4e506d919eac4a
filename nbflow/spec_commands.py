"""Command tasks in specs: ``command:`` instead of ``use:``.

.. code-block:: yaml

    tasks:
      warp:
        command: gdalwarp -tr {res} {res} {raw} warped.tif   # or a list: [gdalwarp, -tr, ...]
        outputs: {tif: warped.tif}
        env: {GDAL_CACHEMAX: "512"}
        retries: 1

The keys are the arguments of ``flow.command`` (``command``, ``outputs``,
``stdin``, ``env``, ``text``) plus the task options (``image``, ``retries``,
``map``, ...). The ``{placeholders}`` of ``command`` and ``env`` values, and
``stdin``, name the task's inputs: tasks or parameters of the spec, checked
when the spec is loaded. A task has ``use:`` or ``command:``, never both, and
keys of the other kind are errors (:func:`check_kinds`, run before the schema
so the message says what to do).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptionError, suggest
from .task import Task

if TYPE_CHECKING:
    from .spec import KeyPath, Spec

__all__ = ["COMMAND_KEYS", "check_kinds", "command_task_of"]

#: the keys of a command task that are not task options
COMMAND_KEYS = ("command", "outputs", "stdin", "env", "text", "shell")
#: keys only a ``use:`` task has
USE_KEYS = ("args", "run_if")


def check_kinds(spec: Spec) -> None:
    """Each task has ``use:`` or ``command:`` (not both), and no key of the other kind."""
    tasks = spec.data.get("tasks")
    if not isinstance(tasks, dict):
        return  # the schema reports it
    for name, entry in tasks.items():
        if not isinstance(entry, dict):
            continue
        base: KeyPath = ("tasks", name)
        if "use" in entry and "command" in entry:
            raise spec.error("a task has either use: (a function to call) or command: (a "
                             "command to run), not both", (*base, "command"))
        if "use" not in entry and "command" not in entry:
            raise spec.error("a task needs use: (a registered task or an importable "
                             "'module:function') or command: (a shell command or an argument "
                             "list)", base)
        if "command" in entry:
            for key in USE_KEYS:
                if key in entry:
                    what = ("a command task's inputs are the {placeholders} of its command "
                            "and env values" if key == "args"
                            else "run_if is not available on command tasks yet")
                    raise spec.error(f"{key}: belongs to use: tasks; {what}", (*base, key))
        else:
            for key in COMMAND_KEYS[1:]:
                if key in entry:
                    raise spec.error(f"{key}: belongs to command tasks (command:); a use: task "
                                     "gets its inputs from args:", (*base, key))


def command_task_of(spec: Spec, name: str, entry: Mapping[str, Any], options: dict[str, Any],
                    params: Mapping[str, Mapping[str, Any]], task_names: Sequence[str]) -> Task:
    """The task of a spec entry with ``command:`` (options already checked by the caller)."""
    from .commands import command_task  # the runtime of command tasks, loaded on first use

    base: KeyPath = ("tasks", name)
    try:
        task = command_task(name, entry["command"], outputs=entry.get("outputs"),
                            stdin=entry.get("stdin"), env=entry.get("env"),
                            text=entry.get("text", True), shell=entry.get("shell", "sh"),
                            options=options,
                            source=f"{spec.file or '<spec>'}:{spec.lines.get(base, '?')}")
    except InvalidOptionError as exc:
        key = exc.option if exc.option in entry else None
        raise spec.error(str(exc), base if key is None else (*base, key)) from None
    known = [*task_names, *params]
    for input_name in task.inputs:
        if input_name not in known:
            where = _where_used(entry, base, input_name)
            shown = repr(input_name) if where[-1] == "stdin" else f"{{{input_name}}}"
            raise spec.error(f"{shown} is neither a task nor a parameter of this spec."
                             + suggest(input_name, known), where)
    _check_outputs(spec, entry, base, task_names)
    target = options.get("map")
    if target is not None and (target not in task.inputs or target not in task_names):
        ups = [i for i in task.inputs if i in task_names]
        raise spec.error(f"map={target!r} must name an upstream task the command uses as a "
                         f"placeholder {{{target}}}." + suggest(target, ups), (*base, "map"))
    defaults = {p: info["default"] for p, info in params.items()
                if p in task.inputs and "default" in info}
    return replace(task, defaults=defaults) if defaults else task


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def _templates(entry: Mapping[str, Any], base: KeyPath) -> list[tuple[KeyPath, str]]:
    """Each template of a command entry and where it is: command (or its items), env values."""
    command = entry["command"]
    out: list[tuple[KeyPath, str]] = []
    if isinstance(command, str):
        out.append(((*base, "command"), command))
    else:
        out += [((*base, "command", i), arg) for i, arg in enumerate(command)]
    out += [((*base, "env", var), value) for var, value in (entry.get("env") or {}).items()]
    return out


def _where_used(entry: Mapping[str, Any], base: KeyPath, name: str) -> KeyPath:
    """The key path of the first template that uses ``{name}`` (else ``stdin``)."""
    for path, template in _templates(entry, base):
        if any(f.partition(".")[0] == name for f in _fields(template)):
            return path
    return (*base, "stdin")


def _check_outputs(spec: Spec, entry: Mapping[str, Any], base: KeyPath,
                   task_names: Sequence[str]) -> None:
    """``{task.output}`` names a command task of the spec and one of its ``outputs``."""
    for path, template in _templates(entry, base):
        for field_name in _fields(template):
            head, _, output = field_name.partition(".")
            if not output:
                continue
            if head not in task_names:
                raise spec.error(f"{{{field_name}}}: {head!r} is a parameter, not a command "
                                 "task, so it has no output files", path)
            upstream = spec.tasks[head]
            if "command" not in upstream:
                raise spec.error(f"{{{field_name}}}: {head!r} is not a command task, so it "
                                 "has no output files", path)
            declared = list(upstream.get("outputs") or {})
            if output not in declared:
                raise spec.error(f"{{{field_name}}}: command {head!r} declares no output "
                                 f"{output!r}." + suggest(output, declared)
                                 + f" Its outputs: {', '.join(declared) or 'none'}.", path)
