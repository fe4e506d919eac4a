"""nbflow on dask against dask used directly, on the same ``LocalCluster(processes=False)``.

The workloads of issue 21 (task bodies do next to nothing, so the times are
scheduling):

- **W1**: a chain of 200 tasks;
- **EW**: a root returning 2,000 items and a 3-step element-wise chain mapped
  over them (``s1`` maps over ``root``, ``s2`` over ``s1``, ``s3`` over ``s2``).

Every path runs the same distinct task functions (one generated function per
task, as users write them), each end to end, divided by the number of tasks:

- ``fused``: ``flow.run(executor=nf.DaskExecutor(cluster))`` (chain fusion on, the default);
- ``unfused``: the same with ``fuse_chains=False``;
- ``submit``: one ``client.submit`` per task (per branch and step for EW), upstream
  futures as arguments, then waiting for the last ones;
- ``map``: EW's steps as one ``client.map`` each (W1 has none);
- ``get``: ``client.get`` on the whole graph as a dict.

The ratios are each nbflow path over the best direct path; the target (issue 21)
is at most 0.25x. The paths take turns (best of 3), so that the machine's slow
and fast phases hit them alike. Run ``python benchmarks/dask.py`` (about a
minute) or ``--quick`` (a tenth of the sizes, one repeat).
"""

from __future__ import annotations

import argparse
import itertools
import operator
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where this file would
# shadow the dask package itself: put the repository root there instead.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import nbflow as nf  # noqa: E402
from benchmarks.scheduler import Spec, Workload, chain, declare, make_functions  # noqa: E402
from nbflow import config  # noqa: E402

TARGET = 0.25
#: the element-wise steps of EW
STEPS = ("s1", "s2", "s3")


def elementwise(n: int) -> Workload:
    """A root of ``n`` items, then :data:`STEPS`, each mapped over the one before."""
    specs = [Spec("root", (), f"return list(range({n}))")]
    source = "root"
    for step in STEPS:
        specs.append(Spec(step, (source,), f"return {source} + 1", {"map": source}))
        source = step
    return Workload("EW", f"3 steps x {n:,}", specs, 1 + len(STEPS) * n, None)


def _size(workload: Workload) -> int:
    return (workload.n_tasks - 1) // len(STEPS)


def _item(source: list[Any], i: int, fn: Callable[..., Any]) -> Any:
    return fn(source[i])


def run_nbflow(flow: nf.Flow, workload: Workload, executor: nf.Executor, fuse: bool) -> float:
    with config.set(fuse_chains=fuse):
        t0 = time.perf_counter()
        run = flow.run(executor=executor)
        elapsed = time.perf_counter() - t0
    assert run.status == "succeeded", run.status
    return elapsed


def run_submit(client: Any, workload: Workload, use_map: bool) -> float:
    """One ``client.submit`` per task (EW: per branch and step, or one ``client.map``
    per step with ``use_map``); waits for the last futures without gathering them."""
    from distributed import wait

    fns = workload.functions
    t0 = time.perf_counter()
    if workload.name == "W1":
        last = None
        for s in workload.specs:
            last = client.submit(fns[s.name], *([last] if s.params else []), pure=False)
        wait([last])
    else:
        n = _size(workload)
        root = client.submit(fns["root"], pure=False)
        if use_map:
            futures = client.map(_item, [root] * n, range(n), [fns["s1"]] * n, pure=False)
            for step in STEPS[1:]:
                futures = client.map(fns[step], futures, pure=False)
        else:
            futures = []
            for i in range(n):
                f = client.submit(_item, root, i, fns["s1"], pure=False)
                for step in STEPS[1:]:
                    f = client.submit(fns[step], f, pure=False)
                futures.append(f)
        wait(futures)
    return time.perf_counter() - t0


def dask_graph(workload: Workload) -> tuple[dict[Any, Any], list[Any]]:
    """The workload as a dask graph dict and its sinks; EW's branches are ``(step, i)``."""
    fns = workload.functions
    if workload.name == "W1":
        dsk: dict[Any, Any] = {s.name: (fns[s.name], *s.params) for s in workload.specs}
        return dsk, [workload.specs[-1].name]
    n = _size(workload)
    dsk = {"root": (fns["root"],)}
    for i in range(n):
        dsk[("s1", i)] = (fns["s1"], (operator.getitem, "root", i))
        for before, step in itertools.pairwise(STEPS):
            dsk[(step, i)] = (fns[step], (before, i))
    return dsk, [(STEPS[-1], i) for i in range(n)]


def run_get(client: Any, workload: Workload) -> float:
    dsk, sinks = dask_graph(workload)
    t0 = time.perf_counter()
    client.get(dsk, sinks)
    return time.perf_counter() - t0


def interleaved(repeats: int, paths: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best time of each path, the paths taking turns, so that the machine's slow and
    fast phases hit every path alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            times[name].append(fn())
    return {name: min(ts) for name, ts in times.items()}


def check(flow: nf.Flow, workload: Workload, executor: nf.Executor) -> None:
    """The nbflow runs compute what they should (once, outside the timings)."""
    for fuse in (True, False):
        with config.set(fuse_chains=fuse):
            run = flow.run(executor=executor)
        if workload.name == "W1":
            assert run.results[workload.specs[-1].name] is None
        else:
            n = _size(workload)
            assert run.results["s3"] == [i + len(STEPS) for i in range(n)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per path (best counts)")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    import dask

    scale = 10 if args.quick else 1
    repeats = 1 if args.quick else args.repeats
    workloads = [chain(200 // scale), elementwise(2000 // scale)]
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=4,
                               dashboard_address=None)
    client = Client(cluster)
    executor = nf.DaskExecutor(cluster)
    failed = []
    try:
        print(f"dask on LocalCluster(processes=False, 1 worker x 4 threads); best of {repeats}")
        print(f"{'workload':<22}{'fused':>9}{'unfused':>9}{'submit':>9}{'map':>9}{'get':>9}"
              f"{'fused/best':>12}{'unfused/best':>14}  (µs/task)")
        for w in workloads:
            make_functions(w)
            flow = declare(w)
            check(flow, w, executor)  # also the warm-up: connection, imports
            run_submit(client, w, False)
            paths: dict[str, Callable[[], float]] = {
                "fused": lambda f=flow, w=w: run_nbflow(f, w, executor, True),
                "unfused": lambda f=flow, w=w: run_nbflow(f, w, executor, False),
                "submit": lambda w=w: run_submit(client, w, False),
                "map": lambda w=w: run_submit(client, w, True),
                "get": lambda w=w: run_get(client, w),
            }
            if w.name == "W1":
                del paths["map"]  # the same as submit without a mapped task
            times = interleaved(repeats, paths)
            direct = min(times[k] for k in ("submit", "map", "get") if k in times)
            us = [times.get(k, float("nan")) / w.n_tasks * 1e6
                  for k in ("fused", "unfused", "submit", "map", "get")]
            ratios = times["fused"] / direct, times["unfused"] / direct
            label = f"{w.name} {w.label}"
            print(f"{label:<22}" + "".join(f"{u:>9.0f}" for u in us)
                  + f"{ratios[0]:>12.2f}{ratios[1]:>14.2f}")
            if ratios[0] > TARGET:
                failed.append(w.name)
        if failed:
            print(f"over the {TARGET}x target (fused): {', '.join(failed)}")
        else:
            print(f"every workload, fused, within {TARGET}x of the best direct dask path")
    finally:
        nf.executors.dask_cluster.reset()  # nbflow's connection first, then the cluster
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
