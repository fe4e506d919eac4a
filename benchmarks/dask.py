"""nbflow on dask against dask used directly, on the same ``LocalCluster(processes=False)``.

The workloads of ``benchmarks/scheduler.py`` at a fifth of their size (a dask
task costs milliseconds here): W1 a chain of 200, W2 a map over 2,000 items,
W3 10 layers x 40. Task bodies do nothing, so the times are scheduling.

Paths, each end to end and divided by the number of tasks:

- ``nbflow``: ``flow.run(executor=nf.DaskExecutor(cluster))``;
- ``submit``: one ``client.submit`` per task, upstream futures as arguments,
  then waiting for the last one;
- ``map``: like ``submit``, but W2's branches as one ``client.map``;
- ``get``: ``client.get`` on the whole graph as a dict.

Target: nbflow within 1.25x of the best direct path for each workload. The
paths take turns (best of 5), so that the machine's slow and fast phases hit
them alike. Run ``python benchmarks/dask.py`` (about three minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
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
from benchmarks.scheduler import (  # noqa: E402
    Workload,
    chain,
    dask_graph,
    declare,
    fan_out,
    layers,
    make_functions,
    run_nbflow,
)

TARGET = 1.25


def _item(source: list[Any], i: int, fn: Callable[..., Any]) -> Any:
    return fn(source[i])


def run_submit(client: Any, workload: Workload, use_map: bool) -> float:
    """One submit per task (W2's branches as one client.map when ``use_map``)."""
    fns = workload.functions
    t0 = time.perf_counter()
    futures: dict[str, Any] = {}
    last = None
    for s in workload.specs:
        if "map" in s.options:
            assert workload.fan_out is not None
            src, n = futures[s.options["map"]], workload.fan_out[3]
            if use_map:
                branches = client.map(_item, [src] * n, range(n), [fns[s.name]] * n, pure=False)
            else:
                branches = [client.submit(_item, src, i, fns[s.name], pure=False)
                            for i in range(n)]
            futures[s.name] = branches
            continue
        if workload.fan_out is not None and s.params == (workload.fan_out[1],):
            last = futures[s.name] = client.submit(fns[s.name], futures[s.params[0]], pure=False)
        else:
            last = futures[s.name] = client.submit(
                fns[s.name], *[futures[p] for p in s.params], pure=False)
    # W3's last layer has 40 sinks: wait for every future, as nbflow does
    client.gather([f for f in futures.values() if not isinstance(f, list)])
    value = last.result()
    elapsed = time.perf_counter() - t0
    if workload.fan_out is not None:
        assert value == workload.fan_out[3]
    return elapsed


def run_get(client: Any, workload: Workload) -> float:
    dsk, _ = dask_graph(workload)
    sinks = [k for k in dsk if not any(k in _deps(v) for v in dsk.values())]
    t0 = time.perf_counter()
    values = client.get(dsk, sinks)
    elapsed = time.perf_counter() - t0
    if workload.fan_out is not None:
        assert values[-1] == workload.fan_out[3]
    return elapsed


def _deps(task: Any) -> set[Any]:
    out: set[Any] = set()
    stack = [task]
    while stack:
        v = stack.pop()
        if isinstance(v, (tuple, list)):
            stack.extend(v)
        elif isinstance(v, (str, tuple)):
            out.add(v)
    return out


def interleaved(repeats: int, paths: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best time of each path, the paths taking turns, so that the machine's slow and
    fast phases hit every path alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            times[name].append(fn())
    return {name: min(ts) for name, ts in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    import dask

    scale = 10 if args.quick else 1
    repeats = 1 if args.quick else 5
    workloads = [chain(200 // scale), fan_out(2000 // scale), layers(10 // (scale // 5 or 1), 40)]
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=4,
                               dashboard_address=None)
    client = Client(cluster)
    executor = nf.DaskExecutor(cluster)
    failed = []
    try:
        print(f"dask on LocalCluster(processes=False, 1 worker x 4 threads); best of {repeats}")
        print(f"{'workload':<24}{'nbflow':>10}{'submit':>10}{'map':>10}{'get':>10}"
              f"{'ratio':>8}  (µs/task; ratio = nbflow / best direct)")
        for w in workloads:
            make_functions(w)
            flow = declare(w)
            run_nbflow(flow, w, executor)  # warm-up: connection, imports
            run_submit(client, w, False)
            paths: dict[str, Callable[[], float]] = {
                "nbflow": lambda f=flow, w=w: run_nbflow(f, w, executor),
                "submit": lambda w=w: run_submit(client, w, False),
                "map": lambda w=w: run_submit(client, w, True),
                "get": lambda w=w: run_get(client, w),
            }
            if not w.fan_out:
                del paths["map"]  # the same as submit without a mapped task
            times = interleaved(repeats, paths)
            t_nf, t_sub, t_get = times["nbflow"], times["submit"], times["get"]
            t_map = times.get("map", t_sub)
            direct = min(t_sub, t_map, t_get)
            ratio = t_nf / direct
            us = [t / w.n_tasks * 1e6 for t in (t_nf, t_sub, t_map, t_get)]
            label = f"{w.name} {w.label}"
            print(f"{label:<24}" + "".join(f"{u:>10.0f}" for u in us) + f"{ratio:>8.2f}")
            if ratio > TARGET:
                failed.append(w.name)
        if failed:
            print(f"over the {TARGET}x target: {', '.join(failed)}")
        else:
            print(f"every workload within {TARGET}x of the best direct dask path")
    finally:
        nf.executors.dask_cluster.reset()  # nbflow's connection first, then the cluster
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
