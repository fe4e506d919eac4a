"""Per-task capture of stdout and stderr.

``sys.stdout`` and ``sys.stderr`` are wrapped (once, at the first run) by a
router that sends text to the capture of the task running in the current
thread or asyncio task, and everything else to the original stream. So each
task's output lands in its own record, and a run in the background never
prints into whichever notebook cell happens to be executing.

The notebook layer adds rich displays to the same :class:`Capture` through
:func:`current`.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

_target: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "nbflow_capture", default=None
)
_install_lock = threading.Lock()


class Capture:
    """The output of one task item: stdout and stderr text, rich displays."""

    __slots__ = ("stdout", "stderr", "displays")

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        #: rich outputs (MIME bundles) added by the notebook layer
        self.displays: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.stdout or self.stderr or self.displays)

    def text(self, stream: str = "stdout") -> str:
        """All text written to ``stream`` ("stdout" or "stderr")."""
        return "".join(getattr(self, stream))

    def __getstate__(self) -> dict[str, Any]:
        return {"stdout": self.stdout, "stderr": self.stderr, "displays": self.displays}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return (
            f"Capture(stdout={len(self.text('stdout'))} chars, "
            f"stderr={len(self.text('stderr'))} chars, displays={len(self.displays)})"
        )


class _Router(io.TextIOBase):
    """Sends writes to the current task's capture, or else to the wrapped stream."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        capture = _target.get()
        if capture is None:
            return self._stream.write(text)
        getattr(capture, self._name).append(text)
        return len(text)

    def flush(self) -> None:
        if _target.get() is None:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, ...
        return getattr(self._stream, name)

    @property
    def wrapped(self) -> TextIO:
        return self._stream


def install() -> None:
    """Wrap the current ``sys.stdout``/``sys.stderr`` in routers (idempotent)."""
    with _install_lock:
        if not isinstance(sys.stdout, _Router) and sys.stdout is not None:
            sys.stdout = _Router(sys.stdout, "stdout")
        if not isinstance(sys.stderr, _Router) and sys.stderr is not None:
            sys.stderr = _Router(sys.stderr, "stderr")


def uninstall() -> None:
    """Put the original streams back (for tests)."""
    with _install_lock:
        if isinstance(sys.stdout, _Router):
            sys.stdout = sys.stdout.wrapped
        if isinstance(sys.stderr, _Router):
            sys.stderr = sys.stderr.wrapped


def current() -> Capture | None:
    """The capture of the task running here, if any."""
    return _target.get()


@contextlib.contextmanager
def capturing() -> Iterator[Capture]:
    """Route this thread's / asyncio task's output into a new :class:`Capture`."""
    capture = Capture()
    token = _target.set(capture)
    try:
        yield capture
    finally:
        _target.reset(token)
