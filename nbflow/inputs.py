"""What an item of a run gets from its upstreams: its arguments and its cache key.

Both are read from the state machine's records (``records.py``) of the task
and its upstreams, and both are pure: nothing here changes a record or calls
user code. The machine (``transitions.py``) calls them when an item is
considered, sent, or stored.
"""

from __future__ import annotations

from typing import Any

from .cache import hash_bytes, task_key
from .chaining import sent_ahead
from .executors.base import ResultOf, ResultsOf
from .records import SENT_AHEAD, TaskRecord
from .states import FINAL, OK
from .streams import batch_values
from .values import Skipped


def arguments(records: list[TaskRecord], t: int, b: int | None) -> dict[str, Any]:
    """The keyword arguments of item ``(t, b)``: parameters and upstream results.

    Upstream results are shared: the body gets private copies of them where it is
    called (:func:`upstream_names`, :func:`nbflow.isolation.private_arguments`).

    A failed upstream arrives as its :class:`~nbflow.Failed`, one that did not run
    as a :class:`~nbflow.Skipped` (for ``run_on="failure"``/``"always"`` tasks); an
    upstream still running on a chaining executor as a :class:`ResultOf` reference.
    """
    rec = records[t]
    pt = rec.pt
    kwargs = dict(pt.params) if pt.params else {}
    for name, d in rec.up_idx:
        up = records[d]
        if d == pt.map_source and b is not None:
            size = pt.task.options.batch_size
            if size is not None:
                kwargs[name] = batch_values(up, b, size)  # joined where it runs
            elif pt.elementwise:
                it = up.items[b]  # type: ignore[index]
                kwargs[name] = (ResultOf(((d, b), it.attempt))  # chained onto its branch
                                if it.phase in ("running", SENT_AHEAD) else it.value)
            else:
                kwargs[name] = up.parts[b]  # type: ignore[index]
        elif up.mapped and up.items is not None and up.state not in FINAL:
            kwargs[name] = ResultsOf(  # chained onto its branches
                ResultOf(((d, i), it.attempt)) if it.phase in ("running", SENT_AHEAD)
                else it.value
                for i, it in enumerate(up.items))
        elif up.state in OK or (up.mapped and up.items is not None):
            kwargs[name] = up.result
        elif up.state == "failed" and up.error is not None:
            kwargs[name] = up.error
        elif up.items is not None and up.items[0].phase in ("running", SENT_AHEAD):
            kwargs[name] = ResultOf(((d, None), up.items[0].attempt))  # chained
        else:
            kwargs[name] = Skipped(up.name, up.skip_reason or up.state)
    return kwargs


def upstream_names(kwargs: dict[str, Any], params: Any) -> tuple[str, ...]:
    """The names in ``kwargs`` that hold upstream results (not parameters)."""
    if not params:
        return tuple(kwargs)
    return tuple(name for name in kwargs if name not in params)


def key_of_task(records: list[TaskRecord], rec: TaskRecord) -> str | None:
    """The key of a task's inputs: its code, parameters, computed parts, upstream keys.

    None (not cached) when the task opts out, a part could not be computed, or an
    upstream has no key or did not succeed (it is then neither running nor sent ahead).
    """
    pt = rec.pt
    if pt.stream or not pt.task.options.cache or pt.params_key is None or pt.extra_key is None:
        return None  # (a stream's items come from outside the graph: they have no key)
    ups: list[str] = []
    for dep in (records[d] for d in rec.dep_idx):
        if dep.key is None or not (dep.state in OK or dep.state == "running" or sent_ahead(dep)):
            return None
        ups.append(dep.key)
    if pt.elementwise:
        src = records[pt.map_source]  # type: ignore[index]
        if src.key is None:
            return None
        ups.append(src.key)
    return task_key(pt.task.code_key, pt.params_key, pt.extra_key, ups)


def key_of_item(records: list[TaskRecord], rec: TaskRecord, i: int,
                ahead: bool = False) -> str | None:
    """The key of item ``i``: the task's key, and for a branch which item it maps over.

    ``ahead``: the branch of an element-wise map is chained ahead of its source branch
    (``chaining.py``), which has not succeeded yet: its key as if it will.
    """
    if rec.key is None or not rec.mapped:
        return rec.key
    if rec.pt.elementwise:
        src = records[rec.pt.map_source]  # type: ignore[index]
        if src.items is None or (src.items[i].phase not in OK and not ahead):
            return None
        src_key = key_of_item(records, src, i)
        return None if src_key is None else hash_bytes(rec.key, src_key)
    return f"{rec.key}:{i}"
