"""A machine-readable event log: one JSON object per line, per state change.

An :class:`EventLog` is an observer (it only listens). Batch runs turn it on
with the ``events_log`` setting (``NBFLOW_EVENTS_LOG``), which every flow
reads when a run starts; Python code can also pass one::

    flow.run(observers=[nf.EventLog("events.jsonl")])

Lines (every one has ``event``, ``run_id`` and ``time``, a Unix timestamp)::

    {"event": "run", "run_id": "...", "flow": "notebook", "status": "running", "time": ...}
    {"event": "task", "run_id": "...", "flow": "notebook", "task": "fit", "branch": null,
     "state": "succeeded", "attempt": 1, "time": ..., "where": "thread nbflow-worker-1"}
    {"event": "export", "run_id": "...", "flow": "notebook", "task": "score", "value": 0.93, ...}

A command task's lines (``running`` and its final state) add ``"command"`` (the
command line as declared, then as it ran), ``"host"`` (where it ran, once it ended)
and ``"image"`` (its container image, also on any task declared with ``image=``).
The final ``run`` line has ``"job_dir"`` and ``"job_dir_kept"`` when a task made the
run's job directory.

A failed task's line has ``"error": {"type": ..., "message": ...}``. An
``export`` line follows the final state of each task declared with
``export=True`` (``%%nbflow task NAME --export``): its result as JSON (a
``repr`` string when it is not JSON-serialisable; NaN and infinities as the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, see :mod:`nbflow.jsonvalues`).
Every line is valid JSON.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .events import Event, RunEvent, TaskEvent
from .jsonvalues import dumps
from .states import FINAL, OK

if TYPE_CHECKING:
    from .run import Run

logger = logging.getLogger(__name__)


class EventLog:
    """Observer that appends one JSON object per state change to a file.

    Parameters
    ----------
    path
        The file; created when missing, appended to when it exists (several
        runs, or several notebook cells, share one log; ``run_id`` tells them apart).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.run: Run | None = None
        #: names of the bound run's tasks declared with ``export=True``
        self._exports: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls) -> EventLog | None:
        """An EventLog for the ``events_log`` setting, or None when it is not set."""
        from . import config

        path = config.get("events_log")
        return cls(path) if path else None

    def bind(self, run: Run) -> None:
        """The run whose exported results this log writes (set before it starts)."""
        self.run = run
        self._exports = frozenset(p.name for p in run.plan.tasks if p.task.options.export)

    def __call__(self, events: Sequence[Event]) -> None:
        lines = []
        for event in events:
            lines.append(self._line(event))
            if (isinstance(event, TaskEvent) and event.branch is None and event.state in OK
                    and event.task in self._exports):
                export = self._export(event)
                if export is not None:
                    lines.append(export)
        text = "".join(dumps(line) + "\n" for line in lines)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(text)

    def _line(self, event: Event) -> dict[str, Any]:
        if isinstance(event, RunEvent):
            run_line: dict[str, Any] = {"event": "run", "run_id": event.run_id,
                                        "flow": event.flow, "status": event.status,
                                        "time": event.time}
            if event.job_dir is not None:
                run_line["job_dir"] = event.job_dir
                run_line["job_dir_kept"] = event.job_dir_kept
            return run_line
        line: dict[str, Any] = {
            "event": "task", "run_id": event.run_id, "flow": self._flow(), "task": event.task,
            "branch": event.branch, "state": event.state, "attempt": event.attempt,
            "time": event.time, "where": event.where,
        }
        if event.branches is not None:
            line["branches"] = event.branches
        view = event.view
        if view is not None and (event.state == "running" or event.state in FINAL):
            for key in ("command", "host", "image"):
                value = getattr(view, key)
                if value is not None:
                    line[key] = value
        if event.error is not None:
            err = event.error.error
            line["error"] = {"type": type(err).__name__, "message": str(err)}
        return line

    def _flow(self) -> str | None:
        return self.run.flow if self.run is not None else None

    def _export(self, event: TaskEvent) -> dict[str, Any] | None:
        run = self.run
        if run is None or run.id != event.run_id:
            return None
        try:
            value = run.results[event.task]
        except Exception:
            logger.warning("nbflow events: cannot read the result of exported task %r",
                           event.task, exc_info=True)
            return None
        return {"event": "export", "run_id": event.run_id, "flow": run.flow,
                "task": event.task, "value": value, "time": event.time}

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of an event log, in order (a torn last line is skipped)."""
    out = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the process was killed mid-write
    return out
