"""Command tasks on dask workers: the job directory, ``resources=`` and a cancel.

Against ``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1 (the
``cli_cluster`` fixture; one worker has ``special=1``), and nbflow's in-process
LocalCluster (``local``). The workers run on this machine, so the job directory
base (a temporary directory) is storage they share, as the docs require.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import cloudpickle
import psutil
import pytest
from dask_clusters import cli_cluster_fixture  # noqa: F401  (the `cli_cluster` fixture)
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)
from dask_clusters import wait_until

import nbflow as nf
from nbflow import config

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def _job_base(tmp_path: Path):
    with config.set(job_dir_base=str(tmp_path / "jobs")):
        yield


def _marked(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (read from /proc)."""
    wanted = marker.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and wanted in cmdline.replace(b"\0", b" "):
            pids.append(int(entry))
    return pids


def _sleeper(started: Path, marker: str) -> str:
    """A sh line whose background Python child touches ``started``, then waits to be killed; both
    carry ``marker`` in their command lines."""
    code = "import signal, sys; open(sys.argv[1], 'w').close(); signal.pause()"
    return f"{sys.executable} -c \"{code}\" {started} {marker} & wait"


def _special_workers(address: str) -> list[str]:
    from distributed import Client

    with Client(address, timeout=10) as client:
        info = client.scheduler_info()["workers"]
    return [a for a, w in info.items() if w.get("resources", {}).get("special")]


def test_a_command_and_a_python_task_share_the_job_directory_on_dask(cli_cluster):
    flow = nf.Flow("dask-cmd")
    flow.command("write", "echo from-command > note.txt; echo $NBFLOW_JOB_DIR",
                 outputs={"note": "note.txt"}, resources={"special": 1})

    @flow.task
    def read(write: nf.CommandResult) -> tuple[str, str, int]:
        here = nf.job_dir()
        return str(here), (here / "note.txt").read_text(), os.getpid()

    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address))
    here, text, pid = run.results["read"]
    write = run.results["write"]
    assert run.job.made is not None
    assert here == str(run.job.made) == write.stdout.strip()
    assert write.path("note").parent == run.job.made
    assert text == "from-command\n"
    assert pid != os.getpid()  # the Python task ran on a worker
    assert run.task("write").where in _special_workers(cli_cluster.address)
    assert run.task("read").where.startswith("tcp://127.0.0.1:")


def _cancel_stops_the_command(address: str | None, tmp_path: Path) -> None:
    marker, started = f"nbflow-dask-cancel-{uuid.uuid4().hex[:12]}", tmp_path / "started"
    flow = nf.Flow("dask-cancel")
    flow.command("slow", _sleeper(started, marker))
    executor = nf.DaskExecutor(address) if address else nf.DaskExecutor()
    run = flow.run(executor=executor, background=True, raise_on_failure=False)
    try:
        wait_until(lambda: run.done or started.exists(), 60, "the command started")
        assert not run.done, run.failures
        assert len(_marked(marker)) == 2  # sh and its Python child
        run.cancel()
        run.wait(60)
        assert run.status == "cancelled"
        # the worker cannot stop a task; the command asks nf.cancelled(), which turns
        # True once the worker marks the task cancelled (dask_worker._still_wanted)
        wait_until(lambda: not _marked(marker), 30, f"no process with {marker}")
    finally:
        for pid in _marked(marker):  # the test failed: spare the next ones
            os.kill(pid, 9)


def test_cancelling_a_run_stops_its_command_on_a_dask_worker_process(cli_cluster, tmp_path):
    _cancel_stops_the_command(cli_cluster.address, tmp_path)


def test_cancelling_a_run_stops_its_command_on_the_local_cluster(local, tmp_path):
    _cancel_stops_the_command(None, tmp_path)


def test_ctrl_c_on_nbflow_run_with_a_cluster_stops_the_command_on_its_worker(cli_cluster,
                                                                              tmp_path):
    """``nbflow run flow.yaml --cluster ADDRESS``, SIGINT to its process group (a terminal's
    Ctrl-C): the run is cancelled, the worker stops the command, the CLI exits 130."""
    import json
    import signal
    import subprocess

    from tests.batch.conftest import env

    marker, started = f"nbflow-dask-ctrlc-{uuid.uuid4().hex[:12]}", tmp_path / "started"
    spec = {"nbflow": 1, "name": "dask-ctrlc",
            "tasks": {"slow": {"command": _sleeper(started, marker)}}}
    (tmp_path / "flow.yaml").write_text(json.dumps(spec))
    with (tmp_path / "cli.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "run", "flow.yaml", "--cluster", cli_cluster.address],
            cwd=tmp_path, env={**env(), "NBFLOW_JOB_DIR_BASE": str(tmp_path / "jobs")},
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or started.exists(), 60, "the command started")
        assert proc.poll() is None, (tmp_path / "cli.err").read_text()
        pids = _marked(marker)
        assert len(pids) == 2
        workers = {p.pid for p in cli_cluster.worker_processes()}
        assert {psutil.Process(pid).ppid() for pid in pids} & workers  # sh's parent: a worker
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 130
        assert "interrupted" in (tmp_path / "cli.err").read_text()
        # the worker stops it once the scheduler tells it the task is no longer wanted
        wait_until(lambda: not _marked(marker), 30, f"no process with {marker}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in _marked(marker):
            os.kill(pid, 9)


def test_a_timeout_stops_a_command_on_a_dask_worker(cli_cluster, tmp_path):
    marker, started = f"nbflow-dask-timeout-{uuid.uuid4().hex[:12]}", tmp_path / "started"
    flow = nf.Flow("dask-timeout")
    flow.command("slow", _sleeper(started, marker), timeout=2)
    try:
        run = flow.run(executor=nf.DaskExecutor(cli_cluster.address), raise_on_failure=False)
        assert started.exists()
        (failed,) = run.failures
        assert failed.task == "slow" and "TaskTimeoutError" in failed.traceback
        wait_until(lambda: not _marked(marker), 30, f"no process with {marker}")
    finally:
        for pid in _marked(marker):
            os.kill(pid, 9)
