"""A job: one trip of its parameters through the served workflow, and the queue's interface.

A job is what a trigger makes (a file in a watched folder, a ``POST /jobs``, an
``nbflow submit``). It moves through ``queued -> running -> succeeded | failed |
cancelled``; ``nbflow jobs retry`` puts a failed or cancelled job back in the queue.

:class:`JobQueue` is the interface the service needs from its store. The embedded
implementation is SQLite (:class:`nbflow.service.store.SqliteJobs`); a shared queue
for several service processes would be a second implementation of the same methods
(a Postgres table claimed with ``FOR UPDATE SKIP LOCKED``), see ``docs/service.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["FINISHED", "JOB_STATES", "Job", "JobQueue"]

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Job:
    """One job's record, as the store holds it."""

    id: str
    state: str
    #: the workflow's parameters for this job (JSON values)
    params: dict[str, Any]
    #: what made the job: "http", "watch", "submit" or "notebook"
    trigger: str
    #: more about the trigger: the file's path, the client's address
    source: str = ""
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    #: how many times a service took the job from the queue (a restart takes it again)
    attempts: int = 0
    #: per task: {"state", "duration", "branches", ...} from the job's event log
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the exported tasks' results (JSON values; others as their repr)
    results: dict[str, Any] = field(default_factory=dict)
    #: one line saying why the job failed or was cancelled
    error: str | None = None
    #: a cancel was asked for while the job ran
    cancel_requested: bool = False

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else None
        return None if end is None else max(0.0, end - self.started)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON (``GET /jobs/ID``, ``nbflow jobs show``)."""
        out = asdict(self)
        out["duration"] = self.duration
        return out


class JobQueue(Protocol):
    """What the service needs from a durable job store."""

    def submit(self, params: dict[str, Any], trigger: str, source: str = "",
               dedup: str | None = None) -> Job | None:
        """Queue a job; None when ``dedup`` names a job already accepted (a file seen twice)."""

    def claim(self) -> Job | None:
        """Take the oldest queued job and mark it running, atomically; None if none."""

    def recover(self) -> list[Job]:
        """After a crash: put every job left running back in the queue (oldest first)."""

    def release(self, job_id: str) -> None:
        """Put a running job back in the queue (the service is stopping)."""

    def update(self, job_id: str, *, tasks: dict[str, dict[str, Any]] | None = None) -> None:
        """Record a running job's per-task states."""

    def finish(self, job_id: str, state: str, *, tasks: dict[str, dict[str, Any]],
               results: dict[str, Any], error: str | None) -> Job:
        """Record a job's end (``succeeded``, ``failed`` or ``cancelled``)."""

    def get(self, job_id: str) -> Job:
        """The job; :class:`~nbflow.errors.UnknownJobError` when there is none."""

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        """The newest jobs first, optionally in one state."""

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running one to stop."""

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again (it resumes from its cache)."""

    def cancel_requested(self) -> list[str]:
        """Ids of running jobs whose cancel was asked for (by any process)."""
