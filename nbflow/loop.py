"""The one scheduler loop thread, and the only ways across it.

Every run executes on an asyncio loop that nbflow owns, in a daemon thread.
That is why ``flow.run()`` behaves the same in a script, in a thread, and in a
Jupyter cell whose own loop is already running: nbflow never calls
``asyncio.run`` or ``run_until_complete`` on the caller's thread.

Ways across:

- :meth:`LoopThread.submit` schedules a coroutine and returns a
  ``concurrent.futures.Future``;
- :meth:`LoopThread.call` schedules a plain callback;
- :meth:`LoopThread.run_sync` blocks the calling thread until a coroutine is
  done (and refuses to run on the loop thread, where it would deadlock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import LoopThreadError

T = TypeVar("T")

logger = logging.getLogger(__name__)


class LoopThread:
    """An asyncio event loop running forever in a daemon thread, started on first use."""

    def __init__(self, name: str = "nbflow-scheduler") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started now if needed)."""
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                _run_forever(loop)
            finally:
                _cancel_all(loop)
                loop.close()

        thread = threading.Thread(target=main, name=self.name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; works from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop thread soon (directly if already there)."""
        if self.in_loop_thread():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block this thread until it returns.

        Raises :class:`~nbflow.errors.LoopThreadError` on the loop thread itself
        (an ``async def`` task or an observer awaiting there would deadlock).
        """
        if self.in_loop_thread():
            coro.close()
            msg = (
                "a blocking nbflow call was made on the scheduler's own thread, where it would "
                "deadlock; in async code use the async variant (await run.wait_async(), "
                "await flow.run_async())"
            )
            raise LoopThreadError(msg)
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join its thread (a later use starts a new one)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout)


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    """``loop.run_forever()``, resumed when a callback lets ``KeyboardInterrupt`` or
    ``SystemExit`` out (asyncio re-raises those two out of the loop; any other exception
    it logs and goes on). Task bodies cannot raise them here (the executors catch every
    exception of a task), so one that gets here is a bug, not a reason to stop every run
    of the process: log it and keep the loop alive."""
    while True:
        try:
            loop.run_forever()
            return  # stopped on purpose (LoopThread.stop)
        except (KeyboardInterrupt, SystemExit) as exc:
            logger.error("%s escaped a callback on the scheduler thread; the scheduler goes on",
                         type(exc).__name__, exc_info=True)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


_default: LoopThread | None = None
_default_lock = threading.Lock()


def get_loop_thread() -> LoopThread:
    """The process-wide scheduler loop thread (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LoopThread()
        return _default


def reset() -> None:
    """Stop the process-wide loop thread; the next run starts a fresh one (for tests)."""
    global _default
    with _default_lock:
        current, _default = _default, None
    if current is not None:
        current.stop()
