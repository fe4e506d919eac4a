"""Ctrl-C on ``nbflow run`` while a command task runs: the command stops, nothing is left.

A terminal's Ctrl-C sends SIGINT to its foreground process group. The ``nbflow``
process runs here in a group of its own (``start_new_session``) and gets SIGINT
through ``os.killpg``, as from a terminal. A command task runs in a process group
of its own (``nbflow/childproc.py``), which a terminal's SIGINT does not reach: nbflow
itself must stop it, through the run's cancel. The command's processes carry a
marker string in their command lines; afterwards none may remain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
from conftest import wait_until
from tests.containers.conftest import leftover_processes

from .conftest import env

#: seconds a run may take to stop after SIGINT (a command gets SIGTERM, SIGKILL 2 s later)
STOP_TIMEOUT = 60.0


def _marker() -> str:
    return f"nbflow-ctrlc-{uuid.uuid4().hex[:12]}"


def _sleeper(started: Path, marker: str) -> str:
    """A sh line: a Python child (in the background, so the group has two processes)
    that touches ``started`` and waits to be killed; both carry ``marker`` in their command lines."""
    code = "import signal, sys; open(sys.argv[1], 'w').close(); signal.pause()"
    return f"{sys.executable} -c \"{code}\" {started} {marker} & wait"


def _interrupt(args: list[str], cwd: Path, started: Path, marker: str,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``nbflow ARGS`` in a session of its own, Ctrl-C it once ``started`` exists, and
    return how it ended; kill what is left (by pid) if the test fails."""
    out, err = cwd / "cli.out", cwd / "cli.err"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "nbflow", *args], cwd=cwd,
                                env={**env(), "NBFLOW_JOB_DIR_BASE": str(cwd / "jobs"),
                                     **(extra_env or {})},
                                stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or started.exists(), 120,
                   "the command task started")
        assert proc.poll() is None, f"nbflow ended before the command started:\n{err.read_text()}"
        assert leftover_processes(marker), "the command's processes are not there"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
        code = proc.wait(STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if sys.exc_info()[0] is not None:  # the test fails: spare the next ones
            _kill_marked(marker)
    return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())


def _kill_marked(marker: str) -> list[int]:
    """SIGKILL the processes with ``marker`` (by pid); the pids that were there."""
    left = leftover_processes(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _no_process_left(marker: str) -> None:
    """No process with ``marker`` runs once nbflow ended (the run stopped them before
    it ended; any left are killed, so the next tests run clean, and fail the test)."""
    left = _kill_marked(marker)
    assert not left, f"processes of the command left after nbflow ended: {left}"


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_ctrl_c_on_nbflow_run_of_a_spec_stops_its_command(tmp_path, executor):
    marker, started = _marker(), tmp_path / "started"
    spec = {"nbflow": 1, "name": "ctrlc",
            "tasks": {"slow": {"command": _sleeper(started, marker)}}}
    (tmp_path / "flow.yaml").write_text(json.dumps(spec))
    done = _interrupt(["run", "flow.yaml"], tmp_path, started, marker,
                      {"NBFLOW_EXECUTOR": executor})
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "interrupted" in done.stderr
    _no_process_left(marker)


def test_ctrl_c_stops_a_command_that_ignores_sigterm_in_a_process_worker(tmp_path):
    """The terminal's SIGINT reaches the process workers too (same process group), and the
    cancelled run terminates them; a command that ignores SIGTERM is still stopped (by
    SIGKILL, after the grace)."""
    marker, started = _marker(), tmp_path / "started"
    spec = {"nbflow": 1, "name": "ctrlc",
            "tasks": {"slow": {"command": "trap '' TERM; " + _sleeper(started, marker)}}}
    (tmp_path / "flow.yaml").write_text(json.dumps(spec))
    done = _interrupt(["run", "flow.yaml"], tmp_path, started, marker,
                      {"NBFLOW_EXECUTOR": "processes"})
    assert done.returncode == 130, (done.returncode, done.stderr)
    wait_until(lambda: not leftover_processes(marker), 15, f"no process with {marker}")


def _command_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nbflow"),
        nbformat.v4.new_code_cell(f"%%nbflow command slow\n{body}"),
        nbformat.v4.new_code_cell("%nbflow run"),
    ]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_ctrl_c_on_nbflow_run_of_a_notebook_stops_its_command(tmp_path):
    marker, started = _marker(), tmp_path / "started"
    _command_notebook(tmp_path / "flow.ipynb", _sleeper(started, marker))
    done = _interrupt(["run", "flow.ipynb", "-o", "out.ipynb"], tmp_path, started, marker)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "interrupted" in done.stderr
    _no_process_left(marker)
