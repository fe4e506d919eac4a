"""The service in this process: jobs run to their end, kept apart, at a concurrency;
parameters are checked before a job is queued; cancel and retry; the state dir."""

from __future__ import annotations

import sqlite3
import sys

import pytest
from conftest import wait_until

from .conftest import gates, open_gate

from nbflow.errors import JobParamsError, ServiceError, UnknownJobError
from nbflow.service import Service
from nbflow.service.store import SCHEMA_VERSION, SqliteJobs


def _done(service: Service, ids: list[str]) -> bool:
    return all(service.job(i).done for i in ids)


def test_twenty_jobs_at_concurrency_four_with_one_failing(start_service, workflows):
    service = start_service(workflows["served"], concurrency=4)
    ids = [service.submit({"n": n}, "test").id for n in range(20)]
    wait_until(lambda: _done(service, ids), timeout=60, what="20 jobs")
    jobs = {service.job(i).params["n"]: service.job(i) for i in ids}
    assert [n for n, j in jobs.items() if j.state != "succeeded"] == [3]
    assert "ValueError: three is bad" in jobs[3].error
    assert jobs[3].tasks["doubled"]["state"] == "failed"
    assert all(jobs[n].results == {"doubled": 2 * n} for n in jobs if n != 3)
    assert all(j.attempts == 1 for j in jobs.values())
    # each job has its own folder: event log (and no cache left once it succeeded)
    root = service.state_dir / "jobs"
    assert sorted(p.name for p in root.iterdir()) == sorted(ids)
    assert all((root / i / "events.jsonl").is_file() for i in ids)
    assert not (root / jobs[0].id / "cache").exists()
    assert service.store.counts() == {"queued": 0, "running": 0, "succeeded": 19,
                                      "failed": 1, "cancelled": 0}


def test_no_more_than_concurrency_jobs_run_at_once(start_service, workflows, tmp_path):
    service = start_service(workflows["two_steps"], concurrency=2)
    calls = tmp_path / "calls"
    fifos = gates(tmp_path, 3)
    ids = [service.submit({"n": n, "calls": str(calls), "gate": str(g)}, "test").id
           for n, g in enumerate(fifos, 1)]
    wait_until(lambda: service.store.counts()["running"] == 2, what="two running")
    assert service.store.counts()["queued"] == 1
    for gate in fifos:  # the third job starts once one of the first two ended
        open_gate(gate)
    wait_until(lambda: _done(service, ids), timeout=30, what="the jobs")
    assert [service.job(i).results["second"] for i in ids] == [20, 30, 40]


def test_bad_parameters_are_refused_before_anything_is_queued(start_service, workflows):
    service = start_service(workflows["two_steps"])
    with pytest.raises(JobParamsError, match=r"""'n' is an integer.*"x" is a string""") as bad:
        service.submit({"n": "x", "calls": "c"}, "test")
    assert bad.value.key == "n"
    with pytest.raises(JobParamsError, match=r"no parameter 'nn'.*Did you mean 'n'") as unknown:
        service.submit({"nn": 1, "calls": "c"}, "test")
    assert unknown.value.key == "nn"
    with pytest.raises(JobParamsError, match="'n' is required") as missing:
        service.submit({"calls": "c"}, "test")
    assert missing.value.key == "n"
    assert service.jobs() == []


def test_cancel_a_queued_and_a_running_job_then_retry(start_service, workflows, tmp_path):
    [gate] = gates(tmp_path, 1)
    calls = tmp_path / "calls"
    service = start_service(workflows["two_steps"], concurrency=1)
    running = service.submit({"n": 1, "calls": str(calls), "gate": str(gate)}, "test")
    queued = service.submit({"n": 2, "calls": str(calls), "gate": ""}, "test")
    wait_until(lambda: service.job(running.id).tasks.get("second", {}).get("state")
               == "running", what="the first job's second task running")
    assert service.cancel(queued.id).state == "cancelled"
    service.cancel(running.id)
    open_gate(gate)  # the blocked task body returns; the run is cancelled
    wait_until(lambda: service.job(running.id).done, what="the running job cancelled")
    assert service.job(running.id).state == "cancelled"
    with pytest.raises(ServiceError, match="already cancelled"):
        service.cancel(running.id)
    # retry: the job runs again, and its finished task comes from its cache
    service.retry(running.id)
    open_gate(gate)
    wait_until(lambda: service.job(running.id).state == "succeeded", what="the retry")
    job = service.job(running.id)
    assert job.attempts == 2 and job.results == {"second": 20}
    assert job.tasks["first"]["state"] == "cached"
    assert calls.read_text() == "first 1\n"
    with pytest.raises(UnknownJobError, match="no job 'nope'"):
        service.job("nope")


def test_one_service_per_state_dir(start_service, workflows, tmp_path):
    start_service(workflows["served"])
    with pytest.raises(ServiceError, match=r"in use by another nbflow serve \(pid \d+\)"):
        start_service(workflows["served"])


def test_a_state_dir_from_a_newer_nbflow_is_refused(workflows, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "jobs.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ServiceError, match="written by a newer nbflow"):
        SqliteJobs(state / "jobs.db")


def test_an_unreadable_workflow_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nbflow: 1\ntasks: [\n")
    with pytest.raises(ServiceError, match=r"^cannot serve .*bad.yaml: ") as err:
        Service(bad, state_dir=tmp_path / "s")
    assert "\n" not in str(err.value)
    with pytest.raises(ServiceError, match="not a notebook"):
        Service(tmp_path / "nothing.txt", state_dir=tmp_path / "s")
    with pytest.raises(ServiceError, match="importing no_such_module raised"):
        Service("no_such_module:flow", state_dir=tmp_path / "s")


def _waiting_for_a_slot() -> bool:
    """A worker thread of this process is blocked taking a slot (``SharedSlots.slot``)."""
    return any(f.f_code.co_name == "slot" and f.f_code.co_filename.endswith("slots.py")
               for f in sys._current_frames().values())


def test_a_shared_max_parallel_holds_across_jobs(start_service, workflows, tmp_path):
    service = start_service(workflows["shared"], concurrency=2, shared=["hold"])
    fifos = gates(tmp_path, 2)
    inside = tmp_path / "inside"
    ids = [service.submit({"n": n, "gate": str(g), "inside": str(inside)}, "test").id
           for n, g in enumerate(fifos)]

    def hold_state(job_id: str) -> str | None:
        return service.job(job_id).tasks.get("hold", {}).get("state")

    wait_until(lambda: all(hold_state(i) == "running" for i in ids), what="both jobs in hold")
    markers = wait_until(lambda: sorted(tmp_path.glob("inside-*")), what="one task inside")
    wait_until(_waiting_for_a_slot, what="the other job's task waiting for the slot")
    assert len(sorted(tmp_path.glob("inside-*"))) == 1
    first = int(markers[0].name.rpartition("-")[2])
    open_gate(fifos[first])
    wait_until(lambda: (tmp_path / f"inside-{1 - first}").exists(), what="the second inside")
    assert not markers[0].exists()
    open_gate(fifos[1 - first])
    wait_until(lambda: _done(service, ids), what="both jobs")
    assert [service.job(i).results for i in ids] == [{"hold": 0}, {"hold": 1}]


def test_shared_names_a_task_with_max_parallel(workflows, tmp_path):
    with pytest.raises(ServiceError, match=r"--shared holdd: no such task\. Did you mean"):
        Service(workflows["shared"], state_dir=tmp_path / "s", shared=["holdd"])
    with pytest.raises(ServiceError, match="no max_parallel to share"):
        Service(workflows["served"], state_dir=tmp_path / "s", shared=["doubled"])


def test_a_module_flow_is_served_by_reference(start_service, tmp_path, monkeypatch):
    (tmp_path / "svc_module.py").write_text(
        "import nbflow as nf\n\nflow = nf.Flow('by-ref')\n\n\n"
        "@flow.task(export=True)\ndef plus(n: int = 1) -> int:\n    return n + 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    service = start_service("svc_module:flow")
    assert (service.workflow.kind, service.workflow.name) == ("module", "by-ref")
    job = service.submit({"n": 41}, "test")
    wait_until(lambda: service.job(job.id).done, what="the job")
    assert service.job(job.id).results == {"plus": 42}
    with pytest.raises(ServiceError, match=r"svc_module\.nothing is nothing, not an nbflow Flow"):
        Service("svc_module:nothing", state_dir=tmp_path / "other")
