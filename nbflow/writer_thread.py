"""A background thread that runs queued jobs in order: writes nobody should wait for.

The disk cache (pickling and writing results) and the run history (hashing results,
writing SQLite) hand their writes to a :class:`WriterThread`, so a task's or a run's
end never waits for the disk. The thread is started by the first job and ends once
nothing has come for a moment; it is not a daemon, so the interpreter waits for
pending writes before it exits. :meth:`WriterThread.flush` waits for every job
handed over so far, which is what a reader does before it looks.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["WriterThread"]

logger = logging.getLogger(__name__)


class WriterThread:
    """Runs jobs (callables) one at a time, in the order given, on a thread of its own.

    Parameters
    ----------
    name
        The thread's name (tests and thread dumps tell the writers apart by it).
    max_pending
        When this many jobs wait, :meth:`put` waits for them first, so a producer
        faster than the disk does not hold everything in memory (None: no limit).
    idle_seconds
        How long the thread waits for another job before it ends.
    """

    def __init__(self, name: str, max_pending: int | None = None,
                 idle_seconds: float = 0.2) -> None:
        self.name = name
        self.max_pending = max_pending
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: set while no job waits or runs
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0

    def put(self, job: Callable[[], object]) -> None:
        """Queue ``job``; it runs after every job queued before it. A job that raises is
        logged and the writer goes on (jobs should log their own problems)."""
        if self.max_pending is not None and self._pending >= self.max_pending:
            self.flush()
        with self._lock:
            self._pending += 1
            self._idle.clear()
            self._queue.put(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name,
                                                daemon=False)
                self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job handed over so far has run; False on timeout. Called from
        a job (on the writer itself), it returns at once: the writer cannot wait for
        itself."""
        if threading.current_thread() is self._thread:
            return True
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                job()
            except Exception:
                logger.exception("nbflow: a background write (%s) failed", self.name)
            finally:
                with self._lock:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.set()

    def __repr__(self) -> str:
        return f"WriterThread({self.name!r}, pending={self._pending})"
