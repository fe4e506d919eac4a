"""A service in the background of a Python process: what ``flow.serve()`` starts.

The service gets an asyncio loop on a thread of its own, so a notebook's kernel
stays free: cells run, the widget updates, and jobs run on the service's worker
threads meanwhile. The handle it returns lists and controls the jobs, and
``%nbflow status`` shows them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .jobs import Job
from .service import Service
from .workflow import of_flow

if TYPE_CHECKING:
    from ..flow import Flow

__all__ = ["BackgroundService", "serve_flow"]

T = TypeVar("T")


class BackgroundService:
    """A running service and its loop thread; :meth:`stop` ends both."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="nbflow-service", daemon=True)
        self._thread.start()
        try:
            self._call(service.start())
        except BaseException:
            self._close()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def url(self) -> str | None:
        """The HTTP endpoint's address (None without ``http=``)."""
        http = self.service.http
        return None if http is None else str(http.url)

    @property
    def state_dir(self) -> Path:
        return self.service.state_dir

    def submit(self, **params: Any) -> Job:
        """Queue a job with these parameters (checked first)."""
        job = self.service.submit(params, "notebook")
        assert job is not None
        return job

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        """The newest jobs first."""
        return self.service.jobs(state, limit)

    def job(self, job_id: str) -> Job:
        return self.service.job(job_id)

    def cancel(self, job_id: str) -> Job:
        return self.service.cancel(job_id)

    def retry(self, job_id: str) -> Job:
        return self.service.retry(job_id)

    def stop(self) -> None:
        """Stop the triggers and the running jobs (queued again for the next start)."""
        if not self.running:
            return
        try:
            self._call(self.service.stop())
        finally:
            self._close()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self.service.store.close()

    def status_lines(self) -> list[str]:
        """A header with the job counts, then the newest jobs as a table."""
        from .commands import jobs_table

        if not self.running:
            return [f"Service stopped (state dir {self.state_dir}; see nbflow jobs)"]
        counts = self.service.store.counts()
        state = "serving"
        where = f" at {self.url}" if self.url else ""
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        lines = [f"Service {state}{where}: {parts or 'no jobs yet'} (state dir "
                 f"{self.state_dir})"]
        jobs = self.jobs(limit=10)
        if jobs:
            lines += jobs_table(jobs).splitlines()
        return lines

    def __repr__(self) -> str:
        return "\n".join(self.status_lines())


def serve_flow(flow: Flow, *, watch: str | os.PathLike[str] | None = None, pattern: str = "*",
               recursive: bool = False, param: str = "path", existing: bool = False,
               stable: float = 1.0, http: str | None = None, token: str | None = None,
               concurrency: int = 1, state_dir: str | os.PathLike[str] | None = None,
               cluster: str | None = None, shared: Iterable[str] = ()) -> BackgroundService:
    """Serve ``flow`` in the background (see :meth:`nbflow.Flow.serve`)."""
    service = Service(of_flow(flow), state_dir=Path(state_dir or Path.cwd() / ".nbflow"),
                      concurrency=concurrency, cluster=cluster, shared=shared)
    if watch is not None:
        from .watch import FolderWatch

        service.watch(FolderWatch(Path(watch), pattern=pattern, recursive=recursive, param=param,
                                  existing=existing, stable=stable))
    if http is not None:
        from .commands import host_port

        host, port = host_port(http)
        service.listen(host, port, token=token)
    return BackgroundService(service)
