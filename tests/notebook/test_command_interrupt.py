"""A kernel interrupt during a blocking ``%nbflow run`` stops a running command task.

A real IPython kernel through nbclient. The command runs in a process group of its
own (``nbflow/childproc.py``), which the kernel's SIGINT does not reach: the
interrupt cancels the run, and the cancel stops the group. Its processes carry a
marker string in their command lines; afterwards none may remain.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from tests.containers.conftest import leftover_processes

from .conftest import errors, text, wait_until

pytestmark = pytest.mark.slow


def sleeper(started: Path, marker: str) -> str:
    """A sh line whose background Python child touches ``started`` and waits to be killed; both carry
    ``marker`` in their command lines."""
    code = "import signal, sys; open(sys.argv[1], 'w').close(); signal.pause()"
    return f"{sys.executable} -c \"{code}\" {started} {marker} & wait"


def job_base(k, tmp_path: Path) -> None:
    """The kernel's runs make their job directories under ``tmp_path/jobs``."""
    k(f"import os\nos.environ['NBFLOW_JOB_DIR_BASE'] = {str(tmp_path / 'jobs')!r}")


def assert_cancelled(k, cell) -> None:
    [err] = errors(cell)
    assert err.ename == "KeyboardInterrupt"
    assert "run cancelled by a kernel interrupt" in text(cell)
    states = text(k("print(dict(__import__('nbflow').notebook_flow().last_run.states))"))
    assert eval(states) == {"slow": "cancelled"}


def test_interrupting_the_kernel_stops_a_command_cell(k, tmp_path):
    marker, started = f"nbflow-interrupt-{uuid.uuid4().hex[:12]}", tmp_path / "started"
    job_base(k, tmp_path)
    k(f"%%nbflow command slow\n{sleeper(started, marker)}")
    # once the command runs: sh and its Python child, both found by the marker
    interrupter = k.interrupt_when(lambda: started.exists() and len(leftover_processes(marker)) == 2)
    try:
        cell = k("%nbflow run")
        interrupter.join()
        assert_cancelled(k, cell)
        wait_until(lambda: not leftover_processes(marker), 30, f"no process with {marker}")
        assert text(k("print(1 + 1)")) == "2\n"  # the kernel is usable afterwards
    finally:
        kill(marker)


def test_interrupting_the_kernel_stops_a_flow_command(k, tmp_path):
    """The same with ``flow.command`` in a code cell, run by ``%nbflow run``."""
    marker, started = f"nbflow-interrupt-{uuid.uuid4().hex[:12]}", tmp_path / "started"
    job_base(k, tmp_path)
    k(f"import nbflow as nf\nnf.notebook_flow().command('slow', {sleeper(started, marker)!r})")
    interrupter = k.interrupt_when(lambda: started.exists() and len(leftover_processes(marker)) == 2)
    try:
        cell = k("%nbflow run")
        interrupter.join()
        assert_cancelled(k, cell)
        wait_until(lambda: not leftover_processes(marker), 30, f"no process with {marker}")
    finally:
        kill(marker)


def kill(marker: str) -> None:
    """SIGKILL what is left with ``marker`` (by pid), so a failed test spares the next."""
    import os
    import signal

    for pid in leftover_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
