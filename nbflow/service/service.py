"""The service: triggers make jobs, a durable queue holds them, workers run them.

``nbflow serve`` and ``flow.serve()`` both build one :class:`Service` and run it on an
asyncio loop of its own (never the kernel's). Triggers (a watched folder, the HTTP
endpoint, ``nbflow submit`` from another process) only queue jobs; the dispatcher
takes queued jobs from the store while fewer than ``concurrency`` run, and runs each
on a worker thread (:class:`~nbflow.service.runner.JobRunner`). The store is polled
too, so jobs and cancels written by other processes are seen within ``poll`` seconds.

A service that stops (Ctrl-C, SIGTERM, :meth:`Service.stop`) stops its running jobs
and puts them back in the queue: the next start runs them again from their caches.
A service that is killed leaves them ``running``; the next start does the same
(:meth:`~nbflow.service.store.SqliteJobs.recover`). One service per state dir: a
lock file says which process owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ServiceError
from .jobs import Job
from .runner import JobFiles, JobRunner, Outcome, live_tasks
from .slots import check_shared
from .store import SqliteJobs
from .workflow import Workflow, load_workflow

if TYPE_CHECKING:
    from .watch import FolderWatch

__all__ = ["Service", "default_state_dir"]

logger = logging.getLogger("nbflow.service")


def default_state_dir(workflow: Workflow) -> Path:
    """``.nbflow/`` beside the notebook or spec (for a module: in the current folder)."""
    if workflow.kind in ("module", "flow"):
        return Path.cwd() / ".nbflow"
    return Path(workflow.ref).resolve().parent / ".nbflow"


def open_store(state_dir: str | Path) -> SqliteJobs:
    """The job store of a state dir (made when missing)."""
    path = Path(state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot use state dir {path}: {exc.strerror or exc}") from None
    return SqliteJobs(path / "jobs.db")


class Service:
    """One workflow served: its store, its triggers and its running jobs (see the module)."""

    def __init__(self, workflow: str | Path | Workflow, *, state_dir: str | Path | None = None,
                 concurrency: int = 1, cluster: str | None = None, poll: float = 0.5,
                 shared: Iterable[str] = (),
                 report: Callable[[str], None] | None = None) -> None:
        if concurrency < 1:
            raise ServiceError(f"--concurrency must be 1 or more, not {concurrency}")
        self.workflow = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(self.workflow)
        flow_tasks = dict(self.workflow.flow.tasks) if self.workflow.flow is not None else {}
        #: tasks whose max_parallel holds across all jobs (``--shared``)
        self.shared = check_shared(shared, flow_tasks, self.workflow.kind)
        self.store = open_store(self.state_dir)
        self.concurrency = concurrency
        self.cluster = cluster
        self.poll = poll
        self.report = report or logger.info
        self.loop: asyncio.AbstractEventLoop | None = None
        self.http: Any = None
        self._watches: list[FolderWatch] = []
        self._http_args: tuple[str, int, str | None, int] | None = None
        self._running: dict[str, JobRunner] = {}
        self._user_cancelled: set[str] = set()
        self._stopping = False
        self._lock_file: IO[str] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- triggers -----------------------------------------------------------------------------

    def watch(self, folder: FolderWatch) -> None:
        """Make a job of each new stable file in a folder (before :meth:`start`)."""
        if folder.param not in self.workflow.cell.parameters:
            known = ", ".join(self.workflow.cell.parameters) or "none"
            raise ServiceError(f"--param {folder.param}: {self.workflow.name} has no parameter "
                               f"{folder.param!r} to take the file's path (its parameters: "
                               f"{known})")
        required = [p.name for p in self.workflow.cell.parameters.values()
                    if not p.has_default and p.name != folder.param]
        if required and self.workflow.kind != "notebook":
            raise ServiceError(f"--watch gives a job only its {folder.param!r}, and "
                               f"{self.workflow.name} also needs {', '.join(required)} (no "
                               "default): give them defaults")
        self._watches.append(folder)

    def listen(self, host: str, port: int, token: str | None = None,
               max_body: int = 1 << 20) -> None:
        """Take jobs from ``POST /jobs`` on ``host:port`` (before :meth:`start`)."""
        self._http_args = (host, port, token, max_body)

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Own the state dir, queue again what a dead service left running, start the
        triggers and the dispatcher. Raises :class:`ServiceError` and cleans up on failure."""
        self.loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._take_lock()
        try:
            for job in self.store.recover():
                self.report(f"job {job.id} was running when the service stopped: queued again")
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="nbflow-job")
            if self._http_args is not None:
                from .http import start_http

                host, port, token, max_body = self._http_args
                self.http = await start_http(self, host, port, token=token, max_body=max_body)
                self.report(f"listening on {self.http.url}")
            for folder in self._watches:
                await self._start_watch(folder)
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._dispatch()))

    async def run_until(self, stop: asyncio.Event) -> None:
        """Start, serve until ``stop`` is set, then stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop the triggers, stop the running jobs and queue them again, release the dir."""
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        if self._wake is not None:
            self._wake.set()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        for runner in list(self._running.values()):
            runner.cancel()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, Exception):  # a trigger that broke earlier (logged there)
                self.report(f"a trigger had stopped: {type(outcome).__name__}: {outcome}")
        self._tasks.clear()
        if self._pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
            self._pool = None
        self._release_lock()

    # -- what triggers and clients call (thread-safe) ------------------------------------------

    def submit(self, params: Mapping[str, Any], trigger: str, source: str = "",
               dedup: str | None = None) -> Job | None:
        """Check the parameters and queue a job; None when ``dedup`` was already accepted."""
        values = self.workflow.check(params)
        job = self.store.submit(values, trigger, source, dedup)
        if job is not None:
            self.report(f"job {job.id} queued ({trigger}{': ' + source if source else ''})")
            self._poke()
        return job

    def job(self, job_id: str) -> Job:
        """The job, with its tasks as they stand when it is running."""
        job = self.store.get(job_id)
        if job.state == "running":
            job = replace(job, tasks=live_tasks(JobFiles(self.state_dir, job.id)))
        return job

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        return self.store.jobs(state, limit)

    def cancel(self, job_id: str) -> Job:
        job = self.store.cancel(job_id)
        runner = self._running.get(job_id)
        if runner is not None:
            self._user_cancelled.add(job_id)
            runner.cancel()
        self.report(f"job {job_id}: cancel asked ({job.state})")
        return job

    def retry(self, job_id: str) -> Job:
        job = self.store.retry(job_id)
        self.report(f"job {job_id} queued again")
        self._poke()
        return job

    # -- the dispatcher ------------------------------------------------------------------------------

    def _poke(self) -> None:
        loop, wake = self.loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def _start_watch(self, folder: FolderWatch) -> None:
        """Start watching; returns once the watcher listens (a failure to start raises)."""
        assert self._stop is not None
        task = asyncio.create_task(folder.run(partial(self._on_file, folder), self._stop))
        ready = asyncio.create_task(folder.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # its error (a folder gone since), or it ended at once
        self._tasks.append(task)
        self.report(f"watching {folder.folder}")

    def _on_file(self, folder: FolderWatch, path: Path, dedup: str) -> None:
        try:
            self.submit({folder.param: str(path)}, "watch", source=str(path), dedup=dedup)
        except ServiceError as exc:
            self.report(f"{path}: no job: {exc}")

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            for job_id in self.store.cancel_requested():  # asked by another process
                if job_id in self._running and job_id not in self._user_cancelled:
                    self._user_cancelled.add(job_id)
                    self._running[job_id].cancel()
            while len(self._running) < self.concurrency and not self._stopping:
                job = self.store.claim()
                if job is None:
                    break
                self._launch(job)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    def _launch(self, job: Job) -> None:
        assert self._pool is not None and self.loop is not None
        runner = JobRunner(self.workflow, job, JobFiles(self.state_dir, job.id),
                           cluster=self.cluster, shared=self.shared,
                           slots=self.state_dir / "slots")
        self._running[job.id] = runner
        self.report(f"job {job.id} started (attempt {job.attempts})")
        future = self._pool.submit(runner.run)
        loop = self.loop
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._ended, job.id, f))

    def _ended(self, job_id: str, future: Future[Outcome]) -> None:
        self._running.pop(job_id, None)
        user = job_id in self._user_cancelled
        self._user_cancelled.discard(job_id)
        outcome = future.result()
        if self._stopping and not user:
            self.store.release(job_id)
            self.report(f"job {job_id} stopped with the service: queued again")
        else:
            self.store.finish(job_id, outcome.state, tasks=outcome.tasks,
                              results=outcome.results, error=outcome.error)
            tail = f": {outcome.error}" if outcome.error else ""
            self.report(f"job {job_id} {outcome.state}{tail}")
        if self._wake is not None:
            self._wake.set()

    # -- the state dir's lock -----------------------------------------------------------------------

    def _take_lock(self) -> None:
        path = self.state_dir / "service.lock"
        handle = open(path, "a+")  # held for the service's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ServiceError(f"{self.state_dir} is in use by another nbflow serve ({owner}); "
                               "stop it, or give this one its own --state-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
