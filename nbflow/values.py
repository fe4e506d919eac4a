"""Values that stand in for an upstream result that does not exist.

A task with ``run_on="failure"`` or ``run_on="always"`` still runs when an
upstream failed or was skipped; it then receives one of these in place of that
upstream's result.
"""

from __future__ import annotations

import asyncio
import os
import traceback as _tb
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Failed:
    """A failed task (or branch): the exception and its traceback text.

    ``error`` is the original exception when it could be kept (it may be a
    stand-in ``RuntimeError`` when the original does not pickle).
    """

    task: str
    error: BaseException
    traceback: str
    branch: int | None = None
    attempt: int = 1

    @property
    def label(self) -> str:
        """``task`` or ``task[branch]``."""
        return self.task if self.branch is None else f"{self.task}[{self.branch}]"

    @classmethod
    def from_exception(
        cls, task: str, error: BaseException, branch: int | None = None, attempt: int = 1
    ) -> Failed:
        """Capture ``error`` with its formatted traceback (from the task's own code on).

        ``error`` may be any :class:`BaseException` a task raised (``SystemExit`` from
        ``sys.exit()`` or argparse, ``KeyboardInterrupt``): the text then says that
        it failed the task only.
        """
        relayed = getattr(error, RELAYED_TRACEBACK, None)  # raised elsewhere (a container)
        if isinstance(relayed, str):
            text = relayed
        else:
            text = "".join(_tb.format_exception(type(error), error, _user_frames(error)))
        if not isinstance(error, Exception):  # SystemExit, KeyboardInterrupt, ...
            label = task if branch is None else f"{task}[{branch}]"
            text += (f"({type(error).__name__} raised by task {label!r} fails the task; it does "
                     "not exit, or interrupt, the run or the process.)\n")
        return cls(task=task, error=error.with_traceback(None), traceback=text,
                   branch=branch, attempt=attempt)

    def __repr__(self) -> str:
        return f"Failed({self.label}: {type(self.error).__name__}: {self.error})"

    def __bool__(self) -> bool:
        return False


#: the attribute of an exception that was raised in another process and re-raised here,
#: holding the traceback text from there (see ``container_python.py``)
RELAYED_TRACEBACK = "__nbflow_traceback__"

_INTERNAL_DIRS = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,  # nbflow itself
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
)


def _user_frames(error: BaseException) -> TracebackType | None:
    """The traceback without its leading nbflow/asyncio frames (the executor calling the task),
    so it starts at the task's code; an error raised by nbflow itself keeps its last frame."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(
        _INTERNAL_DIRS
    ):
        tb = tb.tb_next
    return tb


@dataclass(frozen=True)
class Skipped:
    """An upstream task (or branch) that did not run, and why."""

    task: str
    reason: str
    branch: int | None = None

    def __repr__(self) -> str:
        where = self.task if self.branch is None else f"{self.task}[{self.branch}]"
        return f"Skipped({where}: {self.reason})"

    def __bool__(self) -> bool:
        return False
