"""Running a task in a container image with Podman or Docker (``image=``).

The engine is the ``container_engine`` setting: ``"auto"`` takes Podman, else
Docker, whichever works here (a Docker client with no daemon does not count), or
a name or path. A task's container:

- mounts the run's job directory, and every input that is an existing absolute
  path (read-only), at the same paths, and works in the job directory;
- gets the task's environment (``env=`` values and ``NBFLOW_JOB_DIR``);
- runs as the calling user (``--user uid:gid``; rootless Podman also keeps the
  user's id), so the files it writes are the user's;
- is named ``nbflow-<task>-<random>``, removed when it ends (``--rm``), and killed
  and removed when its task is cancelled or times out (see ``childproc.py``).

Before the first run of an image, :func:`check_image` makes sure the image is
there (pulling it if it is not), so a wrong name fails with a clear message.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import childproc
from .errors import ContainerError

__all__ = ["Container", "check_image", "engine", "forget_checks", "input_paths", "preflight"]

#: engines tried, in order, for ``container_engine = "auto"``
AUTO_ENGINES = ("podman", "docker")
#: seconds an engine's ``version`` or ``image inspect`` may take
PROBE_TIMEOUT = 30.0
#: seconds a ``pull`` of a missing image may take
PULL_TIMEOUT = 300.0


class _Checks:
    """What this process found out already: the engine per setting, the images present."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engines: dict[str, str] = {}
        self.images: set[tuple[str, str]] = set()


_checks = _Checks()


def forget_checks() -> None:
    """Forget the engines and images found so far (for tests, and after installing one)."""
    with _checks.lock:
        _checks.engines.clear()
        _checks.images.clear()


def engine(task: str, setting: str = "auto") -> str:
    """The path of the container engine to use; :class:`ContainerError` when none works."""
    with _checks.lock:
        known = _checks.engines.get(setting)
    if known is not None:
        return known
    names = AUTO_ENGINES if setting == "auto" else (setting,)
    problems: list[str] = []
    for name in names:
        path = shutil.which(name)
        if path is None:
            problems.append(f"{name}: not found on PATH")
            continue
        broken = _probe(path)
        if broken is None:
            with _checks.lock:
                _checks.engines[setting] = path
            return path
        problems.append(f"{name} ({path}) does not work: {broken}")
    raise ContainerError(
        task, "no container engine works here (" + "; ".join(problems) + "). Install Podman "
        "(apt-get install podman), start Docker's daemon, or set the container_engine setting "
        "(NBFLOW_CONTAINER_ENGINE) to an engine that works.")


def _probe(path: str) -> str | None:
    """None if the engine answers ``version``, else why not (a client with no daemon fails)."""
    try:
        done = subprocess.run([path, "version"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return _last_line(done.stderr) or f"'version' exited with code {done.returncode}"


def check_image(task: str, engine_path: str, image: str) -> None:
    """Make sure ``image`` is present (pull it if not); :class:`ContainerError` if it cannot be."""
    with _checks.lock:
        if (engine_path, image) in _checks.images:
            return
    if _run_quietly([engine_path, "image", "inspect", "--format", "{{.Id}}", image]) is not None:
        pulled = _run_quietly([engine_path, "pull", "-q", image], timeout=PULL_TIMEOUT)
        if pulled is not None:
            raise ContainerError(
                task, f"image {image!r} does not exist here and could not be pulled ({pulled}). "
                "Check the name, or build the image locally (podman build / podman import); "
                f"`{Path(engine_path).name} images` lists the images there are.")
    with _checks.lock:
        _checks.images.add((engine_path, image))


#: executors whose tasks run on this machine, where an image can be checked before a run
LOCAL_EXECUTORS = ("inline", "threads", "processes")


def preflight(tasks: Iterable[Any], run_executor: str, setting: str) -> None:
    """Before a run: check the engine and the images of the tasks (each a ``Task``) that
    will run on this machine, so a wrong image fails before anything runs. Tasks sent to
    dask are checked where they run (the workers may have an engine this machine has not).
    """
    for task in tasks:
        image = task.options.image
        if image is None:
            continue
        chosen = task.options.executor
        where = run_executor if chosen is None else getattr(chosen, "name", chosen)
        if where in LOCAL_EXECUTORS:
            check_image(task.name, engine(task.name, setting), image)


def _run_quietly(argv: Sequence[str], timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if ``argv`` succeeds, else the last line of what it said."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return _last_line(done.stderr) or f"exit code {done.returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def input_paths(values: Mapping[str, Any]) -> list[Path]:
    """The inputs that name existing files or directories by absolute path, to mount.

    Looks at path and string values, the output files of upstream commands, and the
    items of list inputs; skips top-level directories like ``/usr`` (mounting those
    would hide the image's own).
    """
    from .commands import CommandResult  # (commands imports this module)

    found: dict[str, Path] = {}

    def visit(value: Any, depth: int) -> None:
        if isinstance(value, CommandResult):
            for path in value.outputs.values():
                visit(path, depth)
        elif isinstance(value, (str, os.PathLike)):
            text = os.fspath(value)
            if isinstance(text, str) and text.startswith("/") and "\n" not in text:
                path = Path(os.path.normpath(text))
                if len(path.parts) > 2 and path.exists():
                    found.setdefault(str(path), path)
        elif isinstance(value, (list, tuple)) and depth < 2:
            for item in value[:1000]:
                visit(item, depth + 1)

    for value in values.values():
        visit(value, 0)
    return list(found.values())


class Container:
    """One task's container: ``run`` it with an argument list, like a child process."""

    def __init__(self, task: str, image: str, job: Any) -> None:
        self.task = task
        self.image = image
        self.job = job
        self.engine = engine(task, getattr(job, "engine", "auto"))
        self.name = f"nbflow-{_safe(task)}-{secrets.token_hex(4)}"

    def run(self, argv: Sequence[str], *, env: Mapping[str, str], mounts: Iterable[Path] = (),
            stdin: bytes | None = None, timeout: float | None = None,
            cwd: Path | None = None) -> childproc.ChildResult:
        """Run ``argv`` in the image (checked first) until it ends, is cancelled or times
        out, in ``cwd`` (a folder of the job directory; the job directory itself by default)."""
        check_image(self.task, self.engine, self.image)
        where = self.job.path()
        work = where if cwd is None else cwd
        return childproc.run_child(
            self.task, self.command(argv, where, work, env, mounts, stdin is not None),
            cwd=where, env=dict(os.environ), stdin=stdin, timeout=timeout, on_stop=self.remove)

    def command(self, argv: Sequence[str], where: Path, work: Path, env: Mapping[str, str],
                mounts: Iterable[Path], interactive: bool) -> list[str]:
        """The engine's command line that runs ``argv`` in this container, in ``work``."""
        args = [self.engine, "run", "--rm", "--name", self.name,
                "--user", f"{os.getuid()}:{os.getgid()}", "--workdir", str(work),
                "--volume", f"{where}:{where}"]
        if os.getuid() != 0 and Path(self.engine).name == "podman":
            args.append("--userns=keep-id")  # rootless: the user's id, not a mapped root
        if interactive:
            args.append("--interactive")
        for path in mounts:
            if path != where and where not in path.parents:
                args += ["--volume", f"{path}:{path}:ro"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        return [*args, self.image, *argv]

    def remove(self) -> None:
        """Kill and remove the container (nothing happens if it is gone already)."""
        for action in (["kill", self.name], ["rm", "--force", self.name]):
            _run_quietly([self.engine, *action])


def _safe(name: str) -> str:
    """A task name as a container name part (engines take [a-zA-Z0-9][a-zA-Z0-9_.-]*)."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", name)[:40] or "task"
