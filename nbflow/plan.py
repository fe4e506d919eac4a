"""Plan: the frozen, validated graph of one run, handed from Flow to the scheduler.

Tasks are numbered in topological order, so the scheduler works with list
indices rather than names on its hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .task import Task


@dataclass(eq=False)
class PlannedTask:
    """One task as it will run: which inputs come from where."""

    #: position in :attr:`Plan.tasks` (topological order)
    index: int
    task: Task
    #: inputs that are upstream task results (the input name is the task name)
    upstreams: tuple[str, ...]
    #: inputs that are flow parameters, with their resolved values
    params: Mapping[str, Any]
    #: hash of ``params`` for the cache key (None: a value cannot be hashed; not cached)
    params_key: str | None
    #: indices of every task this one waits for (data and ``after=``)
    deps: tuple[int, ...]
    #: index of the upstream this task maps over, or None
    map_source: int | None = None
    #: True when the map source is itself mapped: branch i follows its branch i
    elementwise: bool = False
    #: indices of tasks that wait for this one
    children: list[int] = field(default_factory=list)
    #: recompute whatever the cache holds, and replace what it holds (``run(force=...)``)
    forced: bool = False
    #: the task's ``key_extra()`` (notebook helpers and globals), computed when the plan was
    #: made so that the scheduler never calls user code; None: it failed, so no cache
    extra_key: str | None = ""

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def mapped(self) -> bool:
        return self.map_source is not None


@dataclass(eq=False)
class Plan:
    """The tasks of one run, in topological order, with resolved inputs."""

    flow: str
    tasks: list[PlannedTask]
    by_name: dict[str, PlannedTask]
    params: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.tasks)
