"""The job directory: one directory per run, shared by all of the run's tasks.

A task reaches it with :func:`job_dir` (``nf.job_dir()``); a command task gets it
as ``{job_dir}``, as ``$NBFLOW_JOB_DIR`` and as its working directory. It is made
on first use, under the ``job_dir_base`` setting (``NBFLOW_JOB_DIR_BASE``; default
``<temp dir>/nbflow-jobs``), and never shared by two runs. After the run the
``keep_job_dir`` setting decides what happens to it: ``"always"`` (the default:
command results hold paths into it), ``"failure"`` (kept only when the run did not
succeed) or ``"never"``.

The run owns its :class:`JobDir` (``run.job``) and finishes it when it ends. A task
finds it through the cancel board its executor hands it (see ``cancellation.py``),
so ``job_dir()`` works on the inline and threads executors
and in ``async def`` tasks; process and dask workers do not get it yet.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Hashable
from pathlib import Path

from . import cancellation, config
from .errors import InvalidOptionError

__all__ = ["JobDir", "job_dir"]

KEEP_VALUES = ("always", "failure", "never")


class JobDir:
    """The job directory of one run, made on first :meth:`path` call."""

    def __init__(self, flow: str, run_id: str) -> None:
        self.flow = flow
        self.run_id = run_id
        self._path: Path | None = None
        self._lock = threading.Lock()
        # settings are read where the run starts (config overrides are per thread)
        self._base = str(config.get("job_dir_base")) or str(Path(tempfile.gettempdir()) / "nbflow-jobs")
        keep = str(config.get("keep_job_dir"))
        if keep not in KEEP_VALUES:
            raise InvalidOptionError("config", "keep_job_dir",
                                     f"must be one of {', '.join(map(repr, KEEP_VALUES))}, got {keep!r}")
        self.keep = keep

    @property
    def made(self) -> Path | None:
        """The directory if a task asked for it, else None."""
        return self._path

    def path(self) -> Path:
        """The directory (made now if no task asked for it before)."""
        with self._lock:
            if self._path is None:
                base = Path(self._base).expanduser()
                base.mkdir(parents=True, exist_ok=True)
                prefix = f"{self.flow}-{self.run_id}-"
                self._path = Path(tempfile.mkdtemp(prefix=prefix, dir=base)).resolve()
            return self._path

    def finish(self, status: str) -> None:
        """The run ended with ``status``: remove the directory if the setting says so."""
        path = self._path
        if path is None or self.keep == "always" or (self.keep == "failure" and status != "succeeded"):
            return
        shutil.rmtree(path, ignore_errors=True)


def job_dir() -> Path:
    """The job directory of the run of the calling task (made on first call).

    Raises :class:`RuntimeError` outside a task, or in a task running where its
    run is not known (a process or dask worker).
    """
    here = current_job()
    if here is None:
        raise RuntimeError(
            "nf.job_dir() is only available inside a task of a running flow, on the inline "
            "or threads executor (process and dask workers do not get it yet)")
    return here.path()


def current_job() -> JobDir | None:
    """The :class:`JobDir` of the calling task's run, or None."""
    here: tuple[cancellation.CancelBoard, Hashable] | None = cancellation.current.get()
    job: JobDir | None = None if here is None else here[0].job
    return job
