"""Chain fusion: which tasks a fusing executor (dask) may run in one task with their upstream.

Chaining (``chaining.py``) already hands a dask run's chain over at once, each
hop still one dask task: one scheduler round trip per hop, milliseconds each.
Fusion goes further: consecutive items handed over together become one dask
task that calls them in turn (``executors/dask_fused.py``), while the state
machine still sees, and reports, every inner task on its own.

A task is *fusible onto* its upstream when (statically, :func:`fusible_onto`):

- the task can be chained at all (synchronous, not mapped, no ``run_if``,
  ``timeout`` or ``run_on`` other than ``"success"``, nothing fed by a stream);
- it has exactly one upstream, that upstream has exactly one downstream (this
  task), and the upstream is a plain synchronous task itself (not mapped, not a
  stream, no ``timeout``);
- both run on the same executor with the same ``resources=`` (the same placement).

Element-wise maps fuse per branch: branch i of a task mapped element-wise over
another (and over nothing else) is fusible onto branch i of its source when the
source has no other downstream, under the same conditions (``chaining.py``
chains such branches ahead of their source's).

Retries are fine: a failed attempt takes back what was chained onto it, as
without fusion. A timeout is not: it cancels one dask task, which would stop
the tasks fused with it, so a task with ``timeout=`` is never fused. Nothing
that observes an intermediate result loses it: a fused task returns every
inner result, ``run.results`` and the cache read them from there; a task whose
result is in the cache is not run, so it ends a fused chain.

At run time (:func:`fused_units`) an item joins the chain of the item it is
fusible onto when both are in the same batch handed to the executor.
Fusion is on unless the ``fuse_chains`` setting is false.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from . import config
from .chaining import ChainPlanner
from .executors.base import ResultOf, WorkItem
from .records import TaskRecord


def enabled(value: bool | None = None) -> bool:
    """The ``fuse_chains`` setting (``NBFLOW_FUSE_CHAINS=0`` turns fusion off)."""
    return bool(config.get("fuse_chains", value))


def fusible_onto(records: list[TaskRecord], planner: ChainPlanner,
                 lane_of: list[int] | None, lanes: set[int]) -> list[int | None]:
    """For each task (by index), the upstream it may be fused onto, or None.

    ``lanes``: the executor lanes that fuse; ``lane_of``: each task's lane (None: one lane).
    """
    lane_of = lane_of or [0] * len(records)
    out: list[int | None] = [None] * len(records)
    for rec in records:
        t = rec.pt.index
        if lane_of[t] not in lanes or len(rec.up_idx) != 1:
            continue
        if planner.chainable(t) and len(rec.dep_idx) == 1:
            d = rec.dep_idx[0]
            if records[d].pt.map_source is not None:
                continue  # a fan-in: its input is every branch
        elif planner.branchable(t):
            d = rec.pt.map_source  # type: ignore[assignment]
        else:
            continue
        up = records[d]
        if (_head(up) and up.pt.children == [t] and lane_of[d] == lane_of[t]
                and _resources(up) == _resources(rec)):
            out[t] = d
    return out


def _head(rec: TaskRecord) -> bool:
    """A task whose items may start a fused chain."""
    pt = rec.pt
    o = pt.task.options
    return (not pt.stream and not pt.task.is_async and o.timeout is None
            and o.batch_size is None)


def _resources(rec: TaskRecord) -> dict[str, float]:
    return dict(rec.pt.task.options.resources or {})


def chained_id(kwargs: dict[str, Any], upstream: int) -> Hashable | None:
    """The item id of ``upstream`` when ``kwargs`` get its result as a :class:`ResultOf`."""
    for value in kwargs.values():
        if type(value) is ResultOf and value.id[0][0] == upstream:  # type: ignore[index]
            return value.id
    return None


def fused_units(items: Sequence[WorkItem]) -> list[list[WorkItem]]:
    """``items`` in order, cut into units: an item whose :attr:`WorkItem.fuse_onto` is the
    last item of a unit so far joins that unit; any other item starts one."""
    units: list[list[WorkItem]] = []
    tails: dict[Hashable, list[WorkItem]] = {}
    for item in items:
        unit = tails.pop(item.fuse_onto, None) if item.fuse_onto is not None else None
        if unit is None:
            unit = [item]
            units.append(unit)
        else:
            unit.append(item)
        tails[item.id] = unit
    return units


def chained_input(item: WorkItem) -> str:
    """The name of the input of ``item`` that the previous item of its unit feeds."""
    for name, value in item.kwargs.items():
        if type(value) is ResultOf and value.id == item.fuse_onto:
            return name
    raise LookupError(f"task {item.label!r} has no input chained onto {item.fuse_onto!r}")
