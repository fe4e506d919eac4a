"""Stopping command tasks at the edges: a process that exits right after a cancel
(``nbflow/childproc.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from tests.containers.conftest import leftover_processes

from nbflow import config


@pytest.fixture(autouse=True)
def _job_base(tmp_path: Path):
    with config.set(job_dir_base=str(tmp_path / "jobs")):
        yield


def _marker() -> str:
    return f"nbflow-stopping-{uuid.uuid4().hex[:12]}"


def _kill(marker: str) -> list[int]:
    left = leftover_processes(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def test_a_script_that_exits_right_after_a_cancel_leaves_no_command(tmp_path):
    """The thread that stops a cancelled command is a daemon; the interpreter's exit waits
    for its stop (``childproc.stop_all`` at exit) instead of cutting it short."""
    marker = _marker()
    script = textwrap.dedent(f"""
        import threading, nbflow as nf
        flow = nf.Flow("exit")
        flow.command("slow", "touch started; sleep 600 & wait # {marker}")
        run = flow.run(background=True, raise_on_failure=False)
        started = None
        while started is None:
            made = run.job.made
            started = made if made is not None and (made / "started").exists() else None
            threading.Event().wait(0.02)
        run.cancel()
        run.wait(30)
        print(run.status)
        """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path,
                              env={**os.environ, "NBFLOW_JOB_DIR_BASE": str(tmp_path / "jobs")})
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "cancelled"
        assert leftover_processes(marker) == []
    finally:
        _kill(marker)
