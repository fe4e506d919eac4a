"""Scheduler overhead of nbflow, against plain asyncio and dask, with no-op tasks.

Workloads (task bodies do nothing, so every microsecond is scheduling):

- W1: a chain of 1,000 tasks;
- W2: one root returning 10,000 items, a task mapped over them
  (``map="root"``), and one reduce task that gets the list of branch results;
- W3: 50 layers x 40 tasks, each depending on 2 tasks of the previous layer.

Each workload runs on nbflow (inline executor, thread executor) and on three
baselines built from the same graph: (1) a plain asyncio dependency-count
ready queue calling the bodies inline, (2) the same handing each body to a
4-thread ``ThreadPoolExecutor`` with ``loop.run_in_executor``, (3) dask's
threaded scheduler (``dask.threaded.get`` on a prebuilt graph dict, 4 threads).
nbflow's thread executor also gets 4 threads. Times are end to end (nbflow:
``flow.run()`` including validation and the hop to the scheduler thread),
divided by the number of tasks (W2: root + branches + reduce).

It also measures W2 at 100,000 items (time per task, and scheduler memory per
task with tracemalloc) and the cost of declaring a flow.

The run history (``nbflow runs``) is off for these columns (``NBFLOW_HISTORY=0``):
they measure scheduling. What recording costs is measured apart, on W1 with the
history on (into a temporary ``NBFLOW_HOME``): the run's own time, the background
writer having finished the run before, and the writer's time per run.

Run ``python benchmarks/scheduler.py`` (about 1-2 minutes) or with ``--quick``
(small sizes, a few seconds; the targets are then only indicative).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import operator
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where the sibling
# benchmarks/dask.py would shadow the real dask package: take the folder off.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import nbflow as nf  # noqa: E402

THREADS = 4  # worker threads for nbflow threads, baseline (2) and dask

# -- workload descriptions ---------------------------------------------------------------


@dataclass
class Spec:
    """One task of a workload: its name, parameter names (= upstream task names) and body."""

    name: str
    params: tuple[str, ...]
    body: str = "return None"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Workload:
    name: str
    label: str
    specs: list[Spec]
    #: number of task executions (W2: root + branches + reduce)
    n_tasks: int
    #: for a workload with a map: (root, mapped, reduce) names and the item count
    fan_out: tuple[str, str, str, int] | None = None
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)


def chain(n: int) -> Workload:
    specs = [Spec("t0", ())] + [Spec(f"t{i}", (f"t{i - 1}",)) for i in range(1, n)]
    return Workload("W1", f"chain of {n:,}", specs, n)


def fan_out(n: int) -> Workload:
    specs = [
        Spec("root", (), f"return list(range({n}))"),
        Spec("item", ("root",), "return root", {"map": "root"}),
        Spec("total", ("item",), "return len(item)"),
    ]
    return Workload("W2", f"map over {n:,}", specs, n + 2, ("root", "item", "total", n))


def layers(depth: int, width: int) -> Workload:
    specs = [Spec(f"l0_{j}", ()) for j in range(width)]
    for i in range(1, depth):
        for j in range(width):
            ups = (f"l{i - 1}_{j}", f"l{i - 1}_{(j + 1) % width}")
            specs.append(Spec(f"l{i}_{j}", ups))
    return Workload("W3", f"{depth} layers x {width}", specs, depth * width)


_tmpdir: str | None = None


def make_functions(workload: Workload) -> None:
    """Generate one real function per task, whose parameters are its upstream names.

    The source is written to a file and compiled from it, so ``inspect.getsource``
    works on these functions just as on functions in a user's module.
    """
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="nbflow-bench-")
        atexit.register(shutil.rmtree, _tmpdir, True)
    lines = []
    for s in workload.specs:
        lines.append(f"def {s.name}({', '.join(s.params)}):\n    {s.body}\n")
    source = "\n".join(lines)
    path = os.path.join(_tmpdir, f"{workload.name}_{len(workload.specs)}_{time.monotonic_ns()}.py")
    with open(path, "w") as f:
        f.write(source)
    namespace: dict[str, Any] = {}
    exec(compile(source, path, "exec"), namespace)
    workload.functions = {s.name: namespace[s.name] for s in workload.specs}


# -- nbflow ----------------------------------------------------------------------------------


def declare(workload: Workload) -> nf.Flow:
    flow = nf.Flow(workload.name)
    for s in workload.specs:
        options = {"cache": False, **s.options}
        flow.add(nf.Task.from_function(workload.functions[s.name], name=s.name, options=options))
    return flow


def check_result(workload: Workload, value: Any) -> None:
    if workload.fan_out is not None:
        assert value == workload.fan_out[3], value


def run_nbflow(flow: nf.Flow, workload: Workload, executor: str | nf.Executor) -> float:
    """Seconds for one uncached run; ``executor`` is "inline", "threads" or an Executor."""
    ex: Any = executor
    if executor == "threads":
        ex = nf.ThreadExecutor(max_workers=THREADS)
    flow.cache.clear()
    t0 = time.perf_counter()
    run = flow.run(executor=ex)
    elapsed = time.perf_counter() - t0
    assert run.status == "succeeded", run.status
    if workload.fan_out is not None:
        check_result(workload, run.results[workload.fan_out[2]])
    return elapsed


# -- baselines: the graph expanded into numbered nodes --------------------------------------

PLAIN, ITEM, GATHER = 0, 1, 2


@dataclass
class Graph:
    """Nodes in topological order: body, dependency indices and how arguments are built."""

    fns: list[Callable[..., Any]]
    deps: list[tuple[int, ...]]
    #: PLAIN: fn(*deps' results); ITEM: fn(result of deps[0] [index]); GATHER: fn([results])
    kinds: list[int]
    index: list[int]
    children: list[list[int]]


def expand(workload: Workload) -> Graph:
    fns: list[Callable[..., Any]] = []
    deps: list[tuple[int, ...]] = []
    kinds: list[int] = []
    index: list[int] = []
    where: dict[str, int] = {}
    branches: list[int] = []
    for s in workload.specs:
        fn = workload.functions[s.name]
        if "map" in s.options:
            assert workload.fan_out is not None
            src = where[s.options["map"]]
            for i in range(workload.fan_out[3]):
                branches.append(len(fns))
                fns.append(fn), deps.append((src,)), kinds.append(ITEM), index.append(i)
            continue
        where[s.name] = len(fns)
        if workload.fan_out is not None and s.params == (workload.fan_out[1],):
            fns.append(fn), deps.append(tuple(branches)), kinds.append(GATHER), index.append(0)
        else:
            fns.append(fn), deps.append(tuple(where[p] for p in s.params))
            kinds.append(PLAIN), index.append(0)
    children: list[list[int]] = [[] for _ in fns]
    for node, ds in enumerate(deps):
        for d in ds:
            children[d].append(node)
    return Graph(fns, deps, kinds, index, children)


def _call(g: Graph, results: list[Any], node: int) -> Any:
    kind = g.kinds[node]
    if kind == PLAIN:
        return g.fns[node](*[results[d] for d in g.deps[node]])
    if kind == ITEM:
        return g.fns[node](results[g.deps[node][0]][g.index[node]])
    return g.fns[node]([results[d] for d in g.deps[node]])


async def asyncio_inline(g: Graph) -> list[Any]:
    """Baseline (1): a dependency-count ready queue, bodies called on the loop."""
    n = len(g.fns)
    waiting = [len(d) for d in g.deps]
    results: list[Any] = [None] * n
    ready = deque(i for i in range(n) if waiting[i] == 0)
    done = 0
    while ready:
        node = ready.popleft()
        results[node] = _call(g, results, node)
        done += 1
        for c in g.children[node]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
        if done % 256 == 0:
            await asyncio.sleep(0)  # let the loop breathe, as a real driver must
    assert done == n
    return results


async def asyncio_threads(g: Graph, pool: ThreadPoolExecutor) -> list[Any]:
    """Baseline (2): the same ready queue, each body run with ``loop.run_in_executor``."""
    loop = asyncio.get_running_loop()
    n = len(g.fns)
    waiting = [len(d) for d in g.deps]
    results: list[Any] = [None] * n
    finished = loop.create_future()
    remaining = [n]

    def submit(node: int) -> None:
        fut = loop.run_in_executor(pool, _call, g, results, node)
        fut.add_done_callback(lambda f, node=node: on_done(node, f))

    def on_done(node: int, fut: asyncio.Future[Any]) -> None:
        results[node] = fut.result()
        remaining[0] -= 1
        for c in g.children[node]:
            waiting[c] -= 1
            if waiting[c] == 0:
                submit(c)
        if remaining[0] == 0:
            finished.set_result(None)

    for i in range(n):
        if waiting[i] == 0:
            submit(i)
    await finished
    return results


def dask_graph(workload: Workload) -> tuple[dict[Any, Any], Any]:
    """The workload as a dask graph dict; W2's branches are keys ``("item", i)``."""
    dsk: dict[Any, Any] = {}
    for s in workload.specs:
        fn = workload.functions[s.name]
        if "map" in s.options:
            assert workload.fan_out is not None
            src = s.options["map"]
            for i in range(workload.fan_out[3]):
                dsk[(s.name, i)] = (fn, (operator.getitem, src, i))
        elif workload.fan_out is not None and s.params == (workload.fan_out[1],):
            n = workload.fan_out[3]
            dsk[s.name] = (fn, [(workload.fan_out[1], i) for i in range(n)])
        else:
            dsk[s.name] = (fn, *s.params)
    return dsk, workload.specs[-1].name


# -- measuring --------------------------------------------------------------------------------


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(fn())
    return min(times)


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


@dataclass
class Row:
    workload: str
    label: str
    us: dict[str, float]


def measure_workload(workload: Workload, repeats: int, loop: asyncio.AbstractEventLoop,
                     pool: ThreadPoolExecutor) -> Row:
    import dask.threaded

    make_functions(workload)
    flow = declare(workload)
    g = expand(workload)
    dsk, out_key = dask_graph(workload)
    n = workload.n_tasks
    us: dict[str, float] = {}
    us["nbflow inline"] = best_of(repeats, lambda: run_nbflow(flow, workload, "inline"))
    us["nbflow threads"] = best_of(repeats, lambda: run_nbflow(flow, workload, "threads"))
    us["asyncio inline"] = best_of(
        repeats, timed(lambda: loop.run_until_complete(asyncio_inline(g))))
    us["asyncio threads"] = best_of(
        repeats, timed(lambda: loop.run_until_complete(asyncio_threads(g, pool))))
    us["dask threaded"] = best_of(
        repeats, timed(lambda: dask.threaded.get(dsk, out_key, num_workers=THREADS)))
    # For reading the nbflow columns: the validation part of flow.run() on its own.
    us["nbflow plan"] = best_of(repeats, timed(flow.plan))
    return Row(workload.name, workload.label, {k: v / n * 1e6 for k, v in us.items()})


def measure_history(workload: Workload, repeats: int) -> tuple[float, float, float]:
    """µs per task of W1 inline with the run history off and on, and of recording it.

    The history writer records an ended run on a thread of its own; it is given time
    to finish (untimed) before the next repeat, so the run's time is its own. The
    third number is how long the writer took per run, per task."""
    from nbflow.history.store import writer

    make_functions(workload)
    flow = declare(workload)
    home = tempfile.mkdtemp(prefix="nbflow-bench-history-")
    atexit.register(shutil.rmtree, home, True)
    off = on = written = float("inf")
    for _ in range(repeats):
        off = min(off, run_nbflow(flow, workload, "inline"))
        os.environ["NBFLOW_HISTORY"], os.environ["NBFLOW_HOME"] = "1", home
        try:
            on = min(on, run_nbflow(flow, workload, "inline"))
            t0 = time.perf_counter()
            writer.flush()
            written = min(written, time.perf_counter() - t0)
        finally:
            os.environ["NBFLOW_HISTORY"] = "0"
            del os.environ["NBFLOW_HOME"]
    n = workload.n_tasks
    return off / n * 1e6, on / n * 1e6, written / n * 1e6


def measure_scaling(small: int, large: int, repeats: int) -> tuple[float, float, float, float]:
    """W2 at two sizes with nbflow threads: (µs/task small, µs/task large, bytes/task, results B/task)."""
    per_task = []
    flows = []
    for n in (small, large):
        w = fan_out(n)
        make_functions(w)
        flow = declare(w)
        flows.append((w, flow))
        per_task.append(best_of(repeats, lambda flow=flow, w=w: run_nbflow(flow, w, "threads")) / w.n_tasks * 1e6)
    w, flow = flows[1]
    # Memory: the tracemalloc peak during the run, above what was allocated before it
    # (the declared flow). It counts every Python allocation on every thread: the plan,
    # the scheduler's records, queued work items and the run's results themselves.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run_nbflow(flow, w, "threads")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # The bodies' own data (root's list, the branch results list): what any scheduler holds.
    tracemalloc.start()
    data = [list(range(w.fan_out[3])) for _ in range(2)]  # type: ignore[index]
    data_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del data
    return per_task[0], per_task[1], (peak - before) / w.n_tasks, data_bytes / w.n_tasks


def measure_declaration(sizes: Sequence[int], repeats: int) -> dict[int, float]:
    """µs per task of ``Task.from_function`` + ``flow.add`` (functions made beforehand)."""
    out = {}
    for n in sizes:
        w = chain(n)
        make_functions(w)
        out[n] = best_of(repeats, timed(lambda w=w: declare(w))) / n * 1e6
    return out


# -- report -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and fewer repeats (a smoke run; targets indicative)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)

    if args.quick:
        workloads = [chain(100), fan_out(1000), layers(10, 20)]
        scale = (1000, 5000)
        decl_sizes = (200, 1000)
        repeats = args.repeats or 2
    else:
        workloads = [chain(1000), fan_out(10_000), layers(50, 40)]
        scale = (10_000, 100_000)
        decl_sizes = (1000, 10_000)
        repeats = args.repeats or 7

    os.environ["NBFLOW_HISTORY"] = "0"  # scheduling only; measure_history turns it on
    started = time.perf_counter()
    print(f"nbflow {nf.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"{THREADS} threads for threaded runs; best of {repeats} repeats"
          f"{' (quick mode: small sizes)' if args.quick else ''}")
    print("times are µs per task, end to end (nbflow: flow.run() incl. validation)\n")

    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(THREADS)
    try:
        rows = [measure_workload(w, repeats, loop, pool) for w in workloads]
    finally:
        pool.shutdown()
        loop.close()

    cols = ["nbflow inline", "nbflow threads", "asyncio inline", "asyncio threads", "dask threaded"]
    print(f"{'workload':<22}" + "".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(f"{r.workload + ' ' + r.label:<22}" + "".join(f"{r.us[c]:>16.1f}" for c in cols))
    print("(nbflow's columns include validation, flow.plan(), which alone takes "
          + ", ".join(f"{r.workload} {r.us['nbflow plan']:.1f}" for r in rows) + " µs/task)")
    print()
    print(f"{'ratios':<22}{'inline/(1)':>16}{'threads/(2)':>16}{'threads/dask':>16}")
    for r in rows:
        print(f"{r.workload:<22}{r.us['nbflow inline'] / r.us['asyncio inline']:>16.2f}"
              f"{r.us['nbflow threads'] / r.us['asyncio threads']:>16.2f}"
              f"{r.us['nbflow threads'] / r.us['dask threaded']:>16.2f}")

    small, large, mem, data = measure_scaling(*scale, repeats=repeats)
    print(f"\nW2 scaling (nbflow threads): {small:.1f} µs/task at {scale[0]:,} items, "
          f"{large:.1f} µs/task at {scale[1]:,} (x{large / small:.2f})")
    print(f"W2 memory at {scale[1]:,} items: {mem:,.0f} bytes/task (tracemalloc peak during "
          f"flow.run() above the memory before it, all threads; includes the results,\n"
          f"  of which the bodies' own data is about {data:,.0f} bytes/task)")

    history = measure_history(workloads[0], repeats)
    print(f"run history (W1 inline): {history[0]:.1f} µs/task off, {history[1]:.1f} µs/task "
          f"on (x{history[1] / history[0]:.2f}); the background writer then takes "
          f"{history[2]:.1f} µs/task to record the run")

    decl = measure_declaration(decl_sizes, repeats)
    a, b = decl_sizes
    print(f"declaration (Task.from_function + flow.add): {decl[a]:.2f} µs/task at {a:,} tasks, "
          f"{decl[b]:.2f} µs/task at {b:,} (x{decl[b] / decl[a]:.2f})")

    by = {r.workload: r.us for r in rows}
    targets = []
    for r in rows:
        ratio = r.us["nbflow inline"] / r.us["asyncio inline"]
        targets.append((f"{r.workload} nbflow inline within 3x of asyncio inline", ratio <= 3,
                        f"{ratio:.2f}x"))
    for r in rows:
        ratio = r.us["nbflow threads"] / r.us["asyncio threads"]
        targets.append((f"{r.workload} nbflow threads within 1.5x of asyncio threads",
                        ratio <= 1.5, f"{ratio:.2f}x"))
    for w in ("W2", "W3"):
        ratio = by[w]["nbflow threads"] / by[w]["dask threaded"]
        targets.append((f"{w} nbflow threads faster than dask threaded", ratio < 1,
                        f"{ratio:.2f}x"))
    targets.append(("W2 100k per-task time at most 1.5x of 10k", large / small <= 1.5,
                    f"x{large / small:.2f}"))
    targets.append(("W2 scheduler memory under 2 KB/task", mem < 2048, f"{mem:,.0f} B"))
    targets.append(("declaration under 5 µs/task", max(decl.values()) < 5,
                    f"{max(decl.values()):.2f} µs"))
    targets.append(("declaration linear (per-task cost at 10x size within 1.5x)",
                    decl[b] / decl[a] <= 1.5, f"x{decl[b] / decl[a]:.2f}"))
    print()
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")
    failed = sum(1 for _, ok, _ in targets if not ok)
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
