"""Streaming tasks on dask: the generator runs in the kernel, its items go to workers."""

from __future__ import annotations

import itertools
import sys
import threading

import cloudpickle
from dask_clusters import cli_cluster_fixture  # noqa: F401  (the `cli_cluster` fixture)
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)

import nbflow as nf

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _flow(closed: threading.Event | None = None, limit: int | None = None) -> nf.Flow:
    flow = nf.Flow("dask-stream")

    @flow.task(buffer=4)
    def source():
        try:
            yield from (itertools.count() if limit is None else range(limit))
        finally:
            if closed is not None:
                closed.set()

    @flow.task(map="source")
    def on_worker(source):
        from distributed import get_worker

        return source * 2, get_worker().address

    @flow.task(map="on_worker")
    def value(on_worker):
        return on_worker[0]

    @flow.task
    def total(value):
        return sum(value)

    return flow


def test_a_finite_stream_maps_on_the_local_cluster(local):
    run = _flow(limit=6).run(executor=nf.DaskExecutor())
    assert run.results["value"] == [0, 2, 4, 6, 8, 10]
    assert run.results["total"] == 30
    assert all(address.startswith(("inproc://", "tcp://")) for _, address in
               run.results["on_worker"])


def test_an_infinite_stream_on_workers_stops_when_the_reader_leaves(cli_cluster):
    closed = threading.Event()
    flow = _flow(closed)
    got = []
    for doubled in flow.stream("value", executor=nf.DaskExecutor(cli_cluster.address),
                               ordered=True):
        got.append(doubled)
        if len(got) == 8:
            break
    assert got == [0, 2, 4, 6, 8, 10, 12, 14]
    assert closed.is_set()
    assert flow.last_run is not None and flow.last_run.status == "cancelled"
