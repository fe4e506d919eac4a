"""Fixtures for the container tests: a working Podman and nbflow's local images.

No registry is reachable, so the images are built on this machine by
``scripts/containers.sh`` (``bash scripts/test.sh`` runs it first):

- ``localhost/nbflow-busybox:latest``: busybox and its applets (``sh``, ``echo``, ``cat``...);
- ``localhost/nbflow-python-base:3.11``: Debian's python3 with nbflow's dependencies. Its
  Python is the tests' own minor version, as functions travel by value (cloudpickle).

:func:`python_image` adds the current ``nbflow/`` source tree to the second one, once per
session. Without a working engine the tests that need one skip, except on CI (``CI`` set),
where they fail: there the set-up must have worked.

Only Podman counts: the images live in its storage, and a ``docker`` client with no engine
behind it (as on some machines) must not pass for one.

After every test that has the engine, :func:`no_leftover_containers` fails it if a container
named ``nbflow-...`` (the runtime's names) is left, and removes it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import wait_until  # the tests' one poller (tests/conftest.py)

BUSYBOX_IMAGE = "localhost/nbflow-busybox:latest"
PYTHON_BASE_IMAGE = "localhost/nbflow-python-base:3.11"
PYTHON_IMAGE = "localhost/nbflow-python:test"
#: the runtime's containers are named nbflow-<task>-<random>
CONTAINER_PREFIX = "nbflow-"
#: seconds a container of the test gets to go away after it (``--rm`` removes in the background)
CONTAINER_WAIT = 15.0
#: seconds for an engine command of the set-up (a build, an image check)
ENGINE_TIMEOUT = 120.0

SOURCE = Path(__file__).resolve().parents[2] / "nbflow"
SETUP = "bash scripts/containers.sh"

__all__ = [
    "BUSYBOX_IMAGE",
    "PYTHON_IMAGE",
    "container_names",
    "leftover_containers",
    "leftover_processes",
    "wait_until",
]


def on_ci() -> bool:
    """True on CI (``CI`` set, as ``scripts/test.sh`` reads it): containers must work there."""
    return bool(os.environ.get("CI"))


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it on CI: the container tests must run there."""
    if on_ci():
        pytest.fail(f"{reason}. CI is set, so the container tests must run: "
                    f"`{SETUP} --require` sets the engine and the images up", pytrace=False)
    pytest.skip(f"{reason} (`{SETUP}` sets the engine and the images up)")


def engine_run(engine: str, *args: str, timeout: float = ENGINE_TIMEOUT,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """``engine ARGS...``, its output captured; fails the test with its stderr when ``check``."""
    done = subprocess.run([engine, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"{engine} {' '.join(args)} exited with {done.returncode}:\n"
                    f"{done.stderr.strip()}", pytrace=False)
    return done


@functools.cache
def _probe() -> tuple[str | None, str]:
    """(podman's path, "") when it runs the busybox image, else (None, why not). Once a session."""
    path = shutil.which("podman")
    if path is None:
        return None, "podman is not installed"
    try:
        info = engine_run(path, "info", check=False, timeout=60)
        if info.returncode != 0:
            return None, f"podman does not work here (podman info): {info.stderr.strip()}"
        if engine_run(path, "image", "exists", BUSYBOX_IMAGE, check=False).returncode != 0:
            return None, f"podman has no image {BUSYBOX_IMAGE}"
        run = engine_run(path, "run", "--rm", "--network=none", BUSYBOX_IMAGE, "true",
                         check=False, timeout=60)
    except subprocess.TimeoutExpired as e:
        return None, f"podman does not answer: {' '.join(map(str, e.cmd))} took over {e.timeout}s"
    if run.returncode != 0:
        return None, f"podman cannot run a container ({BUSYBOX_IMAGE} true): {run.stderr.strip()}"
    return path, ""


@pytest.fixture(scope="session")
def container_engine() -> str:
    """The path of a Podman that runs containers (checked with ``podman run ... true``).

    Skips the test when there is none, and fails it on CI.
    """
    path, why = _probe()
    if path is None:
        _unavailable(why)
    return path


@pytest.fixture(scope="session")
def busybox_image(container_engine: str) -> str:
    """``localhost/nbflow-busybox:latest``: ``sh`` and busybox's applets, nothing else."""
    exists = engine_run(container_engine, "image", "exists", BUSYBOX_IMAGE, check=False)
    assert exists.returncode == 0, f"no image {BUSYBOX_IMAGE}: run `{SETUP}`"
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def python_image(container_engine: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``localhost/nbflow-python:test``: the Python base image with the current ``nbflow/``
    in ``/opt/nbflow/nbflow`` (``PYTHONPATH=/opt/nbflow``), built afresh each session."""
    exists = engine_run(container_engine, "image", "exists", PYTHON_BASE_IMAGE, check=False)
    if exists.returncode != 0:
        _unavailable(f"podman has no image {PYTHON_BASE_IMAGE}")
    context = tmp_path_factory.mktemp("python-image")
    shutil.copytree(SOURCE, context / "nbflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (context / "Containerfile").write_text(
        f"FROM {PYTHON_BASE_IMAGE}\n"
        "COPY nbflow /opt/nbflow/nbflow\n"
        "ENV PYTHONPATH=/opt/nbflow\n",
        encoding="utf-8")
    old = _image_id(container_engine, PYTHON_IMAGE)
    engine_run(container_engine, "build", "--quiet", "--pull=never", "--network=none",
               "-t", PYTHON_IMAGE, "-f", str(context / "Containerfile"), str(context))
    new = _image_id(container_engine, PYTHON_IMAGE)
    if old and old != new:  # the last session's, untagged now (kept while a container uses it)
        engine_run(container_engine, "rmi", old, check=False)
    return PYTHON_IMAGE


def _image_id(engine: str, image: str) -> str:
    done = engine_run(engine, "image", "inspect", "--format", "{{.Id}}", image, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


# -- what a test leaves behind ------------------------------------------------------------------


def container_names(engine: str) -> set[str]:
    """The names of all containers, running or not (``podman ps -a``)."""
    done = engine_run(engine, "ps", "-a", "--format", "{{.Names}}")
    return {name for name in done.stdout.split() if name}


def leftover_containers(engine: str, before: set[str], wait: float = CONTAINER_WAIT) -> list[str]:
    """The containers named ``nbflow-...`` that are not in ``before`` and still exist after up
    to ``wait`` seconds (a container run with ``--rm`` goes away shortly after it ends)."""
    def left() -> list[str]:
        return sorted(n for n in container_names(engine) - before
                      if n.startswith(CONTAINER_PREFIX))

    try:
        wait_until(lambda: not left(), timeout=wait, what="no container nbflow-... left",
                   interval=0.2)
    except AssertionError:
        pass
    return left()


def remove_containers(engine: str, names: list[str]) -> None:
    """``podman rm -f NAMES`` (those already gone are no error)."""
    if names:
        engine_run(engine, "rm", "-f", "--ignore", "--time=0", *names, check=False)


@pytest.fixture(autouse=True)
def no_leftover_containers() -> Iterator[None]:
    """Fail a test that leaves a container named ``nbflow-...`` behind (and remove it).

    Only where the engine works; the other tests of this directory are left alone.
    """
    engine, _ = _probe()
    if engine is None:
        yield
        return
    before = container_names(engine)
    yield
    left = leftover_containers(engine, before)
    if left:
        remove_containers(engine, left)
        pytest.fail(f"containers left after the test (now removed): {', '.join(left)}",
                    pytrace=False)


def leftover_processes(marker: str) -> list[int]:
    """The pids of the live processes whose command line contains ``marker`` (any user's,
    in a container or not: read from ``/proc``), this process excepted."""
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
        except (OSError, IndexError):  # gone meanwhile
            continue
        if state != b"Z" and wanted in cmdline.replace(b"\0", b" "):
            pids.append(int(entry))
    return sorted(pids)
