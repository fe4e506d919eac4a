"""Planning: a flow's tasks, with the values and keys of one run, frozen into a :class:`Plan`.

:meth:`Flow.plan <nbflow.Flow.plan>` checks what it was asked for (targets, ``force``,
typed parameter values) and finds the graph's :class:`~nbflow.plan.Shape`; this module
gives each task its parameter values (the run's, the notebook's, its defaults), the
parts of its cache key that are known before it runs, and checks that nothing is
missing. The scheduler then never calls user code to make a key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .cache import hash_value
from .errors import MissingParameterError, UnknownParameterError
from .plan import Plan, PlannedTask, Shape
from .streams import check_streams
from .task import Task

__all__ = ["build_plan", "rekey"]

logger = logging.getLogger(__name__)


def build_plan(flow: str, tasks: Mapping[str, Task], shape: Shape, params: dict[str, Any],
               forced: set[str], namespace: Mapping[str, Any] | None,
               parameters: Callable[[], dict[str, Any]]) -> Plan:
    """The plan of a run of ``shape``'s tasks with ``params``.

    A task input that is not a task takes the run's value, else the notebook's
    (``namespace``), else the function's default. Raises
    :class:`~nbflow.errors.MissingParameterError` naming every input with no value and
    the tasks that need it, and :class:`~nbflow.errors.UnknownParameterError` for a
    value no task takes (``parameters()`` lists the flow's parameters).
    """
    missing: dict[str, list[str]] = {}
    planned: dict[str, PlannedTask] = {}
    plan_tasks: list[PlannedTask] = []
    for index, name in enumerate(shape.order):
        task = tasks[name]
        values: dict[str, Any] = {}
        for i in task.inputs:
            if i in tasks:
                continue
            if i in params:
                values[i] = params[i]
            elif namespace is not None and i in namespace:
                values[i] = namespace[i]
            elif i in task.defaults:
                values[i] = task.defaults[i]
            else:
                missing.setdefault(i, []).append(name)
        map_source = shape.map_source[index]
        pt = PlannedTask(
            index=index,
            task=task,
            upstreams=shape.upstreams[index],
            params=values,
            params_key=params_key(values) if task.options.cache else "",
            deps=shape.deps[index],
            map_source=map_source,
            elementwise=map_source is not None and (
                shape.map_source[map_source] is not None
                or tasks[shape.order[map_source]].is_stream),
            children=list(shape.children[index]),
            forced=name in forced,
            extra_key="" if task.key_extra is None else extra_key(task),
        )
        planned[name] = pt
        plan_tasks.append(pt)
    if missing:
        raise MissingParameterError(flow, missing, list(tasks))
    if params:
        known = parameters()
        unknown = sorted(set(params) - set(known) - set(tasks))
        if unknown:
            raise UnknownParameterError(flow, unknown[0], known)
    check_streams(plan_tasks)
    return Plan(flow=flow, tasks=plan_tasks, by_name=planned, params=params)


def rekey(pt: PlannedTask) -> None:
    """Make a planned task's parameter and extra keys again, after its task or its
    values changed (per-task overrides)."""
    pt.params_key = params_key(dict(pt.params)) if pt.task.options.cache else ""
    pt.extra_key = "" if pt.task.key_extra is None else extra_key(pt.task)


_EMPTY_PARAMS_KEY: str | None = None


def params_key(values: dict[str, Any]) -> str | None:
    """``hash_value(values)``; most tasks take no parameters, so that key is made once.

    None when a value cannot be hashed: the task then has no cache key and always runs.
    """
    global _EMPTY_PARAMS_KEY
    if values:
        try:
            return hash_value(values)
        except ValueError:  # e.g. a lock or a connection in the notebook: run, don't cache
            return None
    if _EMPTY_PARAMS_KEY is None:
        _EMPTY_PARAMS_KEY = hash_value({})
    return _EMPTY_PARAMS_KEY


def extra_key(task: Task) -> str | None:
    """``task.key_extra()`` for the cache key, on the caller's thread (it reads notebook
    globals); None when it fails: the task then runs and is not cached."""
    if task.key_extra is None or not task.options.cache:
        return ""
    try:
        return task.key_extra()
    except Exception:  # an inspection problem must not stop the run; just don't cache
        logger.warning("cache key of task %r could not be computed", task.name, exc_info=True)
        return None
