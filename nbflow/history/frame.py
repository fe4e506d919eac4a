"""The run history as pandas DataFrames (imported only when one is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from .store import RunStore

__all__ = ["RunHistory", "runs_frame", "tasks_frame"]

#: the fixed columns of :class:`RunHistory`; the parameters follow
RUN_COLUMNS = ("run_id", "flow", "status", "started", "ended", "duration", "tasks",
               "succeeded", "cached", "failed", "skipped", "cancelled")
#: the columns of ``RunHistory.tasks()``
TASK_COLUMNS = ("run_id", "flow", "task", "state", "key", "code", "started", "ended",
                "duration", "attempts", "where", "branches", "result_hash", "preview",
                "error", "params", "upstreams", "key_parts")
_STATES = ("succeeded", "cached", "failed", "skipped", "cancelled")


class RunHistory(pd.DataFrame):  # type: ignore[misc]  # pandas ships no type hints
    """Recorded runs, one row per run, oldest first, with the parameters as columns.

    A DataFrame (filter it, sort it, plot it) that also knows its database:
    :meth:`tasks` gives the task records of the runs it holds, so
    ``nf.runs(flow)[lambda r: r.status == "failed"].tasks()`` lists the tasks of
    the failed runs.
    """

    _metadata: ClassVar[list[str]] = ["history_path"]

    @property
    def _constructor(self) -> type[RunHistory]:
        return RunHistory

    def tasks(self) -> pd.DataFrame:
        """One row per task per run (of the runs in this frame), in run then task order."""
        path = getattr(self, "history_path", None)
        if path is None or "run_id" not in self.columns:
            return pd.DataFrame(columns=list(TASK_COLUMNS))
        store = RunStore(path)
        ids = [str(i) for i in self["run_id"]]
        flows = dict(zip(ids, self["flow"] if "flow" in self.columns else [None] * len(ids),
                         strict=True))
        return tasks_frame(store.tasks(ids), flows)


def runs_frame(store: RunStore, rows: list[dict[str, Any]]) -> RunHistory:
    """A :class:`RunHistory` of ``rows`` (run records, any order)."""
    rows = sorted(rows, key=lambda r: (r["started"] or 0.0))
    counts = store.state_counts([r["run_id"] for r in rows]) if rows else {}
    records = []
    names: list[str] = []
    for row in rows:
        for name in row["params"]:
            if name not in names:
                names.append(name)
    for row in rows:
        record: dict[str, Any] = {
            "run_id": row["run_id"], "flow": row["flow"], "status": row["status"],
            "started": _time(row["started"]), "ended": _time(row["ended"]),
            "duration": _duration(row["started"], row["ended"]),
        }
        by_state = counts.get(row["run_id"], {})
        record["tasks"] = sum(by_state.values())
        for state in _STATES:
            record[state] = by_state.get(state, 0)
        for name in names:
            column = name if name not in RUN_COLUMNS else f"param_{name}"
            record[column] = row["params"].get(name)
        records.append(record)
    columns = list(RUN_COLUMNS) + [n if n not in RUN_COLUMNS else f"param_{n}" for n in names]
    frame = RunHistory(records, columns=columns)
    frame.history_path = Path(store.path)
    return frame


def tasks_frame(rows: list[dict[str, Any]], flows: dict[str, Any]) -> pd.DataFrame:
    """A DataFrame of task records (as :meth:`RunStore.tasks` returns them)."""
    records = []
    for row in rows:
        parts = row.get("key_parts") or {}
        records.append({
            "run_id": row["run_id"], "flow": flows.get(row["run_id"]), "task": row["task"],
            "state": row["state"], "key": row["key"], "code": parts.get("code"),
            "started": _time(row["started"]), "ended": _time(row["ended"]),
            "duration": _duration(row["started"], row["ended"]), "attempts": row["attempts"],
            "where": row["where_"], "branches": row["branches"],
            "result_hash": row["result_hash"], "preview": row["preview"],
            "error": row["error"], "params": row["params"], "upstreams": row["upstreams"],
            "key_parts": parts,
        })
    return pd.DataFrame(records, columns=list(TASK_COLUMNS))


def _time(value: float | None) -> Any:
    return pd.NaT if value is None else pd.Timestamp(value, unit="s", tz="UTC")


def _duration(started: float | None, ended: float | None) -> float | None:
    if started is None or ended is None:
        return None
    return max(0.0, ended - started)
