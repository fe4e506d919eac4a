"""``max_parallel`` across the jobs of a service: slots that are lock files in the state dir.

A task's ``max_parallel`` bounds the branches of one run. ``nbflow serve --shared TASK``
makes it bound every run of TASK in every job of the service, say for downloads from
one server that allows four connections. Each of the N slots is a file; a call holds
an exclusive ``flock`` on one while it runs. Locks are per open file, so they hold
between the service's worker threads, its process workers and any other process on
the machine, and the kernel drops them when a holder dies (a killed service leaves
no slot taken). Dask workers on other machines do not share them.

A call that finds every slot taken waits on one of them in its worker thread; while it
waits its task reads ``running``.
"""

from __future__ import annotations

import fcntl
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ServiceError

if TYPE_CHECKING:
    from ..task import Task

__all__ = ["SharedSlots", "check_shared", "share"]


class SharedSlots:
    """A task function that runs only while it holds one of ``n`` slots in ``folder``."""

    def __init__(self, fn: Callable[..., Any], folder: str | Path, task: str, n: int) -> None:
        self.fn = fn
        self.folder = Path(folder)
        self.task = task
        self.n = n
        self.__name__ = getattr(fn, "__name__", task)

    def __call__(self, **kwargs: Any) -> Any:
        with self.slot():
            return self.fn(**kwargs)

    @contextmanager
    def slot(self) -> Iterator[int]:
        """Hold one slot (its number) for the ``with`` block."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as files:
            handles: list[IO[str]] = [
                files.enter_context(open(self.folder / f"{self.task}.{i}.lock", "a"))
                for i in range(self.n)]
            for i, handle in enumerate(handles):
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                yield i
                return
            i = random.randrange(self.n)  # every slot is taken: wait for one
            fcntl.flock(handles[i], fcntl.LOCK_EX)
            yield i  # closing the file releases the lock

    def __repr__(self) -> str:
        return f"SharedSlots({self.task!r}, {self.n})"


def check_shared(names: Iterable[str], tasks: dict[str, Task], kind: str) -> list[str]:
    """The ``--shared`` task names, checked: each exists, has ``max_parallel`` and is a
    plain ``def`` of a workflow that runs in the service's process."""
    from ..errors import suggest

    out = []
    for name in names:
        if kind == "notebook":
            raise ServiceError(f"--shared {name}: a notebook's jobs run in kernels of their "
                               "own, so its max_parallel cannot be shared; serve a spec or "
                               "module (nbflow export) to share it")
        task = tasks.get(name)
        if task is None:
            raise ServiceError(f"--shared {name}: no such task.{suggest(name, tasks)}")
        if task.options.max_parallel is None:
            raise ServiceError(f"--shared {name}: the task has no max_parallel to share; "
                               "declare it with max_parallel=N")
        if task.is_async or task.is_stream or task.command is not None or task.options.image:
            what = ("an async def" if task.is_async else "a stream" if task.is_stream
                    else "a command" if task.command is not None else "in a container")
            raise ServiceError(f"--shared {name}: the task is {what}; only a def task's "
                               "max_parallel can be shared")
        out.append(name)
    return out


def share(task: Task, folder: Path) -> Task:
    """``task`` holding one of its ``max_parallel`` slots in ``folder`` while it runs."""
    assert task.options.max_parallel is not None
    return replace(task, fn=SharedSlots(task.fn, folder, task.name, task.options.max_parallel),
                   given_code_key=task.code_key)  # the same cache key as unshared
