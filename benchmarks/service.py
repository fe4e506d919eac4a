"""The service's cost per job, and how long a watched file waits for its job to start.

1. **Throughput**: N jobs of a one-task flow (``tiny(n) -> n + 1``) submitted at once
   to a :class:`~nbflow.service.Service` at concurrency 1 and 8, timed from the first
   ``submit`` to the end of the last job (the latest ``finished`` of the job records).
   Baselines, in the same run and on the same N and concurrency (a loop for 1, a
   ``ThreadPoolExecutor`` of 8 for 8):

   - **flow.run**: the same flow run N times with ``flow.run()`` (its cache in memory,
     cleared before each repeat): what the work costs without a service;
   - **runner**: ``JobRunner(...).run()`` N times, what a service's worker does per
     job without the queue and the dispatcher: the job's own folder, disk cache, event
     log and job dir, its tasks read back from the event log.

   So service / flow.run is the whole overhead per job, and service / runner the part
   of it that is the queue (SQLite) and the dispatcher.

2. **Latency**: files dropped one at a time into a folder the service watches
   (``FolderWatch`` with ``stable`` 0.05 s); per file, the job's ``started`` (its
   record) minus the moment the file became stable (the end of its last write plus
   ``stable``), split at the record's ``created`` (when the job was queued). Median,
   p95 and max. Baseline in the same run, on the same service: a direct ``submit``
   to the job's ``started``, split the same way; the dispatcher's ``poll`` is printed
   for reference (a submit in the process wakes the dispatcher: it need not wait
   for a poll).

Targets (the issue sets none; these say what the design promises): the service's
overhead per job at concurrency 1 under 10 ms; the service within 1.25x of the
runner at both concurrencies (the queue and the dispatcher are cheap); submit ->
started under a tenth of the poll (a submit wakes the dispatcher); a watched file's
stable -> started under 50 ms.

Every service has a temporary state dir, is stopped at the end of its measurement
and its loop thread joined; the last line says whether threads were left behind.

Run ``python benchmarks/service.py`` (about a minute) or with ``--quick`` (small sizes,
under 20 s; the targets are then only indicative).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

# Run as a script, this file's folder comes first on sys.path, where the sibling
# benchmarks/dask.py would shadow the real dask package: take the folder off.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import nbflow as nf  # noqa: E402
from nbflow.history.store import writer as history_writer  # noqa: E402
from nbflow.service import Service  # noqa: E402
from nbflow.service.jobs import FINISHED, Job  # noqa: E402
from nbflow.service.runner import JobFiles, JobRunner  # noqa: E402
from nbflow.service.watch import FolderWatch  # noqa: E402
from nbflow.service.workflow import Workflow, of_flow  # noqa: E402

CONCURRENCIES = (1, 8)
STABLE = 0.05  # seconds a watched file must stay unchanged
POLL = 0.5  # the dispatcher's poll (the service's default)
#: a file is dropped this long after the previous file's job ended (the service is idle)
GAP = 0.05
LINGER = 2.0  # seconds a thread may take to end after the service stopped
TIMEOUT = 120.0  # seconds to wait for any one batch of jobs

# -- the workflows (module-level functions: their parameter names are their inputs) --------


def tiny(n: int) -> int:
    return n + 1


def size(path: str) -> int:
    return os.path.getsize(path)


def one_task_flow(fn: Callable[..., Any]) -> nf.Flow:
    flow = nf.Flow(fn.__name__, cache=nf.MemoryStore())
    flow.add(nf.Task.from_function(fn, name=fn.__name__, options={"export": True}))
    return flow


# -- a service on a loop thread of its own ---------------------------------------------------


class Ended:
    """The service's ``report``: counts the jobs that ended and wakes whoever waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def __call__(self, message: str) -> None:
        words = message.split()  # "job ID succeeded", "job ID failed: why", ...
        if len(words) >= 3 and words[0] == "job" and words[2].rstrip(":") in FINISHED:
            with self._cond:
                self.count += 1
                self._cond.notify_all()

    def wait(self, n: int, timeout: float = TIMEOUT) -> None:
        """Wait until ``n`` jobs have ended in all."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= n, timeout):
                raise TimeoutError(f"{self.count} of {n} jobs ended in {timeout} s")


class Served:
    """A started :class:`Service` on a loop thread, as ``flow.serve()`` runs one; a
    context manager that stops it and joins the thread."""

    def __init__(self, workflow: Workflow, state_dir: Path, concurrency: int = 1,
                 watch: FolderWatch | None = None) -> None:
        self.ended = Ended()
        self.service = Service(workflow, state_dir=state_dir, concurrency=concurrency,
                               poll=POLL, report=self.ended)
        if watch is not None:
            self.service.watch(watch)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-service")

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def __enter__(self) -> Served:
        self.thread.start()
        try:
            self._call(self.service.start())  # (stops what it started if it fails)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self.service.stop())
            self._call(self.loop.shutdown_default_executor())  # (the service's stop used it)
        finally:
            self._close()

    def _close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()
        self.service.store.close()


# -- 1. throughput ----------------------------------------------------------------------------

VARIANTS = ("flow.run", "runner", "service")


def each(concurrency: int, n: int, call: Callable[[int], object]) -> None:
    """``call(i)`` for i in range(n): in a loop, or on ``concurrency`` threads."""
    if concurrency == 1:
        for i in range(n):
            call(i)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(call, range(n)))


class Timing(NamedTuple):
    """Seconds for N jobs: wall clock, and CPU time of the process (all threads)."""

    wall: float
    cpu: float


def timed(call: Callable[[], object]) -> Timing:
    t0, c0 = time.perf_counter(), time.process_time()
    call()
    return Timing(time.perf_counter() - t0, time.process_time() - c0)


def time_flow_run(flow: nf.Flow, n: int, concurrency: int) -> Timing:
    flow.cache.clear()

    def call(i: int) -> None:
        run = flow.run(params={"n": i})
        assert run.results["tiny"] == i + 1

    return timed(lambda: each(concurrency, n, call))


def time_runner(workflow: Workflow, root: Path, n: int, concurrency: int) -> Timing:
    def call(i: int) -> None:
        job = Job(id=f"job-{i}", state="running", params={"n": i}, trigger="bench")
        outcome = JobRunner(workflow, job, JobFiles(root, job.id)).run()
        assert outcome.state == "succeeded" and outcome.results == {"tiny": i + 1}, outcome

    return timed(lambda: each(concurrency, n, call))


def time_service(workflow: Workflow, root: Path, n: int, concurrency: int) -> Timing:
    """From the first submit to the latest ``finished`` among the N job records (CPU:
    until the last job's end was reported)."""
    with Served(workflow, root / "state", concurrency) as served:
        service = served.service
        t0, c0 = time.time(), time.process_time()
        for i in range(n):
            service.submit({"n": i}, "bench")
        served.ended.wait(n)
        cpu = time.process_time() - c0
        jobs = service.jobs(limit=n)
    assert len(jobs) == n and all(j.state == "succeeded" and j.results == {"tiny": j.params["n"] + 1}
               for j in jobs), [j for j in jobs if j.state != "succeeded"][:1]
    return Timing(max(j.finished or 0.0 for j in jobs) - t0, cpu)


def throughput(n: int, concurrency: int, repeats: int, scratch: Path) -> dict[str, Timing]:
    """The best (by wall clock) timing of N jobs per variant; the variants take turns."""
    flow = one_task_flow(tiny)
    workflow = of_flow(one_task_flow(tiny))
    best = dict.fromkeys(VARIANTS, Timing(float("inf"), 0.0))
    for r in range(repeats):
        for name in VARIANTS:
            root = scratch / f"c{concurrency}-{r}-{name}"
            root.mkdir()
            gc.collect()
            if name == "flow.run":
                timing = time_flow_run(flow, n, concurrency)
            elif name == "runner":
                timing = time_runner(workflow, root, n, concurrency)
            else:
                timing = time_service(workflow, root, n, concurrency)
            best[name] = min(best[name], timing)
            history_writer.flush()  # runs are recorded (lineage beside caches) in the background
            shutil.rmtree(root)
    return best


# -- 2. latency --------------------------------------------------------------------------------


#: the latency rows: (key, label)
STAGES = (("file.queued", "file stable -> job queued"),
          ("file.started", "  queued -> started"),
          ("file", "file stable -> started"),
          ("submit.queued", "submit() -> job queued"),
          ("submit.started", "  queued -> started"),
          ("submit", "submit() -> started"))


def latencies(files: int, scratch: Path) -> dict[str, list[float]]:
    """Seconds from a file becoming stable to its job's start (and to its job being
    queued: the record's ``created``), one file at a time; the same from a direct
    ``submit`` on the same (idle) service."""
    folder = scratch / "inbox"
    folder.mkdir()
    watch = FolderWatch(folder, pattern="*.csv", param="path", stable=STABLE)
    out: dict[str, list[float]] = {key: [] for key, _ in STAGES}

    def add(kind: str, job: Job, t0: float) -> None:
        assert job.state == "succeeded" and job.started is not None, job
        out[f"{kind}.queued"].append(job.created - t0)
        out[f"{kind}.started"].append(job.started - job.created)
        out[kind].append(job.started - t0)

    with Served(of_flow(one_task_flow(size)), scratch / "state", watch=watch) as served:
        service, ended = served.service, served.ended
        stable_at: dict[str, float] = {}
        for i in range(files):
            time.sleep(GAP)
            path = folder / f"file-{i:04d}.csv"
            with open(path, "w") as f:
                f.write("x" * (i + 1))
            stable_at[str(path.resolve())] = time.time() + STABLE
            ended.wait(i + 1)
        for job in service.jobs(limit=files):
            add("file", job, stable_at[job.source])
        for i in range(files):
            time.sleep(GAP)
            t0 = time.time()
            submitted = service.submit({"path": str(path)}, "bench")
            assert submitted is not None
            ended.wait(files + i + 1)
            add("submit", service.job(submitted.id), t0)
    return out


def threads_left(before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads started since ``before`` that are not daemons and still alive after
    :data:`LINGER` seconds (a job's disk cache writer ends 0.2 s after its last write;
    the scheduler's own pools are daemon threads, kept for the next run)."""
    deadline = time.monotonic() + LINGER
    while True:
        left = [t for t in threading.enumerate()
                if t not in before and not t.daemon and t.is_alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


# -- report -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 2 repeats (a smoke run; targets indicative)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run")
    parser.add_argument("--files", type=int, default=None, help="files dropped (latency)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)

    n = args.jobs or (40 if args.quick else 300)
    files = args.files or (15 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 3)

    started = time.perf_counter()
    threads_before = set(threading.enumerate())
    scratch = Path(tempfile.mkdtemp(prefix="nbflow-bench-service-"))
    print(f"nbflow {nf.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"state dirs in {scratch.parent}; best of {repeats} repeats, variants taking turns"
          f"{' (quick mode: small sizes)' if args.quick else ''}")
    try:
        one_task_flow(tiny).run(params={"n": -1})  # warm up: imports, the scheduler thread
        threads_before = set(threading.enumerate())
        rows = [(c, throughput(n, c, repeats, scratch)) for c in CONCURRENCIES]
        lat = latencies(files, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nthroughput: {n} jobs of a one-task flow, submitted at once; jobs per second "
          "(ms per job), then CPU ms per job (process time, all threads)")
    print(f"{'concurrency':<14}" + "".join(f"{c:>20}" for c in VARIANTS)
          + f"{'service/flow.run':>19}{'service/runner':>17}")
    for c, best in rows:
        cells = "".join(f"{n / best[v].wall:>11,.0f} ({best[v].wall / n * 1e3:>5.1f})"
                        for v in VARIANTS)
        print(f"{c:<14}{cells}{best['service'].wall / best['flow.run'].wall:>19.2f}"
              f"{best['service'].wall / best['runner'].wall:>17.2f}")
    for c, best in rows:
        print(f"{str(c) + ' (CPU)':<14}"
              + "".join(f"{best[v].cpu / n * 1e3:>20.1f}" for v in VARIANTS))
    for c, best in rows:
        service, run, runner = best["service"], best["flow.run"], best["runner"]
        print(f"concurrency {c}: the service costs {_ms((service.wall - run.wall) / n)} ms more "
              f"per job than flow.run ({_ms((service.cpu - run.cpu) / n)} ms of CPU), of which "
              f"{_ms((service.wall - runner.wall) / n)} ms is the queue and the dispatcher "
              "(service - runner)")

    print(f"\nlatency: {files} files dropped one at a time into a watched folder (stable "
          f"{STABLE} s), ms from stable to the job's start; a direct submit for reference "
          f"(dispatcher poll {POLL * 1e3:.0f} ms)")
    print(f"{'':<28}{'median':>10}{'p95':>10}{'max':>10}")
    for key, label in STAGES:
        values = lat[key]
        print(f"{label:<28}{_ms(statistics.median(values)):>10}{_ms(p95(values)):>10}"
              f"{_ms(max(values)):>10}")

    one = rows[0][1]
    per_job = (one["service"].wall - one["flow.run"].wall) / n
    submit = statistics.median(lat["submit"])
    file = statistics.median(lat["file"])
    targets = [
        ("service overhead per job at concurrency 1 under 10 ms", per_job <= 0.010,
         f"{_ms(per_job)} ms"),
        *((f"concurrency {c}: the queue and the dispatcher cheap (service within 1.25x of "
           "the runner)", best["service"].wall <= 1.25 * best["runner"].wall,
           f"{best['service'].wall / best['runner'].wall:.2f}x") for c, best in rows),
        ("submit -> started: median under a tenth of the poll (the dispatcher is woken)",
         submit <= POLL / 10, f"{_ms(submit)} ms"),
        ("watched file: median stable -> started under 50 ms", file <= 0.050,
         f"{_ms(file)} ms"),
    ]
    print()
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")

    left = threads_left(threads_before)
    print(f"\nthreads left behind (not daemon, {LINGER:.0f} s after the last service stopped): "
          f"{', '.join(sorted(t.name for t in left)) or 'none'}")
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    failed = sum(1 for _, ok, _ in targets if not ok)
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
