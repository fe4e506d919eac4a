"""``flow.serve()``: a service in the background of this process, fed by a folder."""

from __future__ import annotations

import threading

import pytest
from conftest import wait_until

import nbflow as nf
from nbflow.errors import JobParamsError


def _flow() -> nf.Flow:
    flow = nf.Flow("lines")

    @flow.task(export=True)
    def count(path: str) -> int:
        with open(path) as f:
            return len(f.read().splitlines())

    return flow


def test_flow_serve_watches_a_folder_and_stops_cleanly(tmp_path):
    flow = _flow()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    service = flow.serve(watch=inbox, stable=0.1, state_dir=tmp_path / "state",
                         concurrency=2)
    try:
        assert flow.service is service and service.running
        (inbox / "a.txt").write_text("1\n2\n3\n")
        wait_until(lambda: [j.state for j in service.jobs()] == ["succeeded"], timeout=30,
                   what="a job for a.txt")
        [job] = service.jobs()
        assert (job.trigger, job.results) == ("watch", {"count": 3})
        other = service.submit(path=str(inbox / "a.txt"))
        wait_until(lambda: service.job(other.id).done, what="a submitted job")
        assert service.job(other.id).trigger == "notebook"
        with pytest.raises(JobParamsError, match="no parameter 'pth'"):
            service.submit(pth="x")
        lines = service.status_lines()
        assert lines[0].startswith("Service serving: 2 succeeded (state dir ")
        assert lines[1].split()[:2] == ["ID", "STATE"]
    finally:
        service.stop()
    assert not service.running
    assert not [t for t in threading.enumerate() if t.name == "nbflow-service"]
    assert "stopped" in repr(service)


def test_a_flow_parameter_from_the_namespace_has_its_value_as_default(tmp_path):
    namespace = {"limit": 2}
    flow = nf.Flow("firsts", namespace=namespace)

    @flow.task(export=True)
    def head(path: str, limit):
        with open(path) as f:
            return f.read().splitlines()[:limit]

    (tmp_path / "a.txt").write_text("1\n2\n3\n")
    service = flow.serve(state_dir=tmp_path / "state")
    try:
        job = service.submit(path=str(tmp_path / "a.txt"))
        wait_until(lambda: service.job(job.id).done, what="the job")
        assert service.job(job.id).results == {"head": ["1", "2"]}
    finally:
        service.stop()


def test_a_watch_needs_defaults_for_the_other_parameters(tmp_path):
    flow = nf.Flow("two")

    @flow.task
    def both(path: str, scale: float) -> float:
        return scale

    with pytest.raises(nf.ServiceError, match=r"also needs scale \(no default\)"):
        flow.serve(watch=tmp_path, state_dir=tmp_path / "state")
