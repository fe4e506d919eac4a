"""``nbflow serve`` as a real process: submit, jobs, SIGTERM, and a ``kill -9`` mid-job
after which a restart runs the job to its end exactly once without recomputing what
had finished."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

import pytest
from conftest import wait_until

from nbflow.cache import entry_files
from nbflow.eventlog import read_events
from nbflow.service.store import SqliteJobs

from .conftest import gates, nbflow_command, open_gate, serve_log

pytestmark = pytest.mark.slow


def nbflow(*args, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nbflow_command(*args), capture_output=True, text=True, timeout=60,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def _job_state(db, job_id):
    return db.get(job_id).state


def test_kill_9_mid_job_then_a_restart_runs_it_to_its_end_exactly_once(serve, workflows,
                                                                       tmp_path):
    state = tmp_path / "state"
    first = serve(workflows["two_steps"], "--state-dir", state)
    wait_until(lambda: (state / "service.lock").read_text().startswith("pid"),
               what="the service up")
    [gate] = gates(tmp_path, 1)
    calls = tmp_path / "calls"
    out = nbflow("submit", "--state-dir", state, "-p", "n", "4", "-p", "calls", calls,
                 "-p", "gate", gate)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    db = SqliteJobs(state / "jobs.db")
    events = state / "jobs" / job_id / "events.jsonl"

    def second_running() -> bool:
        return any(e.get("task") == "second" and e.get("state") == "running"
                   for e in read_events(events))

    wait_until(second_running, timeout=30, what="the job's second task running")
    assert calls.read_text() == "first 4\n"
    # the cache writes in the background: first's result is durable once its file is there
    wait_until(lambda: entry_files(state / "jobs" / job_id / "cache"), what="first cached")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    assert db.get(job_id).state == "running"  # as the dead service left it

    second = serve(workflows["two_steps"], "--state-dir", state)
    open_gate(gate)  # the restarted job waits at the gate too: let it finish
    wait_until(lambda: db.get(job_id).done, timeout=60, what="the job's end")
    job = db.get(job_id)
    assert (job.state, job.attempts, job.results) == ("succeeded", 2, {"second": 50})
    assert calls.read_text() == "first 4\n"  # first was not recomputed: it came from the cache
    runs: dict[str, dict[str, str]] = {}
    for e in read_events(events):
        if e.get("event") == "task":
            runs.setdefault(e["run_id"], {})[e["task"]] = e["state"]
    assert list(runs.values()) == [{"first": "succeeded", "second": "running"},
                                   {"first": "cached", "second": "succeeded"}]
    assert "was running when the service stopped: queued again" in serve_log(tmp_path, 1)
    os.kill(second.pid, signal.SIGTERM)
    assert second.wait(30) == 0
    assert db.counts()["succeeded"] == 1 and len(db.jobs()) == 1
    db.close()


def test_submit_jobs_and_sigterm_from_the_command_line(serve, workflows, tmp_path):
    state = tmp_path / "state"
    proc = serve(workflows["two_steps"], "--state-dir", state, "--concurrency", "1")
    wait_until(lambda: (state / "service.lock").read_text().startswith("pid"),
               what="the service up")
    [gate] = gates(tmp_path, 1)
    calls = tmp_path / "calls"
    blocked = nbflow("submit", "--state-dir", state, "-p", "n", "1", "-p", "calls", calls,
                     "-p", "gate", gate).stdout.strip()
    waiting = nbflow("submit", "--state-dir", state, "-p", "n", "2", "-p", "calls",
                     calls).stdout.strip()
    bad = nbflow("submit", "--state-dir", state, "-p", "n", "two", "-p", "calls", calls)
    assert bad.returncode == 2
    assert bad.stderr.startswith("nbflow submit: ") and "'n'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    db = SqliteJobs(state / "jobs.db")
    wait_until(lambda: db.get(blocked).state == "running", what="the first job running")

    table = nbflow("jobs", "--state-dir", state)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "TRIGGER"]
    assert [line.split()[:3] for line in lines[1:]] == [[waiting, "queued", "submit"],
                                                        [blocked, "running", "submit"]]
    shown = json.loads(nbflow("jobs", "show", blocked, "--state-dir", state).stdout)
    assert shown["params"] == {"n": 1, "calls": str(calls), "gate": str(gate)}
    assert shown["state"] == "running" and "first" in shown["tasks"]

    unknown = nbflow("jobs", "show", "nope", "--state-dir", state)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2, "nbflow jobs: no job 'nope' in this state dir (see nbflow jobs)")
    assert nbflow("jobs", "cancel", waiting, "--state-dir", state).stdout.strip() == (
        f"job {waiting}: cancelled")
    again = nbflow("jobs", "cancel", waiting, "--state-dir", state)
    assert again.returncode == 2 and "already cancelled" in again.stderr

    # SIGTERM: the running job is stopped and queued again, the service exits 0
    os.kill(proc.pid, signal.SIGTERM)
    open_gate(gate)
    assert proc.wait(30) == 0
    assert db.get(blocked).state == "queued"
    log = serve_log(tmp_path)
    assert f"job {blocked} stopped with the service: queued again" in log
    assert log.rstrip().endswith("nbflow serve: stopped")
    assert nbflow("jobs", "retry", waiting, "--state-dir", state).stdout.strip() == (
        f"job {waiting}: queued")
    db.close()


def test_bad_input_is_one_line(serve, workflows, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    missing = nbflow("jobs", "--state-dir", tmp_path / "none")
    assert missing.returncode == 2 and "no service state in" in missing.stderr
    db = sqlite3.connect(state / "jobs.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    newer = nbflow("serve", workflows["served"], "--state-dir", state)
    assert newer.returncode == 2
    assert "written by a newer nbflow (job schema 99" in newer.stderr
    assert len(newer.stderr.strip().splitlines()) == 1
    unreadable = nbflow("serve", tmp_path / "missing.yaml")
    assert unreadable.returncode == 2 and unreadable.stderr.startswith("nbflow serve: ")


def _notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nbflow"),
                nbformat.v4.new_code_cell("n = 2  # how many", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("%%nbflow task doubled --export\ndoubled = n * 2"),
                nbformat.v4.new_code_cell("%nbflow run")]
    nbformat.write(nb, path)


def test_a_notebook_job_runs_through_papermill(serve, tmp_path):
    notebook = tmp_path / "served.ipynb"
    _notebook(notebook)
    proc = serve(notebook)  # the state dir: .nbflow beside the notebook
    state = tmp_path / ".nbflow"
    wait_until(lambda: (state / "service.lock").read_text().startswith("pid"),
               what="the service up")
    out = nbflow("submit", "-p", "n", "5", cwd=tmp_path)  # the default state dir: ./.nbflow
    assert out.returncode == 0, out.stderr
    db = SqliteJobs(state / "jobs.db")
    job_id = out.stdout.strip()
    wait_until(lambda: db.get(job_id).done, timeout=120, what="the notebook job")
    job = db.get(job_id)
    assert (job.state, job.results, job.error) == ("succeeded", {"doubled": 10}, None)
    assert job.tasks["doubled"]["state"] == "succeeded"
    output = state / "jobs" / job_id / "output.ipynb"
    assert "n = 5" in output.read_text()  # papermill's injected parameters
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    db.close()


def test_a_watched_folder_makes_one_job_per_file(serve, workflows, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "before.txt").write_text("12345")
    state = tmp_path / "state"
    serve(workflows["files"], "--state-dir", state, "--watch", inbox, "--pattern", "*.txt",
          "--stable", "0.2", "--existing", "--concurrency", "2")
    wait_until(lambda: (state / "service.lock").read_text().startswith("pid"),
               what="the service up")
    db = SqliteJobs(state / "jobs.db")
    wait_until(lambda: len(db.jobs()) == 1, timeout=30, what="a job for the existing file")
    (inbox / "skipped.csv").write_text("no")
    (inbox / "new.txt").write_text("abc")
    wait_until(lambda: len(db.jobs()) == 2 and all(j.done for j in db.jobs()), timeout=30,
               what="a job for the new file")
    by_file = {os.path.basename(j.params["path"]): j for j in db.jobs()}
    assert sorted(by_file) == ["before.txt", "new.txt"]
    assert by_file["before.txt"].results == {"length": 5}
    assert by_file["new.txt"].results == {"length": 3}
    assert {j.trigger for j in db.jobs()} == {"watch"}
    db.close()


def test_a_watched_folder_that_does_not_exist_is_one_line(workflows, tmp_path):
    out = nbflow("serve", workflows["files"], "--state-dir", tmp_path / "s", "--watch",
                 tmp_path / "nowhere")
    assert out.returncode == 2
    assert out.stderr.startswith("nbflow serve: ") and "nowhere" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _pid_in(path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not written yet, or being written
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_after_kill_9_a_notebook_jobs_old_process_is_stopped(serve, tmp_path):
    import nbformat

    notebook = tmp_path / "gated.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nbflow"),
                nbformat.v4.new_code_cell("gate = ''", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("%%nbflow task opened --export\n"
                                          "with open(gate) as f:\n    opened = f.read()"),
                nbformat.v4.new_code_cell("%nbflow run")]
    nbformat.write(nb, notebook)
    [gate] = gates(tmp_path, 1)
    state = tmp_path / "state"
    first = serve(notebook, "--state-dir", state)
    wait_until(lambda: (state / "service.lock").read_text().startswith("pid"),
               what="the service up")
    job_id = nbflow("submit", "--state-dir", state, "-p", "gate", gate).stdout.strip()
    child = state / "jobs" / job_id / "child.pid"
    old = wait_until(lambda: _pid_in(child), timeout=30, what="the job's nbflow run")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    assert _alive(old)  # the orphan goes on with the job

    serve(notebook, "--state-dir", state)
    wait_until(lambda: not _alive(old), timeout=60, what="the old nbflow run stopped")
    wait_until(lambda: _pid_in(child) not in (None, old), timeout=60,
               what="the new nbflow run")
    open_gate(gate, timeout=60)
    db = SqliteJobs(state / "jobs.db")
    wait_until(lambda: db.get(job_id).done, timeout=120, what="the job's end")
    job = db.get(job_id)
    assert (job.state, job.attempts, job.results) == ("succeeded", 2, {"opened": "go"})
    db.close()
