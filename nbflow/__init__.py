"""nbflow: Jupyter-native interactive workflows.

Declare tasks with ``@flow.task`` (or ``%%nbflow task`` cells), run them in
parallel with ``flow.run()``, and inspect the :class:`Run`.
"""

from __future__ import annotations

import os as _os
from typing import Any as _Any

from . import config
from .cache import DiskStore, MemoryStore, ResultStore
from .cancellation import cancel_event, cancelled
from .commands import CommandResult
from .errors import (
    BatchInputError,
    CommandFailed,
    CommandOutputError,
    ContainerError,
    CycleError,
    DeclarationError,
    DuplicateTaskError,
    ExecutorError,
    ExportError,
    FlowFailed,
    InvalidMapError,
    InvalidOptionError,
    InvalidParameterError,
    IterationError,
    JobParamsError,
    LayoutError,
    LoopThreadError,
    MissingParameterError,
    NbflowError,
    RegistryError,
    ResultUnavailableError,
    ServiceError,
    SpecError,
    TaskTimeoutError,
    UnboundedStreamError,
    UnknownJobError,
    UnknownParameterError,
    UnknownTaskError,
    ValidationError,
)
from .eventlog import EventLog
from .events import RunEvent, TaskEvent
from .executors import DaskExecutor, Executor, InlineExecutor, ProcessExecutor, ThreadExecutor
from .flow import Flow
from .jobdir import job_dir
from .registry import registry
from .run import Run, Summary
from .states import RunStatus, TaskState
from .task import Task
from .values import Failed, Skipped
from .views import StoryEntry, TaskView

__version__ = "0.1.0"


def notebook_flow() -> Flow:
    """The kernel's default flow, where ``%%nbflow task`` cells declare their tasks.

    Its flow parameters are looked up in the notebook namespace. Does not import IPython.
    """
    from .notebook.state import notebook_flow as _notebook_flow

    return _notebook_flow()


def runs(flow: Flow | str | None = None, *, limit: int | None = None,
         path: str | _os.PathLike[str] | None = None) -> _Any:
    """The run history (``.nbflow/runs.db``, or ``$NBFLOW_HOME/runs.db``) as a pandas
    DataFrame, one row per run with its parameters as columns; ``.tasks()`` gives one row
    per task per run. See ``docs/history.md``."""
    from .history.query import runs as _runs

    return _runs(flow, limit=limit, path=path)


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbflow``: register the ``%nbflow`` magics (imports IPython only now)."""
    from .notebook.magics import load

    load(ipython)


__all__ = (
    "BatchInputError",
    "CommandFailed",
    "CommandOutputError",
    "CommandResult",
    "ContainerError",
    "CycleError",
    "DaskExecutor",
    "DeclarationError",
    "DiskStore",
    "DuplicateTaskError",
    "EventLog",
    "Executor",
    "ExecutorError",
    "ExportError",
    "Failed",
    "Flow",
    "FlowFailed",
    "InlineExecutor",
    "InvalidMapError",
    "InvalidOptionError",
    "InvalidParameterError",
    "IterationError",
    "JobParamsError",
    "LayoutError",
    "LoopThreadError",
    "MemoryStore",
    "MissingParameterError",
    "NbflowError",
    "ProcessExecutor",
    "RegistryError",
    "ResultStore",
    "ResultUnavailableError",
    "Run",
    "RunEvent",
    "RunStatus",
    "ServiceError",
    "Skipped",
    "SpecError",
    "StoryEntry",
    "Summary",
    "Task",
    "TaskEvent",
    "TaskState",
    "TaskTimeoutError",
    "TaskView",
    "ThreadExecutor",
    "UnboundedStreamError",
    "UnknownJobError",
    "UnknownParameterError",
    "UnknownTaskError",
    "ValidationError",
    "cancel_event",
    "cancelled",
    "config",
    "job_dir",
    "notebook_flow",
    "registry",
    "runs",
)

# Show public classes as nbflow.X in reprs and tracebacks (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "nbflow"
del _name, _obj
