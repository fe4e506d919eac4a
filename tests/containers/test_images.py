"""The container fixtures themselves, for real: the engine, the two images, the leftover checks."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys

from .conftest import (
    SOURCE,
    container_names,
    engine_run,
    leftover_containers,
    leftover_processes,
    remove_containers,
    wait_until,
)


def test_busybox_image_runs_a_command(container_engine: str, busybox_image: str) -> None:
    done = engine_run(container_engine, "run", "--rm", "--network=none", busybox_image,
                      "echo", "hi")
    assert done.stdout == "hi\n"


def test_python_image_has_the_current_nbflow_and_the_tests_python(
        container_engine: str, python_image: str) -> None:
    code = ("import hashlib, os, sys, cloudpickle, nbflow; print(sys.version_info[:2]); "
            "print(nbflow.__file__); "
            "print(hashlib.sha256(open(nbflow.__file__, 'rb').read()).hexdigest()); "
            "print(any('__pycache__' in dirs for _, dirs, _ in os.walk('/opt/nbflow')))")
    done = engine_run(container_engine, "run", "--rm", "--network=none", python_image,
                      "python3", "-B", "-c", code)
    version, where, digest, pycache = done.stdout.splitlines()
    # functions travel by value (cloudpickle): the same minor version on both sides
    assert version == str(sys.version_info[:2]) == "(3, 11)"
    assert where == "/opt/nbflow/nbflow/__init__.py"
    assert digest == hashlib.sha256((SOURCE / "__init__.py").read_bytes()).hexdigest()
    assert pycache == "False"


def test_leftover_checks_see_a_container_left_running(container_engine: str,
                                                      busybox_image: str) -> None:
    name = "nbflow-leftover-test"
    marker = f"nbflow-marker-{secrets.token_hex(4)}"
    remove_containers(container_engine, [name])  # from an interrupted session
    before = container_names(container_engine)
    engine_run(container_engine, "run", "-d", "--rm", "--network=none", "--name", name,
               busybox_image, "sh", "-c", f"sleep 30; : {marker}")
    try:
        assert leftover_containers(container_engine, before, wait=0) == [name]
        # the container's shell, seen from the host
        assert wait_until(lambda: leftover_processes(marker), what=f"a process with {marker}")
    finally:
        remove_containers(container_engine, [name])
    assert leftover_containers(container_engine, before) == []
    wait_until(lambda: not leftover_processes(marker), what=f"no process with {marker}")


def test_leftover_processes_finds_a_host_process_by_its_command_line() -> None:
    marker = f"nbflow-marker-{secrets.token_hex(4)}"
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", marker],
                             stdin=subprocess.PIPE)
    try:
        wait_until(lambda: leftover_processes(marker) == [child.pid], what=f"process {child.pid}")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    assert leftover_processes(marker) == []
