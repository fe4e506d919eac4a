"""Every exception nbflow raises.

::

    NbflowError
    ├── DeclarationError            a task cannot be declared as written
    │   ├── DuplicateTaskError      a second task with the same name
    │   └── InvalidOptionError      an unknown option, or an option of the wrong type
    ├── ValidationError             the flow cannot run as declared (raised before any task runs)
    │   ├── CycleError              tasks depend on each other in a loop
    │   ├── UnknownTaskError        an upstream, ``after=`` or target name that is not a task
    │   ├── InvalidMapError         ``map=`` names something that is not an upstream
    │   ├── UnboundedStreamError    a task takes an unbounded stream whole (no ``map=``)
    │   ├── MissingParameterError   a flow parameter with no value
    │   ├── InvalidParameterError   a parameter's value breaks its type or a constraint
    │   └── UnknownParameterError   params= names something no task takes
    ├── FlowFailed                  a run ended with failed tasks
    ├── TaskTimeoutError            a task ran longer than its ``timeout=``
    ├── CommandFailed               a command task exited with a non-zero code
    ├── CommandOutputError          a command's declared output file is missing, or its
    │                               output is not valid text
    ├── ContainerError              a task with ``image=`` cannot run: no engine, no such
    │                               image, or an image without Python and nbflow
    ├── ResultUnavailableError      a result was asked for a task that has none (also a KeyError)
    ├── IterationError              a result cannot be read item by item (also a TypeError)
    ├── ExecutorError               an executor was misused or could not start
    ├── LoopThreadError             a blocking call was made from the scheduler's own thread
    ├── LayoutError                 Graphviz could not lay out a flow (the widget's layout process)
    ├── RegistryError               no registered task of that name (or its package is broken)
    ├── SpecError                   a workflow spec file is invalid (file, key path, line)
    ├── CacheKeyError               the disk cache's signing key is missing, too short or unsafe
    ├── ExportError                 a notebook cannot be exported as a module or spec
    ├── BatchInputError             bad input for a batch job: notebook, parameter, grid file
    └── ServiceError                ``nbflow serve`` cannot start or a request is invalid
        ├── JobParamsError          a job's parameters do not fit the workflow (names the key)
        └── UnknownJobError         no job with that id in the state dir (also a KeyError)

Every error pickles (``__reduce__``), so it survives a trip through a process
pool or a dask worker.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Run
    from .values import Failed


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidates, or ``""``."""
    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean {close[0]!r}?"
    return " Did you mean one of " + ", ".join(repr(c) for c in close) + "?"


class NbflowError(Exception):
    """Base class of every error nbflow raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain Exception pickles only ``args``; keep the message as the only arg.
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[NbflowError], message: str, state: dict[str, Any]) -> NbflowError:
    err = Exception.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class DeclarationError(NbflowError):
    """A task cannot be declared as written."""


class DuplicateTaskError(DeclarationError):
    """A task with this name already exists in the flow."""

    def __init__(self, flow: str, task: str) -> None:
        self.flow = flow
        self.task = task
        msg = (
            f"Flow {flow!r} already has a task named {task!r}. Give the new task another "
            f"name, or call flow.replace(...) / flow.drop({task!r}) to redeclare it."
        )
        super().__init__(msg)


class InvalidOptionError(DeclarationError):
    """An unknown task option, or an option value of the wrong type."""

    def __init__(self, task: str, option: str, problem: str) -> None:
        self.task = task
        self.option = option
        super().__init__(f"Task {task!r}: option {option!r} {problem}")


class ValidationError(NbflowError):
    """The flow cannot run as declared; raised before any task runs."""


class CycleError(ValidationError):
    """Tasks depend on each other in a loop."""

    def __init__(self, flow: str, cycle: Sequence[str]) -> None:
        self.flow = flow
        self.cycle = list(cycle)
        path = " -> ".join(self.cycle)
        msg = (
            f"Flow {flow!r} has a dependency cycle: {path}. "
            "Remove one of these dependencies (a parameter named like a task, or after=)."
        )
        super().__init__(msg)


class UnknownTaskError(ValidationError):
    """A name that should be a task of the flow is not one."""

    def __init__(self, flow: str, name: str, where: str, known: Iterable[str]) -> None:
        self.flow = flow
        self.name = name
        self.where = where
        msg = f"{where} names {name!r}, which is not a task of flow {flow!r}." + suggest(
            name, known
        )
        super().__init__(msg)


class UnboundedStreamError(ValidationError):
    """A task takes an unbounded stream whole (without ``map=``): it would wait forever."""

    def __init__(self, task: str, stream: str) -> None:
        self.task = task
        self.stream = stream
        super().__init__(
            f"Task {task!r} takes {stream!r} whole, but {stream!r} is fed by an unbounded "
            f"stream, which never ends: map it (map={stream!r}), read it with "
            f"flow.stream({stream!r}), or drop unbounded=True if the stream does end.")


class InvalidMapError(ValidationError):
    """``map=`` names something that is not an upstream of the task."""

    def __init__(self, task: str, target: str, upstreams: Iterable[str]) -> None:
        self.task = task
        self.target = target
        ups = sorted(upstreams)
        have = ", ".join(repr(u) for u in ups) if ups else "none"
        msg = (
            f"Task {task!r}: map={target!r} must name one of its upstream tasks "
            f"(a parameter named like a task); its upstreams are: {have}."
            + suggest(target, ups)
        )
        super().__init__(msg)


class MissingParameterError(ValidationError):
    """A flow parameter has no value: no default, nothing in ``params=``."""

    def __init__(self, flow: str, missing: dict[str, list[str]], known: Iterable[str]) -> None:
        self.flow = flow
        self.missing = missing
        parts = []
        for name, tasks in sorted(missing.items()):
            users = ", ".join(repr(t) for t in tasks)
            parts.append(f"{name!r} (used by {users})" + suggest(name, known))
        msg = (
            f"Flow {flow!r} needs a value for parameter(s) " + "; ".join(parts) + ". "
            "Pass params={...} to run(), give the function argument a default, "
            "or declare a task of that name."
        )
        super().__init__(msg)


class InvalidParameterError(ValidationError):
    """A parameter's value does not fit its declared type or constraints (``Annotated[int,
    Field(ge=1)]``, a spec's ``minimum: 1``); names the parameter, the value and why."""

    def __init__(self, name: str, value: Any, constraint: str) -> None:
        self.name = name
        self.value = value
        self.constraint = constraint
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"parameter {name!r} = {shown}: {constraint}")


class UnknownParameterError(ValidationError):
    """``params=`` names a parameter that no task of the flow takes."""

    def __init__(self, flow: str, name: str, known: Iterable[str]) -> None:
        self.flow = flow
        self.name = name
        known = sorted(known)
        have = ", ".join(repr(k) for k in known) if known else "none"
        msg = (
            f"run(params=...) gives {name!r}, which no task of flow {flow!r} takes as a "
            f"parameter." + suggest(name, known) + f" Flow parameters: {have}."
        )
        super().__init__(msg)


class FlowFailed(NbflowError):
    """A run ended with one or more failed tasks.

    ``failures`` holds one :class:`nbflow.Failed` per failed task (or branch);
    ``run`` is the :class:`nbflow.Run` (not pickled).
    """

    def __init__(self, flow: str, failures: Sequence[Failed], run: Run | None = None) -> None:
        self.flow = flow
        self.failures = list(failures)
        self.run = run
        names = ", ".join(sorted({f.label for f in self.failures}))
        lines = [f"Flow {flow!r} failed: {len(self.failures)} task(s) failed: {names}"]
        for failure in self.failures:
            lines.append("")
            lines.append(f"--- {failure.label} (attempt {failure.attempt}) ---")
            lines.append(failure.traceback.rstrip())
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__, run=None)
        return (_rebuild, (type(self), str(self), state))


class TaskTimeoutError(NbflowError, TimeoutError):
    """A task (or branch) ran longer than its ``timeout=``."""

    def __init__(self, label: str, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        msg = f"Task {label} did not finish within timeout={timeout:g}s and was stopped."
        super().__init__(msg)


class CommandFailed(NbflowError):
    """A command task exited with a non-zero code (127: the command was not found)."""

    def __init__(self, task: str, command: str, returncode: int, stderr_tail: str,
                 image: str | None = None, host: str | None = None) -> None:
        self.task = task
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        #: the container image it ran in, if any
        self.image = image
        #: the host it ran on
        self.host = host
        place = "" if image is None else f" in image {image!r}"
        if returncode == 127:
            what = (f"exited with code 127: the command was not found{place} (is it installed "
                    "and on PATH?)")
        elif returncode == 125 and image is not None:
            what = "could not be started: the container engine failed (exit code 125)"
        elif returncode < 0:
            what = f"was killed by signal {-returncode}"
        else:
            what = f"exited with code {returncode}"
        shown = command.replace("\n", "\n           ")  # a script's lines under its first
        msg = f"Command task {task!r} {what}.\n  command: {shown}"
        if image is not None:
            msg += f"\n  image: {image}"
        if stderr_tail.strip():
            msg += "\n  last lines of stderr:\n" + "\n".join(
                "    " + line for line in stderr_tail.rstrip("\n").splitlines())
        super().__init__(msg)


class ContainerError(NbflowError):
    """A task with ``image=`` cannot run: no container engine works here, the image does
    not exist and cannot be pulled, or (a Python task) the image lacks Python or nbflow."""

    def __init__(self, task: str, problem: str) -> None:
        self.task = task
        self.problem = problem
        super().__init__(f"Task {task!r} cannot run in its container: {problem}")


class CommandOutputError(NbflowError):
    """A command task succeeded but a declared output file is missing, or its output is
    not valid text when ``text=True``."""

    def __init__(self, task: str, problem: str) -> None:
        self.task = task
        super().__init__(f"Command task {task!r}: {problem}")


class ResultUnavailableError(NbflowError, KeyError):
    """A result was asked for a task that did not produce one."""

    def __init__(self, task: str, state: str, known: Iterable[str] = ()) -> None:
        self.task = task
        self.state = state
        if state == "unknown":
            msg = f"No task named {task!r} in this run." + suggest(task, known)
        else:
            msg = f"Task {task!r} has no result: it is {state}."
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IterationError(NbflowError, TypeError):
    """A task's result cannot be read item by item: to map over it, or to keep the items of
    a generator it returned. It is a string or not iterable, or its iteration raised (the
    message names the task and the index of the item; the original error is the cause)."""


class ExecutorError(NbflowError):
    """An executor was misused (not started, closed) or could not start."""


class LoopThreadError(NbflowError):
    """A blocking call was made from the scheduler's own thread, where it would deadlock."""


class LayoutError(NbflowError):
    """Graphviz could not lay out a flow, or the layout process could not start or died."""


class RegistryError(NbflowError, LookupError):
    """No registered task of that name, or the package that registers it is broken."""


class SpecError(NbflowError):
    """A workflow spec is invalid; names the file, the key path and the line."""

    def __init__(self, problem: str, file: str | None = None, path: Sequence[str | int] = (),
                 line: int | None = None) -> None:
        self.problem = problem
        self.file = file
        self.path = tuple(path)
        self.line = line
        where = file or "<spec>"
        if line is not None:
            where += f":{line}"
        if self.path:
            where += " at " + ".".join(str(p) for p in self.path)
        super().__init__(f"{where}: {problem}")


class CacheKeyError(NbflowError):
    """The disk cache's signing key cannot be used: ``NBFLOW_CACHE_KEY`` is too short, or the
    key file cannot be read or created, or other users could write it (or everyone read it)."""


class BatchInputError(NbflowError):
    """Bad input for a batch job (``nbflow run/sweep/params``), found before any kernel starts:
    a missing notebook, an unknown parameter, a value of the wrong type, an unreadable grid."""


class ExportError(NbflowError):
    """A notebook cannot be exported (unreadable, a cell that does not parse, a bad option)."""


class ServiceError(NbflowError):
    """``nbflow serve`` cannot do what was asked: an unreadable workflow, a port in use, a
    watched folder that does not exist, a state dir written by a newer nbflow."""


class JobParamsError(ServiceError):
    """A job's parameters do not fit the workflow: an unknown name, a wrong type, a value
    out of range, a missing required one. ``key`` names the parameter (None: the whole body)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class UnknownJobError(ServiceError, KeyError):
    """No job with this id in the service's state dir."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} in this state dir (see nbflow jobs)")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
