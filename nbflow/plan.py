"""Plan: the frozen, validated graph of one run, handed from Flow to the scheduler.

Tasks are numbered in topological order, so the scheduler works with list
indices rather than names on its hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import graph
from .errors import CycleError, InvalidMapError, UnknownTaskError
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

    #: the task's name
    name: str = field(init=False)
    #: a streaming task: a generator whose items come one by one (see ``streams.py``)
    stream: bool = field(init=False)
    #: the task has branches: it is mapped, or it streams (an item per branch)
    branches: bool = field(init=False)

    @property
    def mapped(self) -> bool:
        return self.map_source is not None

    def __post_init__(self) -> None:
        # plain attributes, not cached properties: the scheduler reads them per stimulus,
        # and a cached_property takes a lock on every read (Python < 3.12)
        self.name = self.task.name
        self.stream = self.task.is_stream
        self.branches = self.map_source is not None or self.stream

    def set_task(self, task: Task) -> None:
        """Run ``task`` (the same task with other options) in this place of the plan."""
        self.task = task
        self.__post_init__()


@dataclass(eq=False)
class Plan:
    """The tasks of one run, in topological order, with resolved inputs."""

    flow: str
    tasks: list[PlannedTask]
    by_name: dict[str, PlannedTask]
    params: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass(frozen=True)
class Shape:
    """The graph of a run without its values: which tasks, in which order, wired how.

    It depends only on the flow's tasks and the run's targets, so a flow keeps it
    across runs until a task changes (``Flow.plan`` then adds the parameters).
    Lists are by position in :attr:`order`.
    """

    #: the tasks it was built from (identity checked before reuse)
    tasks: tuple[Task, ...]
    #: the names of the tasks to run, in topological order
    order: tuple[str, ...]
    #: each task's inputs that are upstream results
    upstreams: tuple[tuple[str, ...], ...]
    #: each task's dependencies (data and ``after=``), as positions
    deps: tuple[tuple[int, ...], ...]
    #: the position of the task each one maps over, or None
    map_source: tuple[int | None, ...]
    #: the positions of the tasks that wait for each one
    children: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, flow: str, tasks: Mapping[str, Task],
              targets: tuple[str, ...] | None) -> Shape:
        """Validate the graph of ``targets`` (every task when None) and lay it out.

        Raises :class:`~nbflow.errors.CycleError` (with the cycle),
        :class:`~nbflow.errors.UnknownTaskError` for an ``after=`` name and
        :class:`~nbflow.errors.InvalidMapError` for a ``map=`` that is no upstream.
        """
        deps = dependencies(tasks)
        if targets is None:  # everything is needed
            sub = deps
        else:
            needed = graph.ancestors(deps, targets)
            sub = {n: deps[n] for n in tasks if n in needed}
        for name in sub:
            for a in tasks[name].options.after:
                if a not in tasks:
                    raise UnknownTaskError(flow, a, f"Task {name!r}: after=", tasks)
        try:
            order = graph.topological_order(sub)
        except ValueError:  # there is a cycle: only now pay for finding its path
            cycle = graph.find_cycle(sub)
            assert cycle is not None
            raise CycleError(flow, list(reversed(cycle))) from None
        position = {name: i for i, name in enumerate(order)}
        upstreams: list[tuple[str, ...]] = []
        map_source: list[int | None] = []
        children: list[list[int]] = [[] for _ in order]
        for i, name in enumerate(order):
            task = tasks[name]
            ups = tuple(u for u in task.inputs if u in tasks)
            upstreams.append(ups)
            source = task.options.map
            if source is not None and source not in ups:
                raise InvalidMapError(name, source, ups)
            map_source.append(None if source is None else position[source])
            for d in sub[name]:
                children[position[d]].append(i)
        return cls(
            tasks=tuple(tasks.values()),
            order=tuple(order),
            upstreams=tuple(upstreams),
            deps=tuple(tuple(position[d] for d in sub[name]) for name in order),
            map_source=tuple(map_source),
            children=tuple(tuple(c) for c in children),
        )


def dependencies(tasks: Mapping[str, Task]) -> dict[str, list[str]]:
    """``{task: [every task it waits for]}``: data upstreams (inputs named like a task),
    then ``after=`` names."""
    deps: dict[str, list[str]] = {}
    for name, task in tasks.items():
        ups = [i for i in task.inputs if i in tasks]
        ups += [a for a in task.options.after if a not in ups]
        deps[name] = ups
    return deps
