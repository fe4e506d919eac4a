"""Executor lanes: which executor runs each task of a run, and which inputs cross between them.

A task's ``executor=`` option puts it on an executor of its own: one per
distinct value, each a *lane* of ready work in the state machine; tasks
without one use the run's executor (lane 0). Where an edge crosses from a
remote executor (dask futures) to another executor, the scheduler fetches the
value before handing the item over, so data moves only where an edge crosses.
"""

from __future__ import annotations

from typing import Any

from .executors.base import Executor
from .plan import Plan, PlannedTask


def assign_lanes(tasks: list[PlannedTask], default: Executor) -> tuple[list[Executor], list[int]]:
    """The run's executors and each task's lane: one executor per distinct ``executor=``."""
    from .executors import resolve_executor

    executors = [default]
    by_option: dict[Any, int] = {}
    lanes: list[int] = []
    for pt in tasks:
        option = pt.task.options.executor
        if option is None or option is default or option == default.name:
            lanes.append(0)
            continue
        key = option if isinstance(option, str) else id(option)
        lane = by_option.get(key)
        if lane is None:
            lane = by_option[key] = len(executors)
            executors.append(resolve_executor(option))
        lanes.append(lane)
    return executors, lanes


def crossing_inputs(plan: Plan, executors: list[Executor],
                     lanes: list[int]) -> dict[int, list[tuple[str, int]]]:
    """Inputs whose values live on a remote executor that the consumer cannot read."""
    if len(executors) == 1:
        return {}
    out: dict[int, list[tuple[str, int]]] = {}
    for pt in plan.tasks:
        t = pt.index
        mine = executors[lanes[t]]
        for name in pt.upstreams:
            d = plan.by_name[name].index
            theirs = executors[lanes[d]]
            if theirs is mine or not theirs.remote:
                continue
            if mine.remote and getattr(mine, "client", 0) is getattr(theirs, "client", 1):
                continue  # two executors on one dask client: futures pass as they are
            out.setdefault(t, []).append((name, lanes[d]))
    return out
