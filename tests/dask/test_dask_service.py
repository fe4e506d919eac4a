"""``--cluster``: a service's jobs run their tasks on a dask cluster."""

from __future__ import annotations

from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)
from dask_clusters import wait_until

import nbflow as nf
from nbflow.eventlog import read_events


def test_a_services_jobs_run_on_the_cluster(local, tmp_path):
    flow = nf.Flow("on-dask")

    @flow.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @flow.task(map="numbers", export=True)
    def square(numbers: int) -> int:
        return numbers * numbers

    service = flow.serve(state_dir=tmp_path / "state", cluster=local.scheduler_address,
                         concurrency=2)
    try:
        ids = [service.submit(n=n).id for n in (3, 4)]
        wait_until(lambda: all(service.job(i).done for i in ids), 60, "the jobs")
        assert [service.job(i).results for i in ids] == [{"square": [0, 1, 4]},
                                                         {"square": [0, 1, 4, 9]}]
        events = read_events(service.state_dir / "jobs" / ids[0] / "events.jsonl")
        where = {e["where"] for e in events if e.get("state") == "succeeded"}
        workers = set(local.scheduler_info["workers"])
        assert where and where <= workers, (where, workers)
    finally:
        service.stop()
