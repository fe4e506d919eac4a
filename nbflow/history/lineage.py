"""Lineage: everything that produced a task's result.

``lineage(run, "report")`` (``run.lineage("report")``) reads a live run;
``recorded_lineage("RUN_ID", "report")`` reads the run database. Both return::

    {"run_id": ..., "flow": ..., "task": "report", "key": ..., "state": ...,
     "parameters": {"days": 30, ...},          # every parameter the task and its upstreams got
     "tasks": [                                # the task's upstreams, then the task itself
        {"task": "load", "state": "cached", "key": ..., "key_parts": {"code": ...,
         "params": ..., "extra": ..., "upstreams": {...}}, "params": {...},
         "upstreams": [...]},
        ...]}

A run whose flow has a disk cache also writes the lineage of its finished tasks beside
it, in ``<cache dir>/lineage/<run_id>.json`` (:func:`write_beside_cache`).

``key_parts`` holds whatever the cache key is made of (see
:func:`nbflow.history.recorder.key_parts`): code keys now, local module and package
versions once keys include them. The value is JSON-ready.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import DiskStore
from ..errors import UnknownTaskError
from ..jsonvalues import dumps
from ..states import OK
from .recorder import key_parts, param_value
from .store import RunStore

if TYPE_CHECKING:
    from ..run import Run

__all__ = ["lineage", "lineage_document", "recorded_lineage", "write_beside_cache"]

logger = logging.getLogger(__name__)


def lineage(run: Run, name: str) -> dict[str, Any]:
    """Everything that produced task ``name``'s result in ``run`` (see the module docstring).

    Raises :class:`~nbflow.UnknownTaskError` for a task that is not in the run.
    """
    plan = run.plan
    pt = plan.by_name.get(name)
    if pt is None:
        raise UnknownTaskError(run.flow, name, "run.lineage()", plan.by_name)
    wanted: set[int] = set()
    stack = [pt.index]
    while stack:
        index = stack.pop()
        if index not in wanted:
            wanted.add(index)
            stack.extend(plan.tasks[index].deps)
    views = run.tasks
    keys = {n: v.key for n, v in views.items()}
    tasks = []
    for index in sorted(wanted):
        up = plan.tasks[index]
        view = views.get(up.name)
        tasks.append({
            "task": up.name, "state": None if view is None else view.state,
            "key": None if view is None else view.key, "key_parts": key_parts(up, keys),
            "params": {k: param_value(v) for k, v in up.params.items()},
            "upstreams": list(up.upstreams),
        })
    return _assemble(run.id, run.flow, name, tasks)


def lineage_document(run: Run, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The lineage of several tasks of ``run`` (every task by default), as one JSON-ready
    object for files such as ``<cache dir>/lineage/<run_id>.json``::

        {"run_id": ..., "flow": ..., "lineage": {"report": {...}, ...}}
    """
    wanted = list(run.plan.by_name) if names is None else list(names)
    return {"run_id": run.id, "flow": run.flow,
            "lineage": {name: lineage(run, name) for name in wanted}}


def write_beside_cache(run: Run) -> Path | None:
    """Write the lineage of every task of ``run`` that finished (succeeded or cached) beside
    its disk cache, as :func:`lineage_document` JSON: ``<cache dir>/lineage/<run_id>.json``.

    Nothing for a run whose flow keeps its results in memory. Called by the run's
    :class:`~nbflow.history.recorder.Recorder` once the run is recorded, so off the run's
    end; a problem is a logged warning and None.
    """
    store = getattr(run, "store", None)
    if not isinstance(store, DiskStore):
        return None
    names = [name for name, view in run.tasks.items() if view.state in OK]
    if not names:
        return None
    try:
        return store.write_lineage(run.id, dumps(lineage_document(run, names), indent=2) + "\n")
    except Exception as exc:
        logger.warning("nbflow history: the lineage of run %s was not written beside the cache "
                       "%s: %s", run.id, store.path, exc)
        return None


def recorded_lineage(run_ref: str, name: str, *,
                     path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The lineage of task ``name`` in a recorded run (an id, a prefix, ``-1``...)."""
    store = RunStore(path)
    record = store.run(run_ref)
    rows = {t["task"]: t for t in store.tasks([record["run_id"]])}
    if name not in rows:
        raise UnknownTaskError(record["flow"], name, f"run {record['run_id']}", rows)
    wanted: list[str] = []
    stack = [name]
    while stack:
        task = stack.pop()
        if task in rows and task not in wanted:
            wanted.append(task)
            stack.extend(rows[task]["upstreams"])
    tasks = [{k: rows[t][k] for k in ("task", "state", "key", "key_parts", "params",
                                      "upstreams", "result_hash")}
             for t in sorted(wanted, key=lambda t: rows[t]["position"])]
    return _assemble(record["run_id"], record["flow"], name, tasks)


def _assemble(run_id: str, flow: str, name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for task in tasks:
        for k, v in task["params"].items():
            params.setdefault(k, v)
    own = tasks[-1] if tasks and tasks[-1]["task"] == name else {}
    return {"run_id": run_id, "flow": flow, "task": name, "key": own.get("key"),
            "state": own.get("state"), "parameters": params, "tasks": tasks}
