"""``--cluster``: a sweep's jobs on dask workers, and a run's tasks on a dask cluster.

The cluster is started from the command line on 127.0.0.1 and stopped by pid.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from conftest import wait_until

from .conftest import EXAMPLE, env, events, nbflow

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sweep_and_run_on_a_dask_cluster(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_until(lambda: procs[0].poll() is not None or _accepts(port), 60)
        assert procs[0].poll() is None, "the dask scheduler exited"
        procs.append(subprocess.Popen(
            [*dask, "worker", address, "--nworkers", "1", "--nthreads", "2", "--host",
             "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--death-timeout", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        (tmp_path / "grid.yaml").write_text("jobs:\n  - {noise: 0.5}\n  - {noise: 10.0}\n")
        sweep = nbflow("sweep", EXAMPLE, "--grid", "grid.yaml", "--out-dir", "out",
                       "--cluster", address, cwd=tmp_path, timeout=240)
        assert sweep.returncode == 1, sweep.stderr
        data = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert [j["status"] for j in data] == ["succeeded", "failed"]
        assert data[0]["exports"]["score"] > 0.9

        run = nbflow("run", EXAMPLE, "-o", "out.ipynb", "--cluster", address,
                     "--log-events", "ev.jsonl", cwd=tmp_path, env=env(), timeout=180)
        assert run.returncode == 0, run.stderr
        where = {e["task"]: e["where"] for e in events(tmp_path / "ev.jsonl")
                 if e["event"] == "task" and e["state"] == "succeeded"}
        assert len(where) == 7  # every task ran on the cluster's one worker
        assert len(set(where.values())) == 1
        assert next(iter(where.values())).startswith("tcp://127.0.0.1:")
    finally:
        for proc in reversed(procs):  # workers first, then the scheduler
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
