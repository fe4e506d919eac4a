"""Streaming tasks against a hand-written queue pipeline and today's map.

Two 3-stage pipelines (a source, a transform, a reduce per item):

- S1: 100,000 small items (ints): ``i``, then ``x * 2``, then ``x + 1``;
- S2: 1,000 pandas DataFrames of 1,000 rows: a new frame per item, then
  ``df.assign(y=df.x * 2)``, then ``int(df.y.sum())``.

Each runs, end to end, through:

- **queue**: the hand-written pipeline, one thread per stage joined by
  ``queue.Queue(maxsize=100)`` (the same bound as nbflow's default buffer), the
  last stage appending to a list;
- **stream**: nbflow with the source a generator task and two tasks that ``map=``
  it element-wise, ``flow.run()`` on a 4-thread executor, results read from
  ``run.results``;
- **flow.stream**: the same flow, results taken as they come with
  ``flow.stream("last stage")`` into a list;
- **map**: today's map: the source a plain task returning the list, then the same
  two mapped tasks (``map=`` over a non-generator task), ``flow.run()``.

The variants take turns (the machine's load varies), best of N. Then memory: the
``tracemalloc`` peak (all threads) of one run above the memory before it, at N and
10 x N items, with a bound of 10 on both (queue maxsize, the source's ``buffer=``)
so that N is well above what may be in flight, where the results are consumed as they come and not kept (queue: a
running sum in the last stage; nbflow: a running sum over ``flow.stream``), so a
streaming pipeline can stay flat. ``flow.run()`` keeps every result by design; its
peak is printed for reference.

Targets: stream at least as fast as map, and within 2x of the queue pipeline, on
S1 and S2; flow.stream's peak at 10 x N within 1.2x of its peak at N, on S1 and S2.

Run ``python benchmarks/streams.py`` (about 2 minutes) or with ``--quick``
(small sizes, a few seconds; the targets are then only indicative).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import queue
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where the sibling
# benchmarks/dask.py would shadow the real dask package: take the folder off.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import nbflow as nf  # noqa: E402

THREADS = 4  # worker threads of nbflow's executor
BUFFER = 100  # the queue pipeline's bound (nbflow's default stream_buffer)
#: the bound of both (queue maxsize, the source's ``buffer=``) when measuring memory, so that
#: N is well above what may be in flight at once even for the smaller size
MEM_BUFFER = 10
ROWS = 1_000  # rows per DataFrame in S2

# -- the stages (module-level functions: their parameter names are their upstream tasks) --


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


def numbers_list(n: int) -> list[int]:
    return list(range(n))


def doubled(numbers: int) -> int:
    return numbers * 2


def plus_one(doubled: int) -> int:
    return doubled + 1


def make_frame(i: int) -> Any:
    import numpy as np
    import pandas as pd

    return pd.DataFrame({"x": np.arange(i * ROWS, (i + 1) * ROWS, dtype=np.int64)})


def frames(n: int) -> Iterator[Any]:
    for i in range(n):
        yield make_frame(i)


def frames_list(n: int) -> list[Any]:
    return [make_frame(i) for i in range(n)]


def scaled(frames: Any) -> Any:
    return frames.assign(y=frames["x"] * 2)


def summed(scaled: Any) -> int:
    return int(scaled["y"].sum())


@dataclass
class Pipeline:
    name: str
    label: str
    n: int
    source: Callable[[int], Iterator[Any]]
    source_list: Callable[[int], list[Any]]
    stages: tuple[Callable[[Any], Any], Callable[[Any], Any]]
    #: the expected sum of the last stage's results
    total: Callable[[int], int]


def small_items(n: int) -> Pipeline:
    return Pipeline("S1", f"{n:,} ints", n, numbers, numbers_list, (doubled, plus_one),
                    lambda n: n * (n - 1) + n)


def frame_batches(n: int) -> Pipeline:
    return Pipeline("S2", f"{n:,} frames x {ROWS:,} rows", n, frames, frames_list,
                    (scaled, summed), lambda n: (n * ROWS) * (n * ROWS - 1))


# -- nbflow ----------------------------------------------------------------------------------


def declare(p: Pipeline, stream: bool, buffer: int | None = None,
            unbounded: bool = False) -> nf.Flow:
    """source -> stage 2 (map=source) -> stage 3 (map=stage 2); a generator source streams
    (``buffer``: its bound, else the stream_buffer setting, 100; ``unbounded``: the run
    keeps a window of its items and results, not all of them)."""
    flow = nf.Flow(f"{p.name}-{'stream' if stream else 'map'}")
    src = p.source if stream else p.source_list
    first, second = p.stages
    options: dict[str, Any] = {"cache": False}
    if buffer is not None:
        options["buffer"] = buffer
    if unbounded:
        options["unbounded"] = True
    flow.add(nf.Task.from_function(src, name=p.source.__name__, options=options))
    flow.add(nf.Task.from_function(first, name=first.__name__,
                                   options={"cache": False, "map": p.source.__name__}))
    flow.add(nf.Task.from_function(second, name=second.__name__,
                                   options={"cache": False, "map": first.__name__}))
    return flow


def executor() -> nf.Executor:
    return nf.ThreadExecutor(max_workers=THREADS)


def nbflow_run(p: Pipeline, flow: nf.Flow) -> int:
    """flow.run(); the sum of the last stage's results (read from run.results)."""
    flow.cache.clear()
    run = flow.run(params={"n": p.n}, executor=executor())
    assert run.status == "succeeded", run.status
    results = run.results[p.stages[1].__name__]
    assert len(results) == p.n
    return sum(results)


def nbflow_stream(p: Pipeline, flow: nf.Flow, keep: bool = True) -> int:
    """flow.stream() of the last stage: into a list (``keep``) or a running sum."""
    flow.cache.clear()
    values = flow.stream(p.stages[1].__name__, params={"n": p.n}, executor=executor())
    if keep:
        results = list(values)
        assert len(results) == p.n
        return sum(results)
    total = count = 0
    for v in values:
        total += v
        count += 1
    assert count == p.n
    return total


# -- baseline: one thread per stage, joined by bounded queues -------------------------------

_END = object()


def queue_pipeline(p: Pipeline, keep: bool = True, buffer: int = BUFFER) -> int:
    """The hand-written pipeline; the last stage keeps a list (``keep``) or a running sum."""
    q1: queue.Queue[Any] = queue.Queue(buffer)
    q2: queue.Queue[Any] = queue.Queue(buffer)
    first, second = p.stages
    out: list[Any] = []
    total = [0]

    def produce() -> None:
        for v in p.source(p.n):
            q1.put(v)
        q1.put(_END)

    def transform() -> None:
        while (v := q1.get()) is not _END:
            q2.put(first(v))
        q2.put(_END)

    def sink() -> None:
        while (v := q2.get()) is not _END:
            r = second(v)
            if keep:
                out.append(r)
            else:
                total[0] += r

    threads = [threading.Thread(target=f) for f in (produce, transform, sink)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if keep:
        assert len(out) == p.n
        return sum(out)
    return total[0]


# -- measuring --------------------------------------------------------------------------------

VARIANTS = ("queue", "stream", "flow.stream", "map")


def throughput(p: Pipeline, repeats: int) -> dict[str, float]:
    """Best seconds per variant; the variants take turns."""
    flows = {"stream": declare(p, True), "map": declare(p, False)}
    calls: dict[str, Callable[[], int]] = {
        "queue": lambda: queue_pipeline(p),
        "stream": lambda: nbflow_run(p, flows["stream"]),
        "flow.stream": lambda: nbflow_stream(p, flows["stream"]),
        "map": lambda: nbflow_run(p, flows["map"]),
    }
    best = dict.fromkeys(VARIANTS, float("inf"))
    expected = p.total(p.n)
    for _ in range(repeats):
        for name in VARIANTS:
            gc.collect()
            t0 = time.perf_counter()
            got = calls[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
            assert got == expected, (name, got, expected)
    return best


def peak_memory(fn: Callable[[], Any]) -> int:
    """The tracemalloc peak during ``fn()`` above what was allocated before it (all threads)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - before


def memory(make: Callable[[int], Pipeline], n: int) -> dict[str, tuple[int, int]]:
    """Peaks at n and 10 x n items: queue and flow.stream consuming as they come (a running
    sum), and flow.run() (which keeps every result) for reference."""
    out: dict[str, tuple[int, int]] = {}
    for name in ("queue", "flow.stream", "flow.run"):
        peaks = []
        for size in (n, 10 * n):
            p = make(size)
            flow = declare(p, True, buffer=MEM_BUFFER, unbounded=name == "flow.stream")
            call: Callable[[], int]
            if name == "queue":
                call = functools.partial(queue_pipeline, p, False, MEM_BUFFER)
            elif name == "flow.stream":
                call = functools.partial(nbflow_stream, p, flow, False)
            else:
                call = functools.partial(nbflow_run, p, flow)
            peaks.append(peak_memory(call))
            del flow, call
        out[name] = (peaks[0], peaks[1])
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


# -- report -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and fewer repeats (a smoke run; targets indicative)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)

    if args.quick:
        pipelines = [small_items(2_000), frame_batches(50)]
        mem_sizes = (500, 20)
        repeats = args.repeats or 2
    else:
        pipelines = [small_items(100_000), frame_batches(1_000)]
        mem_sizes = (10_000, 100)
        repeats = args.repeats or 3

    started = time.perf_counter()
    print(f"nbflow {nf.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"nbflow on {THREADS} threads, queue pipeline on 3 threads (one per stage); best of "
          f"{repeats} repeats, variants taking turns"
          f"{' (quick mode: small sizes)' if args.quick else ''}")
    print("times are µs per item, end to end (3 stages per item)\n")

    rows = [(p, throughput(p, repeats)) for p in pipelines]
    print(f"{'pipeline':<30}" + "".join(f"{c:>14}" for c in VARIANTS))
    for p, best in rows:
        print(f"{p.name + ' ' + p.label:<30}"
              + "".join(f"{best[c] / p.n * 1e6:>14.1f}" for c in VARIANTS))
    print()
    print(f"{'ratios':<30}{'stream/map':>14}{'stream/queue':>14}{'fl.stream/q':>14}"
          f"{'map/queue':>14}")
    for p, best in rows:
        print(f"{p.name:<30}{best['stream'] / best['map']:>14.2f}"
              f"{best['stream'] / best['queue']:>14.2f}"
              f"{best['flow.stream'] / best['queue']:>14.2f}"
              f"{best['map'] / best['queue']:>14.2f}")

    mems = [(make(n), memory(make, n)) for make, n in zip((small_items, frame_batches), mem_sizes,
                                                          strict=True)]
    print("\nmemory: tracemalloc peak of one run above the memory before it (all threads), "
          f"at N and 10 x N items; bound {MEM_BUFFER} (queue maxsize, the source's buffer=)")
    print(f"{'pipeline':<30}{'variant':<14}{'peak at N':>14}{'peak at 10N':>14}{'x':>8}")
    for p, m in mems:
        for name, (a, b) in m.items():
            label = f"{p.name} N={p.n:,}"
            note = "" if name != "flow.run" else "  (keeps every result: reference)"
            print(f"{label:<30}{name:<14}{_mb(a):>14}{_mb(b):>14}{b / max(a, 1):>8.2f}{note}")

    targets = []
    for p, best in rows:
        ratio = best["stream"] / best["map"]
        targets.append((f"{p.name} stream at least as fast as map", ratio <= 1.0,
                        f"{ratio:.2f}x"))
        ratio = best["stream"] / best["queue"]
        targets.append((f"{p.name} stream within 2x of the queue pipeline", ratio <= 2.0,
                        f"{ratio:.2f}x"))
    for p, m in mems:
        a, b = m["flow.stream"]
        ratio = b / max(a, 1)
        targets.append((f"{p.name} flow.stream memory flat (peak at 10x items within 1.2x)",
                        ratio <= 1.2, f"x{ratio:.2f} ({_mb(a)} -> {_mb(b)})"))
    print()
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")
    failed = sum(1 for _, ok, _ in targets if not ok)
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
