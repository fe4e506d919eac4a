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

from .lineage import lineage, lineage_document, recorded_lineage
from .query import RunDiff, diff, runs, tasks
from .recorder import Recorder
from .store import HistoryError, RunStore, UnknownRunError, database_path, located

__all__ = ["HistoryError", "Recorder", "RunDiff", "RunStore", "UnknownRunError",
           "database_path", "diff", "lineage", "lineage_document", "located",
           "recorded_lineage", "runs", "tasks"]
