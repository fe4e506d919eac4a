"""Per-task configuration at run time: ``flow.run(config={"round.retries": 3, "round.decimals": 2})``.

Each key of ``config`` is ``TASK.NAME``:

- NAME is a task option (one of :data:`nbflow.task.OPTION_NAMES`: ``retries``,
  ``timeout``, ``priority``, ``cache``, ...): the task runs with that option
  changed, checked as at declaration (a bad value raises the same
  :class:`~nbflow.errors.InvalidOptionError`). ``after`` and ``map`` shape the
  graph, so they cannot change at run time.
- Otherwise NAME is one of the task's own arguments: an input that is not a
  task, so a flow parameter (a spec's ``$param``) or an argument with a default.
  The task gets that value; other tasks taking the same parameter keep the
  run's value. An input that is an upstream task's result cannot be overridden.
  A task with an argument named like an option (``timeout``) gets the option.

Everything is checked before anything runs; an unknown task, option or
argument is named with a suggestion. Overridden arguments are hashed into the
task's cache key like any parameter, so a changed value recomputes the task
(and what follows); ``image=`` changes the code key. Options that do not change
what a task computes (``retries``, ``timeout``, ...) keep its cached result.

:func:`plan_with_config` is the one entry point (``Flow.run``, ``Flow.run_async``,
and whatever else plans a run). The ``nbflow run`` command passes a notebook's
overrides to its kernel in :data:`ENV_VAR` (JSON), which ``%nbflow run`` reads
with :func:`from_environ`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    InvalidOptionError,
    MissingParameterError,
    UnknownTaskError,
    ValidationError,
    suggest,
)
from .planning import rekey
from .streams import check_streams
from .task import OPTION_NAMES, Task

if TYPE_CHECKING:
    from .flow import Flow
    from .plan import Plan

__all__ = ["ENV_VAR", "TaskConfig", "apply_config", "from_environ", "parse_config",
           "plan_with_config"]

#: the environment variable ``nbflow run`` sets in a notebook's kernel: the overrides as JSON
ENV_VAR = "NBFLOW_TASK_CONFIG"
#: options that decide the graph's shape: fixed once declared
STRUCTURAL = ("after", "map")
WHERE = "run(config=...)"


@dataclass
class TaskConfig:
    """The overrides of one task: options and argument values."""

    options: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)


class _Unset:
    """Stands in for a parameter only overridden tasks take, while the flow plans."""

    def __repr__(self) -> str:
        return "<set by config>"

    def __reduce__(self) -> str:
        return "_UNSET"


_UNSET = _Unset()


def split_key(key: object) -> tuple[str, str]:
    """``"task.name"`` -> ``("task", "name")``; ValidationError for anything else."""
    if isinstance(key, str):
        task, dot, name = key.partition(".")
        if dot and task.isidentifier() and name.isidentifier():
            return task, name
    raise ValidationError(f"{WHERE}: key {key!r} must be 'TASK.NAME', a task and one of its "
                          "options or arguments, like 'clean.retries' or 'clean.threshold'")


def parse_config(flow: str, tasks: Mapping[str, Task], config: Mapping[str, Any]) -> dict[str, TaskConfig]:
    """Check ``config`` against the flow's ``tasks`` and group it by task.

    Raises :class:`~nbflow.errors.UnknownTaskError` for an unknown task and
    :class:`~nbflow.errors.InvalidOptionError` for an option that cannot be set,
    a bad option value, or a name that is no option or argument of the task.
    """
    out: dict[str, TaskConfig] = {}
    for key, value in config.items():
        name, what = split_key(key)
        task = tasks.get(name)
        if task is None:
            raise UnknownTaskError(flow, name, f"{WHERE} key {key!r}", tasks)
        entry = out.setdefault(name, TaskConfig())
        if what in OPTION_NAMES:
            entry.options[what] = value
        else:
            check_argument(task, what, tasks)
            entry.args[what] = value
    for name, entry in out.items():
        check_options(tasks[name], entry.options)
    return out


def check_options(task: Task, options: Mapping[str, Any]) -> Task:
    """``task`` with ``options`` changed, checked as at declaration."""
    for name in options:
        if name in STRUCTURAL:
            raise InvalidOptionError(task.name, name, "shapes the graph, so it cannot be set at "
                                     "run time (config=...); change the task's declaration")
    if not options:
        return task
    changed = task.with_options(**options)  # checked as at declaration (streams too)
    if changed.options.image == task.options.image:
        # the same code: keep the declared task's key, as a run without overrides would (it
        # is hashed on first use, and a closure's values may have changed since)
        changed.__dict__["code_key"] = task.code_key
    return changed


def check_argument(task: Task, name: str, tasks: Iterable[str]) -> None:
    """Refuse ``name`` unless it is an input of ``task`` that is not a task's result."""
    task_names = set(tasks)
    if name in task.inputs and name in task_names:
        raise InvalidOptionError(task.name, name, f"is the result of upstream task {name!r}, "
                                 "not an argument that can be set at run time (config=...)")
    if name not in task.inputs:
        args = [i for i in task.inputs if i not in task_names]
        have = ", ".join(args) if args else "none"
        raise InvalidOptionError(
            task.name, name, f"is neither a task option nor an argument of task {task.name!r}."
            + suggest(name, [*args, *OPTION_NAMES]) + f" Its arguments: {have}.")


def plan_with_config(
    flow: Flow,
    targets: str | Iterable[str] | None = None,
    params: Mapping[str, Any] | None = None,
    force: str | Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
) -> Plan:
    """``flow.plan(targets, params, force)`` with ``config``'s per-task overrides applied.

    A flow parameter with no value is no error when every task that needs it
    is given it by ``config``.
    """
    if not config:
        return flow.plan(targets, params, force)
    parsed = parse_config(flow.name, flow.tasks, config)
    try:
        plan = flow.plan(targets, params, force)
    except MissingParameterError as exc:
        uncovered = {p: [t for t in users if t not in parsed or p not in parsed[t].args]
                     for p, users in exc.missing.items()}
        uncovered = {p: users for p, users in uncovered.items() if users}
        if uncovered:
            raise MissingParameterError(flow.name, uncovered, flow.tasks) from None
        stand_ins = {p: _UNSET for p in exc.missing}
        plan = flow.plan(targets, {**(params or {}), **stand_ins}, force)
        plan.params = dict(params or {})
        _restore(flow, plan, stand_ins, parsed)
    apply_config(plan, parsed)
    return plan


def _restore(flow: Flow, plan: Plan, stand_ins: Mapping[str, Any],
             parsed: Mapping[str, TaskConfig]) -> None:
    """Give the tasks that had a value of a stand-in parameter (the notebook's, or their
    default) that value back; the tasks ``config`` gives it get theirs in apply_config."""
    namespace = flow.namespace
    for pt in plan.tasks:
        own = parsed.get(pt.name)
        took = [p for p in stand_ins if pt.params.get(p) is _UNSET
                and (own is None or p not in own.args)]
        if not took:
            continue
        values = dict(pt.params)
        for p in took:
            values[p] = namespace[p] if namespace is not None and p in namespace \
                else pt.task.defaults[p]
        pt.params = values
        rekey(pt)


def apply_config(plan: Plan, parsed: Mapping[str, TaskConfig]) -> None:
    """Apply checked overrides to a fresh plan (in place): new options, argument values and
    cache keys for the tasks they name; tasks the plan does not run are left out."""
    tasks = plan.by_name
    for name, entry in parsed.items():
        pt = tasks.get(name)
        if pt is None:
            continue
        pt.set_task(check_options(pt.task, entry.options))
        for arg in entry.args:  # the notebook may have rebuilt the task since it was checked
            check_argument(pt.task, arg, tasks)
        pt.params = {**pt.params, **entry.args}
        rekey(pt)
    if any(entry.options for entry in parsed.values()):
        check_streams(plan.tasks)  # batch_size only on a map of a stream, as Flow.plan checks


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The overrides ``nbflow run`` handed to this kernel in :data:`ENV_VAR` ({} when unset)."""
    text = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"{ENV_VAR} is not JSON ({exc}); it holds per-task overrides "
                              "like {\"clean.retries\": 2}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{ENV_VAR} must hold a JSON object of 'TASK.NAME': value, "
                              f"not {type(data).__name__}")
    return data
