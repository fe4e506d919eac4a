"""Per-task overrides for one run: ``-c TASK.OPTION=VALUE`` and ``-p TASK.ARG VALUE``.

A dotted ``-p`` name is ``TASK.ARG``: only task TASK gets that value for its argument
ARG. Both are checked against the notebook or spec (the task exists, the option is
one nbflow has) before anything runs; see :mod:`nbflow.overrides` for how a run
applies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import yaml

from .. import yaml_safe
from ..errors import BatchInputError, suggest
from ..yaml_safe import short
from .params import ParametersCell, check_finite, parse_text

__all__ = ["check_task_names", "split_pairs", "task_config"]


def split_pairs(pairs: Sequence[Sequence[str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``-p`` pairs as (parameters, task arguments): a dotted name is ``TASK.ARG``."""
    plain: list[tuple[str, str]] = []
    dotted: list[tuple[str, str]] = []
    for name, text in pairs:
        (dotted if "." in name else plain).append((name, text))
    return plain, dotted


def task_config(
    cell: ParametersCell | None,
    flags: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The per-task overrides of ``-c TASK.OPTION=VALUE`` (``flags``) and ``-p TASK.ARG VALUE``
    (``pairs``), as ``flow.run(config=...)`` takes them (see :mod:`nbflow.overrides`).

    A value is parsed as YAML (``3``, ``2.5``, ``true``, ``null``, ``[a, b]``); a task
    argument that is also a parameter of ``cell`` is parsed to that parameter's type. An
    option is checked here (name and value); the task names and arguments are checked
    against the flow when it runs, before any task runs. Raises BatchInputError.
    """
    from ..errors import InvalidOptionError, ValidationError
    from ..overrides import STRUCTURAL, split_key
    from ..task import OPTION_NAMES, make_options

    out: dict[str, Any] = {}
    for flag in flags:
        key, eq, text = flag.partition("=")
        where = f"-c {short(flag)}"
        try:
            task, option = split_key(key.strip())
        except ValidationError:
            raise BatchInputError(f"{where}: give TASK.OPTION=VALUE, like -c clean.retries=2") \
                from None
        if not eq:
            raise BatchInputError(f"{where}: give TASK.OPTION=VALUE, like -c {key}=...")
        if option not in OPTION_NAMES:
            raise BatchInputError(
                f"{where}: {option!r} is not a task option." + suggest(option, OPTION_NAMES)
                + f" Options: {', '.join(OPTION_NAMES)}. To give task {task!r} the value of its "
                f"argument {option!r}, use -p {task}.{option} VALUE")
        if option in STRUCTURAL:
            raise BatchInputError(f"{where}: {option!r} shapes the graph, so it cannot be set at "
                                  "run time; change the task's declaration")
        value = _yaml_value(text, where)
        try:
            make_options(task, {option: value})
        except InvalidOptionError as exc:
            raise BatchInputError(f"{where}: {exc}") from None
        out[f"{task}.{option}"] = value
    for name, text in pairs:
        where = f"-p {short(name)} {short(text)!r}"
        try:
            task, arg = split_key(name)
        except ValidationError:
            raise BatchInputError(f"{where}: a dotted name is TASK.ARG, a task and one of its "
                                  "arguments, like -p clean.threshold 0.5") from None
        if arg in OPTION_NAMES:
            raise BatchInputError(f"{where}: {arg!r} is a task option; set it with "
                                  f"-c {task}.{arg}={text}")
        p = cell.parameters.get(arg) if cell is not None else None
        if p is not None:
            out[name] = parse_text(replace(p, name=name), text)
        else:
            out[name] = _yaml_value(text, where)
    return out


def _yaml_value(text: str, where: str) -> Any:
    try:
        value = yaml_safe.load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        problem, _ = yaml_safe.describe(exc)
        raise BatchInputError(f"{where}: not a YAML value ({problem})") from None
    check_finite(value, where)
    return value


def check_task_names(nb: Any, notebook: str, config: Mapping[str, Any]) -> None:
    """Refuse an override whose task appears nowhere in the notebook's code: a typo.

    Which tasks a notebook declares is only known once its cells run, so a name that
    does appear is checked by ``%nbflow run`` in the kernel (and ``nbflow run`` warns
    about a task that no run ran). Raises BatchInputError with a suggestion.
    """
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    words = set(re.findall(r"[A-Za-z_]\w*", code))
    declared = re.findall(r"^\s*%%nbflow\s+(?:task|command)\s+([A-Za-z_]\w*)", code, re.M)
    for key in config:
        task = key.partition(".")[0]
        if task not in words:
            have = ", ".join(dict.fromkeys(declared)) or "none found"
            raise BatchInputError(
                f"-c/-p {short(key)}: {notebook} has no task {task!r}."
                + suggest(task, declared or words) + f" Its task cells: {have}.")
