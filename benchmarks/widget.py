"""Widget benchmarks: layout time, event-loop stalls, and the cost of a live widget.

- Layout: DOT -> SVG in the layout process for 50/500/2,000-node flows (random
  DAGs, about two parents each among the 50 tasks before; "uniform" draws
  parents from all earlier tasks). Targets: 500 nodes under 0.5 s, 2,000 under 3 s.
- Stall: the longest gap of a 5 ms ticker coroutine on an asyncio loop while a
  2,000-node widget is created (layout requested), laid out and updated by a
  running flow. Target: under 50 ms.
- Overhead: W2 of benchmarks/scheduler.py (a root returning 10,000 items, a
  task mapped over them, a reduce) with a live widget attached, against the same
  run without observers. Target: under 10% slower.

Usage: python benchmarks/widget.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbflow as nf
from nbflow.widget import DagWidget
from nbflow.widget.layout import Structure, to_graphviz
from nbflow.widget.service import LayoutService


def random_structure(n: int, local: bool = True, seed: int = 1) -> Structure:
    rnd = random.Random(seed)
    edges = set()
    for i in range(1, n):
        for _ in range(2):
            j = rnd.randrange(max(0, i - 50), i) if local else rnd.randrange(i)
            edges.add((j, i))
    return Structure(f"random{n}", tuple(f"task_{i}" for i in range(n)), tuple(sorted(edges)),
                     frozenset())


def layout_time(service: LayoutService, structure: Structure, repeats: int) -> float:
    """Best time from request to SVG (a fresh cache key each time, so nothing is reused)."""
    source = to_graphviz(structure).source
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        service.layout(f"{structure.key}-{r}-{time.monotonic_ns()}", source).result(300)
        times.append(time.perf_counter() - t0)
    return min(times)


def wide_flow(n: int) -> nf.Flow:
    """A 2,000-task flow shaped like the random DAG, each task a tiny function."""
    structure = random_structure(n)
    flow = nf.Flow("wide")
    parents: dict[int, list[int]] = {}
    for u, d in structure.edges:
        parents.setdefault(d, []).append(u)
    for i, name in enumerate(structure.names):
        ups = [structure.names[u] for u in parents.get(i, [])]
        flow.task(name=name, after=ups, cache=False)(lambda: 1)
    return flow


def loop_stall(n: int) -> tuple[float, float, int, float]:
    """(longest ticker gap, seconds observed, deltas sent, longest widget call on the
    loop) while an n-task widget is laid out and follows a run of its flow.

    Each measurement starts alike: the garbage of the ones before is collected, and
    their widgets are closed (ipywidgets keeps every open widget, and with it the run
    it follows: later repeats would pay ever longer full collections for them).
    """
    flow = wide_flow(n)
    service = LayoutService()
    gc.collect()

    async def main() -> tuple[float, float, int, float]:
        loop = asyncio.get_running_loop()
        worst, last, start = 0.0, loop.time(), loop.time()
        stop = False

        async def ticker() -> None:
            nonlocal worst, last
            while not stop:
                await asyncio.sleep(0.005)
                now = loop.time()
                worst, last = max(worst, now - last), now

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        widget = DagWidget(flow, service=service)  # requests the layout
        created = time.perf_counter() - t0
        # Planning 2,000 tasks is the core's synchronous work in flow.run(), measured on
        # its own (run_start_stall); here the run starts off the loop, the widget on it.
        run = await asyncio.to_thread(flow.run, background=True, executor="threads")
        t0 = time.perf_counter()
        widget.attach(run)
        attached = time.perf_counter() - t0
        await run.wait_async()
        while widget.layout_status == "pending":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        stop = True
        await tick
        widget.close()
        return worst, loop.time() - start, widget.deltas_sent, max(created, attached)

    try:
        return asyncio.run(main())
    finally:
        service.close()


def run_start_stall(n: int) -> float:
    """Seconds that ``flow.run(background=True)`` of an n-task flow takes on the caller's
    thread (planning; no widget involved), for comparison with the widget's stall."""
    flow = wide_flow(n)
    flow.run(background=True).wait()  # first run: code keys are computed once
    t0 = time.perf_counter()
    flow.run(background=True).wait(60)
    return time.perf_counter() - t0


def w2_overhead(items: int, repeats: int) -> tuple[float, float, float, int]:
    """Best seconds (no observers, a no-op observer, a live widget) and deltas sent.

    The no-op observer shows what any observer costs (the scheduler then builds an
    event per state change); the widget's own cost is the rest.
    """
    flow = nf.Flow("W2")

    @flow.task(cache=False)
    def root():
        return list(range(items))

    @flow.task(map="root", cache=False)
    def item(root):
        return root

    @flow.task(cache=False)
    def total(item):
        return len(item)

    service = LayoutService()
    widget = DagWidget(flow, service=service)
    widget.wait_layout(60)
    times: dict[str, list[float]] = {"plain": [], "noop": [], "widget": []}
    deltas = 0
    try:
        for _ in range(repeats):
            for kind in times:  # interleaved, so machine noise hits all three alike
                gc.collect()
                ex = nf.ThreadExecutor(max_workers=2)
                t0 = time.perf_counter()
                if kind == "widget":
                    run = flow.run(background=True, executor=ex)
                    widget.attach(run)
                    run.wait()
                else:
                    run = flow.run(executor=ex, observers=[_noop] if kind == "noop" else [])
                elapsed = time.perf_counter() - t0
                assert run.results["total"] == items
                times[kind].append(elapsed)
        deltas = widget.deltas_sent
    finally:
        service.close()
    return min(times["plain"]), min(times["noop"]), min(times["widget"]), deltas


def _noop(events: object) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke)")
    args = parser.parse_args(argv)
    sizes = (50, 200) if args.quick else (50, 500, 2000)
    repeats = 1 if args.quick else 3

    print("Layout in the layout process (DOT -> SVG, bundled Graphviz):")
    service = LayoutService()
    results: dict[tuple[int, bool], float] = {}
    try:
        layout_time(service, random_structure(10), 1)  # start the worker
        for n in sizes:
            for local in (True, False):
                t = layout_time(service, random_structure(n, local), repeats)
                results[(n, local)] = t
                print(f"  {n:>5} nodes, {'local  ' if local else 'uniform'} parents: {t:6.3f} s")
    finally:
        service.close()

    stall_n = 200 if args.quick else 2000
    stalls = [loop_stall(stall_n) for _ in range(1 if args.quick else 5)]
    worst = statistics.median(s[0] for s in stalls)
    print(f"\nLongest event-loop stall, {stall_n}-node widget laid out and following a run: "
          f"median {worst * 1000:.1f} ms of {len(stalls)} runs "
          f"({', '.join(f'{s[0] * 1000:.0f}' for s in stalls)} ms; each over "
          f"{stalls[0][1]:.1f} s)")
    print(f"  the widget's own calls on the loop (creating it, attaching the run): at most "
          f"{statistics.median(s[3] for s in stalls) * 1000:.1f} ms (median)")
    print(f"  (for comparison, a whole {stall_n}-task background run incl. planning, no widget: "
          f"{run_start_stall(stall_n) * 1000:.1f} ms)")

    items = 1000 if args.quick else 10_000
    plain, noop, live, w2_deltas = w2_overhead(items, repeats if args.quick else 7)
    print(f"\nW2 (map over {items:,}), threads, best of runs: {plain * 1000:.1f} ms without "
          f"observers, {noop * 1000:.1f} ms with a no-op observer, {live * 1000:.1f} ms with a "
          f"live widget ({w2_deltas} deltas in all runs)")
    print(f"  ratios: widget / no observers {live / plain:.2f}, no-op observer / no observers "
          f"{noop / plain:.2f}, widget / no-op observer {live / noop:.2f}")

    targets = []
    if not args.quick:
        targets = [
            ("500 nodes laid out under 0.5 s", results[(500, True)], 0.5),
            ("2,000 nodes laid out under 3 s", results[(2000, True)], 3.0),
            ("2,000 uniform nodes laid out under 3 s", results[(2000, False)], 3.0),
            ("event-loop stall under 50 ms (median)", worst, 0.050),
            ("live widget on W2 under 10% slower", live / plain, 1.10),
        ]
    print("\nTargets (ratio = measured / target; <= 1 meets it):")
    for label, value, target in targets:
        print(f"  {'ok  ' if value <= target else 'MISS'} {label}: ratio {value / target:.2f}")
    if args.quick:
        print(f"  (quick mode: sizes {sizes}, {items:,} items; no targets checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
