"""Frozen, public views of a run's tasks.

The state machine (``transitions.py``) owns the task records and builds a new
:class:`TaskView` whenever one of them changes. Everything else reads views:
``Run.task(name)``, ``Run.summary``, the progress line, the widget, history
and the event log. A view is immutable, so it is safe to read from any thread
while the run goes on.
"""

from __future__ import annotations

import time

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from .states import FINAL, OK, TaskState
from .values import Failed

if TYPE_CHECKING:
    from .capture import Capture

_NO_COUNTS: Mapping[str, int] = MappingProxyType({})
_NO_OUTPUT: Mapping[int | None, Capture] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task of a run as it stands: state, timings, branches, error, output."""

    name: str
    state: TaskState
    #: attempts made (for a mapped task, the most of any branch)
    attempts: int = 0
    #: when the first attempt started and when the task ended (``time.time()``)
    started: float | None = None
    ended: float | None = None
    #: where it ran: "thread nbflow-worker-1", "pid 4242", a dask worker address
    where: str | None = None
    #: True for a task that maps over an upstream's items
    mapped: bool = False
    #: a mapped task's number of branches, once known
    branches: int | None = None
    #: a mapped task's branches that ended
    done: int = 0
    #: a mapped task's ended branches, by state
    counts: Mapping[str, int] = field(default_factory=lambda: _NO_COUNTS)
    #: the first failure (a failed branch of a mapped task)
    error: Failed | None = None
    #: why the task was skipped or cancelled
    skip_reason: str = ""
    #: what the last attempt printed, by branch (None for a task that is not mapped)
    output: Mapping[int | None, Capture] = field(default_factory=lambda: _NO_OUTPUT)
    #: True when the run recomputes it whatever the cache holds (``force=``)
    forced: bool = False
    #: the cache key of its inputs (None: not cached)
    key: str | None = None
    #: stopped (cancelled or timed out), but its body still runs in a thread, which
    #: cannot be killed; it ends when the body returns (see ``nf.cancelled()``)
    still_running: bool = False
    #: a command task's command: the line that ran once its result or failure says so
    #: (a mapped task's: as declared), else as declared; None for a Python task
    command: str | None = None
    #: the host a command task ran on, once it ended (a mapped task's: its hosts)
    host: str | None = None
    #: the container image the task runs in (``image=``), if any
    image: str | None = None
    #: a streaming task (a generator): ``branches`` counts the items it made so far
    stream: bool = False
    #: a streaming task's items that every task mapping it finished with
    consumed: int = 0

    @property
    def ok(self) -> bool:
        """True when the task has a result (succeeded or cached)."""
        return self.state in OK

    @property
    def final(self) -> bool:
        """True when the task ended (it will not change again in this run)."""
        return self.state in FINAL

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the end; None until both are known."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def state_text(self) -> str:
        """The state as a person should read it: ``cancelling (still running in a thread)``
        for a cancelled task whose body has not returned yet."""
        if self.still_running:
            state = "cancelling" if self.state == "cancelled" else self.state
            return f"{state} (still running in a thread)"
        return self.state

    @property
    def rate(self) -> float | None:
        """A streaming task's items per second so far (until it ended); None before."""
        if not self.stream or self.started is None or not self.branches:
            return None
        end = self.ended if self.final and self.ended is not None else time.time()
        return self.branches / max(end - self.started, 1e-6)

    @property
    def label(self) -> str:
        """``3/10`` for a mapped task (branches ended / total), else empty."""
        if not self.mapped:
            return ""
        return f"{self.done}/{self.branches or 0}"


class StoryEntry(NamedTuple):
    """One step of a task's story (``run.story(name)``): what changed, when, and why."""

    #: ``time.time()`` of the change
    time: float
    #: the branch of a mapped task, or None for the task itself
    branch: int | None
    #: the phase or state it moved to ("looking" and "checking" are steps of pending)
    state: str
    #: the stimulus that caused it: "Start", "Finished", "CacheAnswer", ...
    cause: str

    def __str__(self) -> str:
        where = "" if self.branch is None else f"[{self.branch}]"
        return f"{self.time:.6f} {where}{self.state} ({self.cause})"
