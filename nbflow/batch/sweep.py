"""Parameter sweeps: a grid file -> one papermill job per parameter set -> a summary table.

A grid file (YAML or JSON) holds either a cartesian product or an explicit list,
plus values shared by every job::

    grid:                 # every combination: 3 x 2 = 6 jobs
      noise: [0.5, 1.0, 4.0]
      seed: [1, 2]
    params:               # optional: the same for every job
      n: 200

    jobs:                 # instead of grid: exactly these parameter sets
      - {noise: 0.5, seed: 1}
      - {noise: 4.0, seed: 2}

Each job is ``nbflow run`` in a subprocess (so jobs never share a kernel, a
thread or an event loop), either on this machine (``parallel`` at a time) or
inside a dask task on the workers of a cluster (which must see the notebook
and the output directory: a shared file system). A failed job does not stop
the others.

The summary is rewritten as each job finishes, and a sweep into a directory
that holds the records of an earlier one skips the jobs that succeeded there
with the same notebook and parameters (:mod:`nbflow.batch.sweep_summary`), so
a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BatchInputError
from ..yaml_safe import short
from . import params as P
from .execute import JobResult, summarize_events
from .sweep_summary import notebook_digest, previous_result, write_record, write_summary

#: exit code of ``nbflow run`` -> job status
_STATUS = {0: "succeeded", 1: "failed", 2: "error", 3: "kernel died"}


@dataclass(frozen=True)
class Job:
    """One parameter set of a sweep and where its files go."""

    index: int
    params: dict[str, Any]
    notebook: str
    output: str
    events: str
    params_file: str
    #: the job's outcome, recorded when it finishes (see :mod:`.sweep_summary`)
    record: str = ""
    #: SHA-256 of the notebook file when the sweep was planned
    notebook_sha256: str = ""
    cache_dir: str | None = None
    cluster: str | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "nbflow", "run", self.notebook, "-o", self.output,
               "-f", self.params_file, "--log-events", self.events, "--quiet"]
        if self.cache_dir:
            cmd += ["--cache-dir", self.cache_dir]
        if self.cluster:
            cmd += ["--cluster", self.cluster]
        return cmd


def load_grid(path: str | Path) -> list[dict[str, Any]]:
    """The parameter sets of a grid file (unchecked); BatchInputError if it is unreadable."""
    data = P.read_yaml_file(path, "grid file")
    where = f"grid file {str(path)!r}"
    if not isinstance(data, dict) or not ({"grid", "jobs"} & set(data)):
        msg = f"{where} must be a mapping with a 'grid:' (name: [values]) or a 'jobs:' list"
        raise BatchInputError(msg)
    extra = set(data) - {"grid", "jobs", "params"}
    if extra:
        unknown = short(", ".join(sorted(repr(k) for k in extra)))
        msg = f"{where}: unknown key(s) {unknown}; use grid:, jobs: and params:"
        raise BatchInputError(msg)
    if "grid" in data and "jobs" in data:
        msg = f"{where}: give either 'grid:' or 'jobs:', not both"
        raise BatchInputError(msg)
    shared = data.get("params") or {}
    if not isinstance(shared, dict):
        raise BatchInputError(f"{where}: 'params:' must be a mapping of name: value")
    if "grid" in data:
        grid = data["grid"]
        if not isinstance(grid, dict) or not grid:
            raise BatchInputError(f"{where}: 'grid:' must be a non-empty mapping of name: [values]")
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                msg = (f"{where}: grid.{short(str(name))} must be a non-empty list of values "
                       f"(put a fixed value under 'params:')")
                raise BatchInputError(msg)
        names = list(grid)
        sets = [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]
    else:
        jobs = data["jobs"]
        if not isinstance(jobs, list) or not jobs:
            raise BatchInputError(f"{where}: 'jobs:' must be a non-empty list of mappings")
        for i, job in enumerate(jobs):
            if not isinstance(job, dict):
                raise BatchInputError(f"{where}: jobs[{i}] must be a mapping of name: value")
        sets = [dict(job) for job in jobs]
    return [{**shared, **s} for s in sets]


def plan_jobs(
    notebook: str | Path,
    grid_file: str | Path,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    cluster: str | None = None,
) -> list[Job]:
    """Check every parameter set of the grid against the notebook, and name each job's files.

    Raises BatchInputError before anything runs.
    """
    nb_path = Path(notebook)
    nb = P.read_notebook(nb_path)
    sets = load_grid(grid_file)
    cell = P.parameters_cell(nb, str(notebook))
    out = Path(out_dir).resolve()
    digest = notebook_digest(nb_path)
    jobs = []
    width = max(3, len(str(len(sets) - 1)))
    for i, values in enumerate(sets):
        checked = P.resolve(cell, str(notebook), values=values, where=f"{grid_file} job {i}")
        stem = f"{nb_path.stem}-{i:0{width}d}"
        jobs.append(Job(
            index=i, params=checked, notebook=str(nb_path.resolve()),
            output=str(out / f"{stem}.ipynb"), events=str(out / f"{stem}.events.jsonl"),
            params_file=str(out / f"{stem}.params.json"),
            record=str(out / f"{stem}.result.json"), notebook_sha256=digest,
            cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None, cluster=cluster,
        ))
    return jobs


def run_job(job: Job) -> JobResult:
    """Run one job (``nbflow run`` in a subprocess) and read its outcome back.

    Module-level and picklable, so it also runs inside a dask task on a worker.
    """
    from ..eventlog import read_events

    Path(job.params_file).write_text(json.dumps(job.params, indent=1, allow_nan=False) + "\n")
    started = time.monotonic()
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.Popen(job.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    with _running_lock:
        _running.add(proc)
    try:
        _, stderr = proc.communicate()
    finally:
        with _running_lock:
            _running.discard(proc)
    duration = time.monotonic() - started
    tasks, exports = summarize_events(read_events(job.events))
    status = _STATUS.get(proc.returncode, "error")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    error = None if status == "succeeded" else (lines[-1] if lines else f"exit code {proc.returncode}")
    if error and error.startswith("nbflow run: "):
        error = error[len("nbflow run: "):]
    return JobResult(notebook=job.notebook, output=job.output, params=job.params, status=status,
                     duration=duration, tasks=tasks, exports=exports, error=error)


_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()


def _stop_running() -> None:
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_sweep(
    jobs: list[Job],
    out_dir: str | Path,
    *,
    parallel: int = 2,
    cluster: str | None = None,
    progress: bool = True,
    rerun: bool = False,
) -> dict[int, JobResult]:
    """Run every job; results by job index, in job order.

    ``out_dir/summary.csv`` and ``summary.json`` are rewritten as each job
    finishes. A job that an earlier sweep into ``out_dir`` recorded as
    succeeded, with the same notebook and parameters, is reused instead of run
    again, unless ``rerun``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[int, JobResult] = {}
    if not rerun:
        for job in jobs:
            previous = previous_result(job)
            if previous is not None:
                results[job.index] = previous
    todo = [j for j in jobs if j.index not in results]
    write_summary(results, out)
    bar = tqdm(total=len(jobs), initial=len(results), desc="nbflow sweep", unit="job",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    failed = 0

    def done(job: Job, result: JobResult) -> None:
        nonlocal failed
        results[job.index] = result
        write_record(job, result)
        write_summary(results, out)
        failed += not result.ok
        bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)

    try:
        if todo and cluster:
            _run_on_cluster(todo, cluster, done)
        elif todo:
            _run_locally(todo, parallel, done)
    finally:
        bar.close()
    return {j.index: results[j.index] for j in jobs if j.index in results}


def _run_locally(jobs: list[Job], parallel: int,
                 done: Callable[[Job, JobResult], None]) -> None:
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="nbflow-sweep")
    try:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            done(futures[future], future.result())
    except BaseException:  # Ctrl-C: stop the jobs that run, start no more
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_running()
        raise
    pool.shutdown(wait=True)


def _run_on_cluster(jobs: list[Job], address: str,
                    done: Callable[[Job, JobResult], None]) -> None:
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError as exc:
        msg = "--cluster needs dask.distributed: pip install 'nbflow[dask]'"
        raise BatchInputError(msg) from exc
    try:
        client = Client(address, timeout=30)  # type: ignore[no-untyped-call]
    except OSError as exc:
        msg = f"cannot connect to the dask scheduler at {address!r}: {exc}"
        raise BatchInputError(msg) from exc
    try:
        futures = {client.submit(run_job, job, pure=False, key=f"nbflow-sweep-{job.index}-"
                                 f"{os.getpid()}-{time.time_ns()}"): job for job in jobs}
        for future in dask_completed(futures):  # type: ignore[no-untyped-call]
            job = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the worker died, or the job could not start there
                result = JobResult(notebook=job.notebook, output=job.output, params=job.params,
                                   status="error", duration=0.0,
                                   error=f"on the cluster: {type(exc).__name__}: {exc}")
            done(job, result)
    finally:
        client.close()  # type: ignore[no-untyped-call]
