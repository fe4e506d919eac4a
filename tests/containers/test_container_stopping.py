"""Stopping a command task that runs in a container, as a user does: a kernel interrupt
during ``%nbflow run``, and Ctrl-C on ``nbflow run``.

The container's ``sh`` (and the engine's client, which runs it) carry a marker
string in their command lines; afterwards no process with it may remain, and no
container named ``nbflow-...`` (checked here, and by the autouse
``no_leftover_containers``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.batch.conftest import env
from tests.containers.conftest import (
    container_names,
    leftover_containers,
    leftover_processes,
    wait_until,
)
from tests.notebook.conftest import Kernel, errors, text

pytestmark = pytest.mark.slow


def _marker() -> str:
    return f"nbflow-box-stop-{uuid.uuid4().hex[:12]}"


def _script(marker: str) -> str:
    """busybox sh: note that it started (in the job directory), then sleep in the
    background and wait; the marker is a comment in sh's command line."""
    return f"touch started; sleep 600 & wait # {marker}"


def _started(jobs: Path) -> bool:
    return any(jobs.glob("*/started"))


def _kill(marker: str) -> None:
    for pid in leftover_processes(marker):  # a failed test spares the next ones
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def k(container_engine: str, tmp_path: Path) -> Iterator[Kernel]:
    """A kernel with nbflow loaded, this engine, and job directories under tmp_path/jobs."""
    kernel = Kernel()
    try:
        kernel(f"%load_ext nbflow\nimport os\n"
               f"os.environ['NBFLOW_JOB_DIR_BASE'] = {str(tmp_path / 'jobs')!r}\n"
               f"os.environ['NBFLOW_CONTAINER_ENGINE'] = {container_engine!r}")
        yield kernel
    finally:
        kernel.close()


def test_a_kernel_interrupt_stops_a_command_cell_in_a_container(k, tmp_path, container_engine,
                                                               busybox_image):
    marker, jobs = _marker(), tmp_path / "jobs"
    before = container_names(container_engine)
    k(f"%%nbflow command slow --image {busybox_image}\n{_script(marker)}")
    interrupter = k.interrupt_when(lambda: _started(jobs) and leftover_processes(marker), 120)
    try:
        cell = k("%nbflow run")
        interrupter.join()
        [err] = errors(cell)
        assert err.ename == "KeyboardInterrupt"
        assert "run cancelled by a kernel interrupt" in text(cell)
        wait_until(lambda: not leftover_processes(marker), 60, f"no process with {marker}")
        assert leftover_containers(container_engine, before) == []
    finally:
        _kill(marker)


def test_ctrl_c_on_nbflow_run_stops_a_command_in_a_container(tmp_path, container_engine,
                                                             busybox_image):
    marker, jobs = _marker(), tmp_path / "jobs"
    before = container_names(container_engine)
    spec = {"nbflow": 1, "name": "boxed",
            "tasks": {"slow": {"command": _script(marker), "image": busybox_image}}}
    (tmp_path / "flow.yaml").write_text(json.dumps(spec))
    with (tmp_path / "cli.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "run", "flow.yaml"], cwd=tmp_path,
            env={**env(), "NBFLOW_JOB_DIR_BASE": str(jobs),
                 "NBFLOW_CONTAINER_ENGINE": container_engine},
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or (_started(jobs) and
                                                       leftover_processes(marker)),
                   120, "the container started")
        assert proc.poll() is None, (tmp_path / "cli.err").read_text()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
        assert proc.wait(60) == 130
        assert "interrupted" in (tmp_path / "cli.err").read_text()
        # nbflow ended after the stop: nothing of the command runs any more
        assert leftover_processes(marker) == []
        assert leftover_containers(container_engine, before) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _kill(marker)


def test_ctrl_c_on_nbflow_run_of_a_notebook_stops_a_command_in_a_container(
        tmp_path, container_engine, busybox_image):
    import nbformat

    marker, jobs = _marker(), tmp_path / "jobs"
    before = container_names(container_engine)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nbflow"),
                nbformat.v4.new_code_cell(f"%%nbflow command slow --image {busybox_image}\n"
                                          f"{_script(marker)}"),
                nbformat.v4.new_code_cell("%nbflow run")]
    nbformat.write(nb, tmp_path / "flow.ipynb")
    with (tmp_path / "cli.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "run", "flow.ipynb", "-o", "out.ipynb"],
            cwd=tmp_path, env={**env(), "NBFLOW_JOB_DIR_BASE": str(jobs),
                               "NBFLOW_CONTAINER_ENGINE": container_engine},
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or (_started(jobs) and
                                                       leftover_processes(marker)),
                   120, "the container started")
        assert proc.poll() is None, (tmp_path / "cli.err").read_text()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 130
        assert "interrupted" in (tmp_path / "cli.err").read_text()
        assert leftover_processes(marker) == []
        assert leftover_containers(container_engine, before) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _kill(marker)
