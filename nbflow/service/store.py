"""The embedded durable job queue: one SQLite database in the service's state dir.

Every change is one transaction, so a service killed at any point (``kill -9``)
leaves each job either queued, running or finished, never half-written. A job
left ``running`` by a dead service is queued again by :meth:`SqliteJobs.recover`
when the service restarts (one service per state dir: :mod:`nbflow.service.statedir`
holds a lock). ``nbflow submit`` and ``nbflow jobs cancel`` write the same database
from other processes; SQLite's locking (WAL mode, a busy timeout) keeps them apart.

The schema has a version (``PRAGMA user_version``): a database written by a newer
nbflow is refused with a clear error instead of being misread.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ServiceError, UnknownJobError
from ..jsonvalues import dumps
from .jobs import FINISHED, JOB_STATES, Job

__all__ = ["SCHEMA_VERSION", "SqliteJobs"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    trigger TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    dedup TEXT UNIQUE,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    tasks TEXT NOT NULL DEFAULT '{}',
    results TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = ("id", "state", "params", "trigger", "source", "created", "started", "finished",
            "attempts", "tasks", "results", "error", "cancel_requested")


class SqliteJobs:
    """The job queue and records of one state dir, in ``jobs.db`` (see the module docstring).

    Safe to share between the threads of one process; other processes open their own.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a finished job survives power loss
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise ServiceError(f"{self.path}: cannot open the job database: {exc}") from None
        if version > SCHEMA_VERSION:
            self._db.close()
            raise ServiceError(
                f"{self.path}: written by a newer nbflow (job schema {version}; this nbflow "
                f"reads up to {SCHEMA_VERSION}). Upgrade nbflow, or use another --state-dir")
        if version < SCHEMA_VERSION:
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)  # (executescript would commit on its own)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading (``BEGIN IMMEDIATE``)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- the queue ----------------------------------------------------------------------------

    def submit(self, params: dict[str, Any], trigger: str, source: str = "",
               dedup: str | None = None) -> Job | None:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        with self._transaction() as db:
            if dedup is not None and db.execute(
                    "SELECT 1 FROM jobs WHERE dedup = ?", (dedup,)).fetchone():
                return None
            db.execute("INSERT INTO jobs (id, state, params, trigger, source, dedup, created) "
                       "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                       (job_id, dumps(params), trigger, source, dedup, time.time()))
        return self.get(job_id)

    def claim(self) -> Job | None:
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq "
                             "LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, finished = NULL, "
                       "attempts = attempts + 1 WHERE id = ?", (time.time(), row[0]))
        return self.get(row[0])

    def recover(self) -> list[Job]:
        with self._transaction() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE state = 'running' ORDER BY seq")]
            db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
            # a cancel asked of a job that was running when the service died: honour it now
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, error = "
                       "'cancelled' WHERE state = 'queued' AND cancel_requested = 1",
                       (time.time(),))
        return [self.get(i) for i in ids]

    def release(self, job_id: str) -> None:
        """Put a running job back in the queue, at its place (the service is stopping)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = 'queued' WHERE id = ? AND state = 'running'",
                       (job_id,))

    def update(self, job_id: str, *, tasks: dict[str, dict[str, Any]] | None = None) -> None:
        if tasks is None:
            return
        with self._transaction() as db:
            db.execute("UPDATE jobs SET tasks = ? WHERE id = ? AND state = 'running'",
                       (dumps(tasks), job_id))

    def finish(self, job_id: str, state: str, *, tasks: dict[str, dict[str, Any]],
               results: dict[str, Any], error: str | None) -> Job:
        if state not in FINISHED:
            raise ValueError(f"{state!r} is not a final job state")
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, finished = ?, tasks = ?, results = ?, "
                       "error = ?, cancel_requested = 0 WHERE id = ?",
                       (state, time.time(), dumps(tasks), dumps(results), error, job_id))
        return self.get(job_id)

    # -- records and control --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise UnknownJobError(job_id)
        return _job(rows[0])

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        if state is not None and state not in JOB_STATES:
            raise ServiceError(f"unknown job state {state!r}; one of {', '.join(JOB_STATES)}")
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM jobs {where} ORDER BY seq DESC "
                          "LIMIT ?", (*args, int(limit)))
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, n in self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    def cancel(self, job_id: str) -> Job:
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJobError(job_id)
            if row[0] in FINISHED:
                raise ServiceError(f"job {job_id} already {row[0]}; nothing to cancel")
            if row[0] == "queued":
                db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, error = "
                           "'cancelled before it started' WHERE id = ?", (time.time(), job_id))
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJobError(job_id)
            if row[0] not in ("failed", "cancelled"):
                raise ServiceError(f"job {job_id} is {row[0]}; only a failed or cancelled job "
                                   "can be retried")
            # to the back of the queue: a new sequence number, same id
            db.execute("UPDATE jobs SET seq = (SELECT MAX(seq) + 1 FROM jobs), state = "
                       "'queued', finished = NULL, error = NULL, cancel_requested = 0 "
                       "WHERE id = ?", (job_id,))
        return self.get(job_id)

    def set_workflow(self, ref: str) -> None:
        """Remember what this state dir serves, for ``nbflow submit`` (a path made absolute)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('workflow', ?)", (ref,))

    def workflow(self) -> str | None:
        """The workflow a service last served from this state dir."""
        rows = self._read("SELECT value FROM meta WHERE key = 'workflow'")
        return rows[0][0] if rows else None

    def cancel_requested(self) -> list[str]:
        return [r[0] for r in self._read(
            "SELECT id FROM jobs WHERE state = 'running' AND cancel_requested = 1")]


def _job(row: tuple[Any, ...]) -> Job:
    data = dict(zip(_COLUMNS, row))
    for name in ("params", "tasks", "results"):
        data[name] = json.loads(data[name])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)
