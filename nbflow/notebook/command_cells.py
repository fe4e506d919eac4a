"""``%%nbflow command NAME [options]`` cells: the cell body is a shell script, declared as a command task.

The body is declared with :func:`nbflow.commands.command_task` in its string
form, so it runs with ``sh -c`` and its ``{placeholders}`` get shell-quoted
values. A first line naming a shell (``#!/bin/bash``, ``#!/usr/bin/env zsh``)
runs the body with that shell instead (``shell=``); a shebang naming another
interpreter is refused, since the body is given to a shell's ``-c``. The header's ``--output``, ``--stdin``,
``--env``, ``--bytes`` and ``--image`` are the arguments of ``flow.command``;
the other options are those of a task cell (:func:`.parser.task_options`).

As with a task cell, running the cell only declares (or redeclares) the task;
the task's ``source`` is the cell (``cell In[3]``), so a placeholder that names
nothing is reported at the run with the cell and the line
(:func:`placeholder_line`).

Nothing here imports IPython: mistakes raise :class:`CommandCellError` (a
``ValueError``), which the magic turns into IPython's ``UsageError`` and
``nbflow export`` into an ``ExportError``. The export writes a command cell as
a ``flow.command(...)`` call (:func:`command_call`) or a spec entry with
``command:`` (:func:`command_spec_entry`).
"""

from __future__ import annotations

import argparse
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeclarationError, suggest
from ..task import Task
from .parser import task_options

__all__ = ("CommandCell", "CommandCellError", "command_call", "command_cell", "command_cell_task",
           "command_spec_entry", "is_command_cell", "placeholder_line")

#: a shebang naming a shell (path or ``env NAME``): the body runs with ``SHELL -c``
_SHELL_SHEBANG = re.compile(r"#!\s*(?:/usr/bin/env\s+(?P<name>\w+)|(?P<path>/\S*/(?:ba|da|z|k|a)?sh))\s*$")


#: the shells a first line ``#!...`` may name
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "ash")


class CommandCellError(ValueError):
    """A ``%%nbflow command`` cell cannot be declared as written (one line, names the cell)."""


def command_cell_task(args: argparse.Namespace, body: str, *, label: str,
                      tasks: Iterable[str] = ()) -> Task:
    """The command task a parsed ``%%nbflow command`` header and its cell body declare.

    Parameters
    ----------
    args
        The parsed header (``build_parser().parse_command``).
    body
        The cell's text after the header: the shell script.
    label
        The cell, for messages and as the task's ``source`` (``"cell In[3]"``).
    tasks
        The flow's task names, for suggestions when ``--map`` names no placeholder.
    """
    from ..commands import command_task  # the runtime of command tasks, loaded on first use

    name = args.name
    where = f"%%nbflow command {name} ({label})"
    script = body.rstrip()
    if not script.strip():
        raise CommandCellError(f"{where}: the cell has no command; write the shell script "
                               "below the %%nbflow command line")
    first = script.lstrip().partition("\n")[0].strip()
    shell = "sh"
    if first.startswith("#!"):
        found = _SHELL_SHEBANG.match(first)
        named = None if found is None else found.group("name") or found.group("path")
        if named is None or Path(named).name not in _SHELLS:
            raise CommandCellError(
                f"{where}: the cell body runs with a shell's -c, so {first!r} cannot choose its "
                f"interpreter; a first line may name a shell ({', '.join(_SHELLS)}). Keep other "
                "scripts in a file and run that from the cell, like: Rscript /path/to/script.R "
                "{input}")
        shell = named
    outputs = dict(args.output or [])
    env = dict(args.env or [])
    try:
        task = command_task(name, script, outputs=outputs, stdin=args.stdin, env=env,
                            text=not args.bytes, shell=shell, options=task_options(args),
                            source=label)
    except DeclarationError as exc:
        raise CommandCellError(f"{where}: {_header_words(str(exc))}") from None
    target = args.map
    if target is not None and target not in task.inputs:
        uses = ", ".join(f"{{{i}}}" for i in task.inputs) or "none"
        hint = suggest(target, [*task.inputs, *tasks])
        raise CommandCellError(f"{where}: --map {target!r} must be an input of the command, "
                               f"a placeholder {{{target}}} that stands for each item.{hint} "
                               f"Placeholders: {uses}.")
    return task


def _header_words(message: str) -> str:
    """An option error of ``flow.command`` in the header's words (``--output``, not outputs)."""
    for option, flag in (("'outputs'", "--output"), ("'env'", "--env"), ("'stdin'", "--stdin"),
                         ("'image'", "--image")):
        message = message.replace(f"option {option}", flag, 1)
    return message


def is_command_cell(task: Task) -> bool:
    """True for a task a ``%%nbflow command`` cell declared."""
    return task.command is not None and (task.source or "").startswith("cell")


def placeholder_line(task: Task, name: str) -> int:
    """The cell line of the first ``{name}`` placeholder of a command cell's task.

    Line 1 is the ``%%nbflow command`` header (``--env``, ``--stdin``), the
    script starts on line 2.
    """
    for number, line in enumerate((task.command or "").splitlines(), start=2):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(line) if f is not None]
        except ValueError:
            continue
        if any(f.partition(".")[0] == name for f in fields):
            return number
    return 1


# -- export ------------------------------------------------------------------------------------


@dataclass
class CommandCell:
    """One ``%%nbflow command`` cell of a notebook being exported."""

    name: str
    #: the script (the cell body)
    script: str
    #: ``outputs``, ``stdin``, ``env`` and ``text`` of ``flow.command``, where given
    arguments: dict[str, Any]
    options: dict[str, Any]
    #: the placeholder names: upstream tasks or notebook parameters
    inputs: tuple[str, ...]
    label: str
    index: int


def command_cell(args: argparse.Namespace, body: str, *, label: str, index: int) -> CommandCell:
    """A command cell to export, checked as the magic checks it (:class:`CommandCellError`)."""
    task = command_cell_task(args, body, label=label)
    arguments: dict[str, Any] = {}
    if args.output:
        arguments["outputs"] = dict(args.output)
    if args.stdin is not None:
        arguments["stdin"] = args.stdin
    if args.env:
        arguments["env"] = dict(args.env)
    if args.bytes:
        arguments["text"] = False
    from ..commands import declared

    spec = declared(task)
    if spec is not None and spec.shell != "sh":  # the cell's first line named a shell
        arguments["shell"] = spec.shell
    return CommandCell(args.name, body.rstrip(), arguments, task_options(args), task.inputs,
                       label, index)


def command_call(cell: CommandCell) -> str:
    """The ``flow.command(...)`` line that declares the cell's task in an exported module."""
    keywords = {**cell.arguments, **cell.options}
    extra = "".join(f", {k}={v!r}" for k, v in keywords.items())
    return f"flow.command({cell.name!r}, {cell.script!r}{extra})"


def command_spec_entry(cell: CommandCell, tasks: Iterable[str],
                       parameters: Iterable[str]) -> dict[str, Any]:
    """The spec entry of the cell's task; its placeholders must be tasks or parameters."""
    known = {*tasks, *parameters}
    for name in cell.inputs:
        if name not in known:
            raise CommandCellError(
                f"{cell.label}: %%nbflow command {cell.name} uses {{{name}}}, which is neither a "
                "task nor assigned in the cell tagged 'parameters', so a spec cannot give it; "
                "assign it in the parameters cell, or export to a .py module instead")
    return {"command": cell.script, **cell.arguments, **cell.options}
