"""Run history and lineage: every run recorded in a local SQLite database.

- :mod:`~nbflow.history.store`: the database and where it is (``.nbflow/runs.db``,
  ``$NBFLOW_HOME/runs.db``; ``NBFLOW_HISTORY=0`` turns recording off);
- :mod:`~nbflow.history.recorder`: the observer that records a run when it ends;
- :mod:`~nbflow.history.query`: ``runs()`` (a DataFrame with ``.tasks()``) and ``diff()``;
- :mod:`~nbflow.history.lineage`: what produced a task's result;
- :mod:`~nbflow.history.commands`: ``nbflow runs``, ``runs show`` and ``runs diff``.

The core imports only the recorder; pandas is imported when a DataFrame is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it (imported on first use: a run needs only
#: the recorder, and ``import nbflow`` nothing of this package)
_WHERE = {
    "HistoryError": "store", "RunStore": "store", "UnknownRunError": "store",
    "database_path": "store", "located": "store", "Recorder": "recorder",
    "RunDiff": "query", "diff": "query", "runs": "query", "tasks": "query",
    "lineage": "lineage", "lineage_document": "lineage", "recorded_lineage": "lineage",
}

__all__ = ["HistoryError", "Recorder", "RunDiff", "RunStore", "UnknownRunError",
           "database_path", "diff", "lineage", "lineage_document", "located",
           "recorded_lineage", "runs", "tasks"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nbflow.history' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
