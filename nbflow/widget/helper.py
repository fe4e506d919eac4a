"""The widgets' helper thread: their slow work, off the caller's (the kernel's) thread.

Following a run means reading every task's view, building the structure of the flow
and its node infos, and sending a snapshot: tens of milliseconds for 2,000 tasks, and
several times that in wall time while the run's own threads compete for the GIL. A
widget hands that work to one daemon thread per process, in order, so the kernel's
event loop does not wait on it (``benchmarks/widget.py`` measures the stall).

The thread is started once and kept: starting a thread waits until it runs, which is
itself a stall on a loaded interpreter.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: the helper thread's name (tests keep it as they keep the layout thread)
THREAD_NAME = "nbflow-widget"


class Helper:
    """One daemon thread that calls the functions handed to it, in order."""

    def __init__(self, name: str = THREAD_NAME) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread unless it runs (cheap when it does)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def submit(self, function: Callable[[], object]) -> None:
        """Call ``function()`` on the helper thread, after what was handed over before.

        An exception it raises is logged (the widget shows what it had).
        """
        self.start()
        self._queue.put(function)

    def _loop(self) -> None:
        while True:
            function = self._queue.get()
            try:
                function()
            except Exception:
                logger.exception("nbflow widget: the helper thread's work failed")


#: the helper of this process (its thread starts on the first call handed over)
helper = Helper()
