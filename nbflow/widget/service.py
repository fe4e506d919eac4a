"""Layouts in a separate process, cached by graph structure.

Graphviz holds the GIL while it lays a graph out (a 2,000-node graph took
seconds), so a layout never runs on the kernel's thread or the scheduler's:
:class:`LayoutService` hands DOT sources to one long-lived worker process
(``python -m nbflow.widget._worker``) from a thread of its own, and answers with
a ``concurrent.futures.Future`` per request. It also renders the static PNG
of a widget (:meth:`LayoutService.render`), for where SVG is not shown. The
worker does the fontconfig
warm-up with its stderr pointed away from the kernel's, so the bundled
fontconfig's warning never reaches a cell's output.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import json
import logging
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Any

from ..errors import LayoutError
from .layout import Structure

logger = logging.getLogger(__name__)

#: (DOT source, or a function that builds it on the service thread; prog; format; future)
#: (DOT text, a function that builds it, or a structure; prog; format; the future)
_Request = tuple["str | Callable[[], str] | Structure", str, str,
                 "concurrent.futures.Future[str]"]


class LayoutService:
    """One layout process and a cache of layouts by structure key.

    Parameters
    ----------
    cache_size
        Layouts kept (least recently used ones are dropped).
    timeout
        Seconds one layout may take; then the worker is stopped and the layout fails.
    """

    def __init__(self, cache_size: int = 32, timeout: float = 120.0) -> None:
        self.cache_size = cache_size
        self.timeout = timeout
        self._cache: collections.OrderedDict[str, concurrent.futures.Future[str]] = (
            collections.OrderedDict())
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._errlog: IO[bytes] | None = None
        self._next_id = 0
        # Started now, not at the first layout: starting a thread waits until it runs,
        # tens of ms on a busy interpreter, and the first layout is asked for by a
        # widget on the kernel's thread (benchmarks/widget.py measures that stall).
        with self._lock:
            self._ensure_thread()

    @property
    def pid(self) -> int | None:
        """The worker process id (None before the first layout)."""
        proc = self._proc
        return None if proc is None else proc.pid

    def layout(self, key: str, source: str | Callable[[], str] | Structure,
               prog: str = "dot") -> concurrent.futures.Future[str]:
        """The SVG of DOT ``source`` (laid out with ``prog``), as a future; cached by ``key``.

        Returns at once. ``source`` may be a function that builds the DOT text: it is
        then called on the service thread (building 2,000 nodes takes tens of ms);
        or a :class:`~nbflow.widget.layout.Structure`, whose DOT text the layout
        process builds (so those ms compete with no thread of this process).
        A failed layout is not cached, so asking again retries it.
        """
        with self._lock:
            future = self._cache.get(key)
            if future is not None and not (future.done() and future.exception() is not None):
                self._cache.move_to_end(key)
                return future
            future = concurrent.futures.Future()
            self._cache[key] = future
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self._ensure_thread()
        self._requests.put((source, prog, "svg", future))
        return future

    def render(self, source: str | Callable[[], str], fmt: str = "png",
               prog: str = "dot") -> concurrent.futures.Future[str]:
        """DOT ``source`` laid out and drawn as ``fmt``, as a future; never cached.

        A ``png`` comes back base64-encoded, as Jupyter stores images in a notebook.
        Requests are served in order with the layouts, by the same process.
        """
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._lock:
            self._ensure_thread()
        self._requests.put((source, prog, fmt, future))
        return future

    def cached(self, key: str) -> str | None:
        """The SVG for ``key`` if it is laid out already, else None (never waits)."""
        with self._lock:
            future = self._cache.get(key)
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def close(self) -> None:
        """Stop the worker process (the next layout starts a new one)."""
        self._requests.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._stop_process()

    # -- the service thread -----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        """Start the service thread if it is not running (the lock is held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="nbflow-layout",
                                            daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            source, prog, fmt, future = request
            if not future.set_running_or_notify_cancel():
                continue
            try:
                what: dict[str, Any]
                if isinstance(source, Structure):
                    what = {"structure": source.to_wire()}
                    size = len(source.names) + len(source.edges)
                else:
                    text = source if isinstance(source, str) else source()
                    what, size = {"source": text}, text.count(";")
                future.set_result(self._call(what, size, prog, fmt))
            except Exception as exc:
                future.set_exception(exc)

    def _call(self, what: dict[str, Any], size: int, prog: str, fmt: str = "svg") -> str:
        """Lay out ``what`` (``{"source": DOT}`` or ``{"structure": ...}``, of ``size``
        statements) in the layout process."""
        proc = self._process()
        assert proc.stdin is not None and proc.stdout is not None
        self._next_id += 1
        request_id = self._next_id
        try:
            proc.stdin.write(json.dumps({"id": request_id, **what, "prog": prog,
                                         "format": fmt}) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                proc.kill()
                self._died()
                raise LayoutError(f"Graphviz took longer than {self.timeout:g}s to lay out a "
                                  f"graph of {size} statements; the worker was "
                                  "stopped (draw part of the flow, or raise the timeout)")
            line = proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            message = self._died()
            raise LayoutError(f"the layout process (pid {proc.pid}) died while laying out a "
                              f"graph: {message}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise LayoutError(f"Graphviz could not lay out the flow: {reply['error']}")
        drawn: str = reply[fmt]
        return drawn

    def _process(self) -> subprocess.Popen[str]:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        self._close_errlog()
        self._errlog = tempfile.TemporaryFile()
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nbflow.widget._worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errlog,
                text=True, encoding="utf-8", env=env, start_new_session=True,
            )
        except OSError as exc:
            raise LayoutError(f"could not start the layout process {sys.executable}: {exc}") \
                from exc
        assert proc.stdout is not None
        self._proc = proc
        ready = proc.stdout.readline()
        if not ready:
            message = self._died()
            raise LayoutError("the layout process exited at start; is pygraphviz installed? "
                              f'(pip install "nbflow[widget]"): {message}')
        logger.debug("layout process started: pid %d", proc.pid)
        return proc

    def _died(self) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(5)
        tail = ""
        if self._errlog is not None:
            self._errlog.seek(0)
            tail = self._errlog.read().decode(errors="replace").strip()[-2000:]
        self._proc = None
        if proc is not None:
            _close_pipes(proc)
        self._close_errlog()
        return f"exit code {code}; {tail or 'no output'}"

    def _close_errlog(self) -> None:
        errlog, self._errlog = self._errlog, None
        if errlog is not None:
            errlog.close()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()  # the worker exits at the end of its input
                except OSError:
                    pass
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            _close_pipes(proc)
        self._close_errlog()


def _close_pipes(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


_default: LayoutService | None = None


def layout_pid() -> int | None:
    """The process id of the shared layout process, when one runs."""
    service = _default
    return None if service is None else service.pid

_default_lock = threading.Lock()


def get_service() -> LayoutService:
    """The process-wide layout service (its worker starts on the first layout)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LayoutService()
            atexit.register(_default.close)
        return _default


def draw(graph: Any, prog: str = "dot", timeout: float | None = 60) -> str:
    """Lay out a ``graphviz.Digraph`` (or DOT text) in the layout process; returns the SVG.

    Works without a ``dot`` binary (pygraphviz's wheel carries Graphviz). Blocks the
    calling thread until the SVG is back; the widget itself never waits like this.
    """
    source = graph if isinstance(graph, str) else str(graph.source)
    import hashlib

    key = "draw-" + prog + "-" + hashlib.sha256(source.encode()).hexdigest()[:20]
    return get_service().layout(key, source, prog).result(timeout)
