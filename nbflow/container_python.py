"""A Python task with ``image=``: its function runs in the image's own Python.

The scheduler hands executors :class:`InImage` in place of the task's function.
Called, it writes the function and its arguments (cloudpickle, by value) to a
call directory inside the run's job directory, runs ``python3 -m
nbflow.container_entry`` in a container of the image (``containers.py``), and
reads the result back. stdout and stderr stream live like a command's. An error
raised in the container is raised here again, with the traceback from there
drawn with the kernel's source lines (a notebook cell's included).

The image needs ``python3`` (the kernel's minor version) and nbflow; when it has
neither, a :class:`~nbflow.errors.ContainerError` says which is missing.
"""

from __future__ import annotations

import linecache
import shutil
import sys
import traceback
from collections.abc import Callable
from typing import Any

from . import containers, jobdir
from .errors import ContainerError
from .executors import pickling
from .values import RELAYED_TRACEBACK

__all__ = ["InImage"]

#: ``container_entry``'s exit code when the image's Python is not the kernel's version
#: (defined here: nothing imports ``container_entry``, which runs as ``__main__``)
VERSION_MISMATCH = 3


class InImage:
    """Task ``task``'s function ``fn``, to be called in a container of ``image``."""

    def __init__(self, task: str, fn: Callable[..., Any], image: str,
                 timeout: float | None = None) -> None:
        self.task = task
        self.fn = fn
        self.image = image
        self.timeout = timeout
        self.__name__ = getattr(fn, "__name__", task)

    def __call__(self, **kwargs: Any) -> Any:
        job = jobdir.current_job()
        if job is None:
            raise RuntimeError(f"task {self.task!r} runs in its image only as a task of a running flow")
        box = containers.Container(self.task, self.image, job)
        where = job.path()
        call_dir = where / ".nbflow-calls" / box.name
        call_dir.mkdir(parents=True)
        try:
            (call_dir / "python.txt").write_text("{}.{}".format(*sys.version_info[:2]))
            (call_dir / "call.pkl").write_bytes(pickling.dumps((self.task, self.fn, kwargs)))
            ended = box.run(["python3", "-m", "nbflow.container_entry", str(call_dir)],
                            env={"NBFLOW_JOB_DIR": str(where)},
                            mounts=containers.input_paths(kwargs), timeout=self.timeout)
            result = call_dir / "result.pkl"
            if not result.exists():
                raise ContainerError(self.task, self._no_result(ended.returncode, ended.stderr_tail))
            ok, payload = pickling.loads(result.read_bytes())
        finally:
            shutil.rmtree(call_dir, ignore_errors=True)
        if ok:
            return payload
        error, frames = payload
        setattr(error, RELAYED_TRACEBACK, _traceback_text(error, frames, self.image))
        raise error

    def _no_result(self, code: int, stderr_tail: str) -> str:
        """Why the container ended without a result, as a message a user can act on."""
        needs = (f"a Python task with image= needs an image with python3 {sys.version_info[0]}."
                 f"{sys.version_info[1]} and nbflow installed (pip install nbflow)")
        if code == 127 or ("python3" in stderr_tail and "not found" in stderr_tail):
            return f"image {self.image!r} has no python3 on its PATH; {needs}"
        if "No module named" in stderr_tail and "nbflow" in stderr_tail:
            return f"image {self.image!r} has Python but not nbflow; {needs}"
        if code == VERSION_MISMATCH:
            return f"{stderr_tail.strip()}; {needs}"
        return (f"the container ended (exit code {code}) before the task returned.\n"
                f"  last lines of stderr:\n    " + "\n    ".join(stderr_tail.splitlines()))


def _traceback_text(error: BaseException, frames: list[tuple[str, int, str]], image: str) -> str:
    """The container's traceback, with source lines as this process knows them."""
    lines = ["Traceback (most recent call last):\n"]
    for filename, lineno, name in frames:
        lines.append(f'  File "{filename}", line {lineno}, in {name}\n')
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"    {source}\n")
    lines.extend(traceback.format_exception_only(type(error), error))
    lines.append(f"(raised in a container of image {image!r})\n")
    return "".join(lines)
