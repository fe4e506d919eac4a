"""Executors: where task bodies run. ``resolve_executor`` maps a name or object to a fresh one."""

from __future__ import annotations

from typing import Any

from .. import config
from ..errors import ExecutorError, suggest
from .base import Executor, Outcome, ResultOf, ResultsOf, WorkItem
from .dask import DaskExecutor
from .inline import InlineExecutor
from .processes import ProcessExecutor
from .threads import ThreadExecutor

EXECUTORS: dict[str, type[Executor]] = {
    "dask": DaskExecutor,
    "inline": InlineExecutor,
    "threads": ThreadExecutor,
    "processes": ProcessExecutor,
}


def resolve_executor(executor: Any = None) -> Executor:
    """A new, unstarted executor for one run, from a name, an Executor, or the setting."""
    value = config.get("executor", executor)
    if isinstance(value, Executor):
        return value.duplicate()
    if isinstance(value, str):
        cls = EXECUTORS.get(value)
        if cls is None:
            msg = (
                f"executor={value!r} is not an executor." + suggest(value, EXECUTORS)
                + f" Choose one of {', '.join(sorted(EXECUTORS))}, or pass an Executor object."
            )
            raise ExecutorError(msg)
        if cls is DaskExecutor:  # the cluster setting (NBFLOW_CLUSTER, set by nbflow run --cluster)
            return DaskExecutor(address=config.get("cluster") or None)
        return cls()
    msg = f"executor must be a name or an Executor object, got {value!r}"
    raise ExecutorError(msg)


__all__ = [
    "EXECUTORS", "DaskExecutor", "Executor", "InlineExecutor", "Outcome", "ProcessExecutor", "ResultOf", "ResultsOf",
    "ThreadExecutor",
    "WorkItem", "resolve_executor",
]
