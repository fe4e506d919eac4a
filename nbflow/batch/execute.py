"""One workflow notebook through papermill, and what its tasks did.

The kernel is the current environment's Python (``sys.executable -m
ipykernel_launcher``), whatever kernel name the notebook asks for. It learns
where to log events, keep results and run tasks from ``NBFLOW_EVENTS_LOG``,
``NBFLOW_CACHE_DIR``, ``NBFLOW_EXECUTOR`` and ``NBFLOW_CLUSTER`` in its
environment (nbflow's settings, read when a flow is created or starts a run), and
the per-task overrides of ``-c``/``-p TASK.ARG`` from ``NBFLOW_TASK_CONFIG``
(read by ``%nbflow run``).
The per-task summary is built from that event log after papermill returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..eventlog import read_events

#: job status -> ``nbflow run`` exit code
EXIT_CODES = {"succeeded": 0, "failed": 1, "error": 1, "kernel died": 3}


@dataclass
class TaskOutcome:
    """One task's final state in a batch run (its last run, when the notebook ran it twice)."""

    task: str
    state: str
    attempts: int
    #: seconds from its first ``running`` to its final state (None when it never ran)
    duration: float | None
    #: (finished, total) branches of a mapped task
    branches: tuple[int, int] | None = None
    #: when it first ran (``time.time()``; None when it never ran)
    started: float | None = None


@dataclass
class JobResult:
    """The outcome of one notebook execution."""

    notebook: str
    output: str
    params: dict[str, Any]
    #: "succeeded", "failed" (a cell raised, or a task failed), "kernel died", "error"
    status: str
    duration: float
    tasks: list[TaskOutcome] = field(default_factory=list)
    #: results of tasks declared with export=True, by task name
    exports: dict[str, Any] = field(default_factory=dict)
    #: one line saying what went wrong (None on success)
    error: str | None = None
    #: False when the run stopped before papermill wrote the output notebook
    written: bool = True
    #: True for a sweep job whose result a previous sweep recorded (it did not run again)
    reused: bool = False
    #: what produced each exported result, read from the run history the kernel wrote:
    #: task -> :func:`nbflow.history.lineage.recorded_lineage` (none when history is off)
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: seconds a kernel gets to exit after a shutdown request (see ``NbflowKernelManager``)
KERNEL_SHUTDOWN_WAIT = 30.0


def kernel_manager_class(env: Mapping[str, str]) -> type:
    """An ``AsyncKernelManager`` that starts this interpreter's ipykernel with ``env`` added."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec
    from traitlets import Float

    spec_env = dict(env)

    class NbflowKernelManager(AsyncKernelManager):
        """Runs the notebook in the current environment's Python, whatever its kernelspec."""

        #: On Ctrl-C the kernel is interrupted (its %nbflow run cancels its run), then
        #: asked to shut down: it exits once the cell ended and the commands and containers
        #: the cancel stopped are gone (``nbflow.childproc.stop_all`` at exit). SIGTERM
        #: comes after half of this, SIGKILL after all of it (jupyter_client's default of 5
        #: seconds could cut a container's removal short).
        shutdown_wait_time = Float(KERNEL_SHUTDOWN_WAIT, config=True)

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python {sys.version_info[0]} (nbflow)", language="python",
                    env=spec_env,
                )
            return self._kernel_spec

    return NbflowKernelManager


def run_notebook(
    notebook: str | Path,
    output: str | Path,
    params: Mapping[str, Any] | None = None,
    *,
    cache_dir: str | Path | None = None,
    events_log: str | Path | None = None,
    cluster: str | None = None,
    progress: bool = False,
    start_timeout: float = 60,
    config: Mapping[str, Any] | None = None,
) -> JobResult:
    """Execute ``notebook`` with papermill into ``output`` and report its tasks.

    The kernel runs in the notebook's directory. ``params`` must already be
    checked (see :func:`nbflow.batch.params.resolve`). Never raises for what
    happens in the kernel: a raising cell, a failed task or a dead kernel is
    the returned status, and ``output`` holds every cell run up to that point.
    Widget views that carry a static image are replaced by it in ``output``
    (:func:`nbflow.batch.static.prefer_static_images`). ``config`` holds per-task
    overrides (``{"clean.retries": 2}``): the kernel gets them as JSON in
    ``NBFLOW_TASK_CONFIG``, and its ``%nbflow run`` runs with them (:mod:`nbflow.overrides`).
    """
    from ..overrides import ENV_VAR

    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    params = dict(params or {})
    own_log = events_log is None
    if events_log is None:
        fd, tmp = tempfile.mkstemp(prefix="nbflow-events-", suffix=".jsonl")
        os.close(fd)
        log_path = Path(tmp)
    else:
        log_path = Path(events_log).resolve()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    # always set, so a kernel never inherits overrides meant for another run
    env = {"NBFLOW_EVENTS_LOG": str(log_path), ENV_VAR: json.dumps(dict(config or {}), default=str)}
    if cache_dir is not None:
        env["NBFLOW_CACHE_DIR"] = str(Path(cache_dir).resolve())
    if cluster:
        env["NBFLOW_EXECUTOR"] = "dask"
        env["NBFLOW_CLUSTER"] = cluster

    before = _stamp(output)
    started = time.monotonic()
    status, error = "succeeded", None
    try:
        # language: the kernel is this Python whatever the notebook's kernelspec says, and a
        # notebook without a kernelspec (nbformat.v4.new_notebook()) must still get its
        # parameters injected as Python
        papermill.execute_notebook(
            str(notebook), str(output), parameters=params, kernel_name="python3",
            language="python", progress_bar=progress, cwd=str(notebook.parent),
            start_timeout=start_timeout, kernel_manager_class=kernel_manager_class(env),
        )
    except KeyboardInterrupt:
        _static_images(output)
        raise
    except PapermillExecutionError as exc:
        status = "failed"
        evalue = (str(exc.evalue).strip().splitlines() or [""])[0]
        error = f"cell In[{exc.exec_count}] raised {exc.ename}: {evalue}"
        if not evalue:  # a magic's UsageError: IPython prints it to stderr, with no error
            error = _usage_error(output, exc.exec_count) or error
    except DeadKernelError:
        status = "kernel died"
        error = f"the kernel died while running {_mark_dead_kernel(output)}"
    except Exception as exc:  # the kernel did not start, the output could not be written
        status = "error"
        error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    _static_images(output)
    duration = time.monotonic() - started
    try:
        events = read_events(log_path)
    finally:
        if own_log:
            log_path.unlink(missing_ok=True)
    tasks, exports = summarize_events(events)
    failed = [t.task for t in tasks if t.state == "failed"]
    if status == "succeeded" and failed:
        status = "failed"
        error = "task(s) failed: " + ", ".join(failed)
    return JobResult(notebook=str(notebook), output=str(output), params=params, status=status,
                     duration=duration, tasks=tasks, exports=exports, error=error,
                     written=_stamp(output) not in (None, before),
                     lineage=exported_lineage(events, notebook.parent))


def _stamp(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file, or None when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _static_images(output: Path) -> None:
    """Replace the widget views of the output notebook by the DAG images they carry, so a
    reader with no kernel (nbconvert offline, GitHub, untrusted JupyterLab) shows the DAG
    (see :mod:`nbflow.batch.static`). Best effort: a notebook that cannot be read or
    written is left as papermill saved it."""
    from .static import rewrite_output

    if output.exists():
        with contextlib.suppress(Exception):
            rewrite_output(output)


def _usage_error(output: Path, exec_count: int | None) -> str | None:
    """``cell In[7] raised UsageError: ...`` from the stderr of that cell of ``output``, or
    None: IPython prints a magic's UsageError instead of raising it into the cell."""
    try:
        import nbformat

        nb = nbformat.read(output, as_version=4)  # type: ignore[no-untyped-call]
    except Exception:
        return None
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or cell.get("execution_count") != exec_count:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                for line in str(out.get("text", "")).splitlines():
                    if line.startswith("UsageError: "):
                        return f"cell In[{exec_count}] raised {line}"
    return None


def _mark_dead_kernel(output: Path) -> str:
    """Find the cell that was running when the kernel died, give it an error output saying
    so (the output notebook is saved again), and describe it."""
    try:
        import nbformat

        nb = nbformat.read(output, as_version=4)  # type: ignore[no-untyped-call]
    except Exception:
        return "a cell"
    started = [i for i, c in enumerate(nb.cells)
               if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return "a cell"
    cell = nb.cells[started[-1]]
    cell.setdefault("outputs", []).append(nbformat.v4.new_output(  # type: ignore[no-untyped-call]
        "error", ename="DeadKernelError", evalue="the kernel died while running this cell",
        traceback=["DeadKernelError: the kernel died while running this cell (nbflow run)"]))
    with contextlib.suppress(OSError):
        nbformat.write(nb, output)  # type: ignore[no-untyped-call]
    first = (cell.source.strip().splitlines() or [""])[0]
    return f"cell In[{cell.get('execution_count')}] ({first[:60]!r})"


def summarize_events(
    events: list[dict[str, Any]],
) -> tuple[list[TaskOutcome], dict[str, Any]]:
    """Per-task outcomes (in first-seen order) and exported values from an event log."""
    last: dict[str, dict[str, Any]] = {}
    started: dict[tuple[str, str], float] = {}
    attempts: dict[tuple[str, str], int] = {}
    exports: dict[str, Any] = {}
    for e in events:
        kind = e.get("event")
        if kind == "export":
            exports[e["task"]] = e.get("value")
            continue
        if kind != "task" or e.get("branch") is not None:
            continue
        key = (e["run_id"], e["task"])
        if e["state"] == "running":
            started.setdefault(key, e["time"])
        attempts[key] = max(attempts.get(key, 0), int(e.get("attempt") or 0))
        last[e["task"]] = e
    out = []
    for name, e in last.items():
        key = (e["run_id"], name)
        duration = None
        if key in started and e["state"] not in ("running", "retrying", "pending", "ready"):
            duration = max(0.0, e["time"] - started[key])
        branches = None
        if e.get("branches") is not None:
            total = int(e["branches"])
            done = sum(1 for b in events if b.get("event") == "task" and b.get("run_id") == key[0]
                       and b.get("task") == name and b.get("branch") is not None
                       and b["state"] in ("succeeded", "cached", "failed", "skipped"))
            branches = (min(done, total), total)
        out.append(TaskOutcome(name, e["state"], attempts.get(key, 0), duration, branches,
                               started.get(key)))
    return out, exports


def exported_lineage(events: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """The lineage of each exported task of an event log, from the run database the kernel
    recorded its runs in (``.nbflow/runs.db`` in the notebook's ``folder``, or under
    ``NBFLOW_HOME``). The kernel has exited, so its runs are recorded (its history writer
    is no daemon). A task whose run is not recorded (``NBFLOW_HISTORY=0``) is left out."""
    from ..errors import NbflowError
    from ..history.lineage import recorded_lineage
    from ..history.store import database_path, enabled, located

    runs = {e["task"]: e["run_id"] for e in events
            if e.get("event") == "export" and e.get("run_id")}
    if not runs or not enabled():
        return {}
    with located(folder / ".nbflow"):
        path = database_path()
    out = {}
    for task, run_id in runs.items():
        try:
            out[task] = recorded_lineage(run_id, task, path=path)
        except (NbflowError, KeyError):  # history off in the kernel, another database
            continue
    return out


def format_summary(result: JobResult) -> str:
    """The text ``nbflow run`` prints at the end: one line for the job, a row per task."""
    where = (f"output notebook: {result.output}" if result.written
             else "no output notebook was written")
    head = f"nbflow: {Path(result.notebook).name} {result.status} in {result.duration:.1f}s; {where}"
    lines = [head]
    if result.error:
        lines.append(f"  {result.error}")
    if result.tasks:
        rows = [("task", "state", "attempts", "duration")]
        for t in result.tasks:
            state = t.state if t.branches is None else f"{t.state} ({t.branches[0]}/{t.branches[1]})"
            rows.append((t.task, state, str(t.attempts),
                         "" if t.duration is None else f"{t.duration:.2f}s"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    else:
        lines.append("  (no nbflow task ran)")
    for name, value in result.exports.items():
        lines.append(f"  export {name} = {value!r}")
    return "\n".join(lines)
