"""The job directory: one directory per run, shared by all of the run's tasks.

A task reaches it with :func:`job_dir` (``nf.job_dir()``); a command task gets it
as ``{job_dir}``, as ``$NBFLOW_JOB_DIR`` and as its working directory. It is made
on first use, under the ``job_dir_base`` setting (``NBFLOW_JOB_DIR_BASE``; default
``<temp dir>/nbflow-jobs``), and never shared by two runs. After the run the
``keep_job_dir`` setting decides what happens to it: ``"always"`` (the default:
command results hold paths into it), ``"failure"`` (kept only when the run did not
succeed) or ``"never"``.

The run owns its :class:`JobDir` (``run.job``) and finishes it when it ends. A task
finds it through the cancel board its executor hands it (see ``cancellation.py``)
on the inline and threads executors and in ``async def`` tasks. Process and dask
workers get its path with each work item (:class:`WorkerJob`): the path is chosen
when the run starts and made by whoever uses it first, so on dask the base must be
storage that every worker shares (``docs/commands.md``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Hashable
from contextvars import ContextVar
from pathlib import Path

from . import cancellation, config
from .errors import InvalidOptionError

__all__ = ["JobDir", "WorkerJob", "job_dir", "kept"]

KEEP_VALUES = ("always", "failure", "never")


class JobDir:
    """The job directory of one run: its path is chosen now, the directory made on first use.

    The name holds the flow, the run id and a random part, so two runs never share one.
    """

    def __init__(self, flow: str, run_id: str) -> None:
        self.flow = flow
        self.run_id = run_id
        # settings are read where the run starts (config overrides are per thread)
        base = str(config.get("job_dir_base")) or str(Path(tempfile.gettempdir()) / "nbflow-jobs")
        keep = str(config.get("keep_job_dir"))
        if keep not in KEEP_VALUES:
            raise InvalidOptionError("config", "keep_job_dir",
                                     f"must be one of {', '.join(map(repr, KEEP_VALUES))}, got {keep!r}")
        self.keep = keep
        #: the ``container_engine`` setting, for the run's tasks with ``image=``
        self.engine = str(config.get("container_engine"))
        name = f"{flow}-{run_id}-{secrets.token_hex(4)}"
        #: where the directory is (or will be): an absolute path
        self.planned = Path(os.path.abspath(Path(base).expanduser() / name))

    @property
    def made(self) -> Path | None:
        """The directory if a task asked for it, else None."""
        return self.planned if self.planned.is_dir() else None

    def path(self) -> Path:
        """The directory (made now if no task asked for it before)."""
        return _make(self.planned)

    def for_worker(self) -> WorkerJob:
        """What a process or dask worker gets of this job with each work item."""
        return WorkerJob(str(self.planned), self.engine)

    def finish(self, status: str) -> None:
        """The run ended with ``status``: remove the directory if the setting says so."""
        if not kept(self.keep, status):
            shutil.rmtree(self.planned, ignore_errors=True)


def kept(keep: str, status: str) -> bool:
    """Whether a run that ended ``status`` keeps its job directory (``keep_job_dir``)."""
    return keep == "always" or (keep == "failure" and status != "succeeded")


class WorkerJob:
    """The job directory as a process or dask worker knows it: its path (and the run's
    ``container_engine`` setting)."""

    __slots__ = ("engine", "planned")

    def __init__(self, planned: str, engine: str = "auto") -> None:
        self.planned = Path(planned)
        self.engine = engine

    def path(self) -> Path:
        return _make(self.planned)


def _make(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


#: the job directory of the work item a process or dask worker is running
on_worker: ContextVar[WorkerJob | None] = ContextVar("nbflow_worker_job", default=None)


def job_dir() -> Path:
    """The job directory of the run of the calling task (made on first call).

    Raises :class:`RuntimeError` outside a task of a running flow.
    """
    here = current_job()
    if here is None:
        raise RuntimeError("nf.job_dir() is only available inside a task of a running flow")
    return here.path()


def current_job() -> JobDir | WorkerJob | None:
    """The job directory of the calling task's run, or None outside a task."""
    here: tuple[cancellation.CancelBoard, Hashable] | None = cancellation.current.get()
    job: JobDir | None = None if here is None else here[0].job
    return job if job is not None else on_worker.get()
