"""Running one job to its end: in this process (spec, module) or through papermill (notebook).

Each job has its own folder in the state dir (:class:`JobFiles`): its event log, its
disk cache, its job directory and, for a notebook, the output notebook. Jobs share
nothing else, so a failure in one cannot touch another. Because every finished task
is in the job's cache, a job that runs again (the service died, or ``nbflow jobs
retry``) recomputes only what had not finished; a job that succeeded drops its cache,
since its results are in its record.

A notebook job runs ``nbflow run NOTEBOOK`` as a child process: the same papermill
path as on the command line, and a SIGTERM stops it cleanly with its kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config
from ..eventlog import read_events
from ..history.store import writer as history_writer
from ..jsonvalues import jsonable
from .jobs import Job

if TYPE_CHECKING:
    from ..cache import ResultStore
    from ..flow import Flow
    from ..run import Run
    from .workflow import Workflow

__all__ = ["JobFiles", "JobRunner", "Outcome", "live_tasks"]

#: lines of a notebook job's stderr kept for its error
_TAIL = 20
#: seconds a leftover ``nbflow run`` gets to stop on SIGTERM before SIGKILL
_LEFTOVER_WAIT = 30.0


class JobFiles:
    """Where one job keeps its files: ``STATE_DIR/jobs/ID/``."""

    def __init__(self, state_dir: str | Path, job_id: str) -> None:
        self.root = Path(state_dir) / "jobs" / job_id
        self.events = self.root / "events.jsonl"
        self.cache = self.root / "cache"
        self.work = self.root / "work"
        self.output = self.root / "output.ipynb"
        self.captured = self.root / "output.txt"
        self.params = self.root / "params.json"
        self.stderr = self.root / "stderr.txt"
        #: a notebook job's ``nbflow run`` process while it runs: "PID START-TIME"
        self.child = self.root / "child.pid"


@dataclass(frozen=True)
class Outcome:
    """How a job ended."""

    state: str
    tasks: dict[str, dict[str, Any]]
    results: dict[str, Any]
    error: str | None


def live_tasks(files: JobFiles) -> dict[str, dict[str, Any]]:
    """A job's tasks as its event log says now: state, attempts, start, duration, branches."""
    from ..batch.execute import summarize_events

    outcomes, _ = summarize_events(read_events(files.events))
    return {o.task: {"state": o.state, "attempts": o.attempts, "started": o.started,
                     "duration": o.duration,
                     "branches": list(o.branches) if o.branches else None} for o in outcomes}


def job_flow(flow: Flow, store: ResultStore, shared: Collection[str] = (),
             slots: Path | None = None) -> Flow:
    """The served flow's tasks with this job's own disk cache: no result is shared with
    another job, and none is held in memory once the job ended. The ``shared`` tasks
    take one of their ``max_parallel`` slots in ``slots`` while they run."""
    from ..flow import Flow
    from .slots import share

    own = Flow(flow.name, cache=store, namespace=flow.namespace)
    for name, task in flow.tasks.items():
        own.add(share(task, slots) if name in shared and slots is not None else task)
    own.description, own.parameter_info = flow.description, flow.parameter_info
    return own


class JobRunner:
    """Runs one job (blocking, on a service worker thread); :meth:`cancel` from any thread."""

    def __init__(self, workflow: Workflow, job: Job, files: JobFiles, *,
                 cluster: str | None = None, shared: Collection[str] = (),
                 slots: Path | None = None) -> None:
        self.workflow = workflow
        self.shared = shared
        self.slots = slots
        self.job = job
        self.files = files
        self.cluster = cluster
        self._lock = threading.Lock()
        self._cancelled = False
        self._run: Run | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def cancel(self) -> None:
        """Stop the job: its run is cancelled, its notebook's process stopped."""
        with self._lock:
            self._cancelled = True
            run, proc = self._run, self._proc
        if run is not None:
            run.cancel()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def run(self) -> Outcome:
        """Run the job to its end and say how it ended (never raises for the job's own
        failures: they are the outcome)."""
        self.files.root.mkdir(parents=True, exist_ok=True)
        try:
            if self.workflow.kind == "notebook":
                outcome = self._notebook()
            else:
                outcome = self._in_process()
        except Exception as exc:  # the job could not start: a setting, a full disk
            outcome = Outcome("failed", live_tasks(self.files), {},
                              f"{type(exc).__name__}: {exc}".splitlines()[0])
        if outcome.state == "succeeded":
            # the run's record (and the lineage file it writes beside this cache) first,
            # so the cache is not made again, half removed, behind our back
            history_writer.flush()
            shutil.rmtree(self.files.cache, ignore_errors=True)
        return outcome

    # -- a spec or module: in this process ------------------------------------------------

    def _in_process(self) -> Outcome:
        assert self.workflow.flow is not None
        from ..cache import DiskStore

        store = DiskStore(self.files.cache)
        flow = job_flow(self.workflow.flow, store, self.shared, self.slots)
        overrides: dict[str, Any] = {
            "events_log": str(self.files.events), "job_dir_base": str(self.files.work)}
        if self.cluster:
            overrides.update(executor="dask", cluster=self.cluster)
        with self._lock:
            if self._cancelled:
                return Outcome("cancelled", {}, {}, "cancelled before it started")
            with config.set(**overrides):
                run = flow.run(params=self.job.params, background=True, raise_on_failure=False)
            self._run = run
        run.wait()
        store.flush()  # written in the background: on disk before the job ends
        results = {name: jsonable(run.results[name]) for name, task in flow.tasks.items()
                   if task.options.export and name in run.results}
        self._write_captured(run)
        error = None
        if run.failures:
            first = run.failures[0]
            last = (first.traceback.strip().splitlines() or [type(first.error).__name__])[-1]
            names = ", ".join(dict.fromkeys(f.task for f in run.failures))
            error = f"task(s) failed: {names}; {first.label}: {last}"
        elif run.status == "cancelled":
            error = "cancelled"
        return Outcome(run.status, live_tasks(self.files), results, error)

    def _write_captured(self, run: Run) -> None:
        parts = []
        for name, view in run.tasks.items():
            for branch, captured in view.output.items():
                text = captured.text("stdout") + captured.text("stderr")
                if text:
                    label = name if branch is None else f"{name}[{branch}]"
                    parts.append(f"--- {label} ---\n{text}")
        if parts:
            self.files.captured.write_text("\n".join(parts))

    # -- a notebook: nbflow run, as a child process ---------------------------------------------

    def _notebook(self) -> Outcome:
        assert self.workflow.path is not None
        self.files.params.write_text(json.dumps(self.job.params))
        argv = [sys.executable, "-m", "nbflow", "run", str(self.workflow.path), "-q",
                "-o", str(self.files.output), "-f", str(self.files.params),
                "--cache-dir", str(self.files.cache), "--log-events", str(self.files.events)]
        if self.cluster:
            argv += ["--cluster", self.cluster]
        _stop_leftover(self.files.child)  # a killed service's child, still running this job
        with self._lock:
            if self._cancelled:
                return Outcome("cancelled", {}, {}, "cancelled before it started")
            with open(self.files.stderr, "wb") as err:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                    cwd=self.workflow.path.parent)
            self.files.child.write_text(f"{self._proc.pid} {_started(self._proc.pid)}")
        code = self._proc.wait()
        self.files.child.unlink(missing_ok=True)
        with self._lock:
            cancelled = self._cancelled
        tasks = live_tasks(self.files)
        results = self._exports()
        if cancelled:
            return Outcome("cancelled", tasks, results, "cancelled")
        if code == 0:
            return Outcome("succeeded", tasks, results, None)
        tail = self.files.stderr.read_text(errors="replace").strip().splitlines()[-_TAIL:]
        error = next((line for line in reversed(tail) if line.strip()), f"exit code {code}")
        return Outcome("failed", tasks, results, error.strip())

    def _exports(self) -> dict[str, Any]:
        from ..batch.execute import summarize_events

        _, exports = summarize_events(read_events(self.files.events))
        return exports


def _started(pid: int) -> str:
    """When process ``pid`` started (field 22 of /proc/PID/stat), "" when unknown: with the
    pid it names one process, not a later one that reuses the number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return "" if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended


def _stop_leftover(child: Path) -> None:
    """Stop the ``nbflow run`` that a killed service left running for this job, so the job
    does not run twice at once (it ends cleanly on SIGTERM, with its kernel)."""
    try:
        pid_text, _, started = child.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    if not started or _started(pid) != started:
        return  # gone, or the number now names another process
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _LEFTOVER_WAIT
    pause = threading.Event()  # never set: its timed wait is the poll's period
    while _started(pid) == started and time.monotonic() < deadline:
        pause.wait(0.05)
    if _started(pid) == started:
        os.kill(pid, signal.SIGKILL)
