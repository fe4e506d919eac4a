"""Command tasks: a shell command or an argument list run as a task of a flow.

``flow.command(name, command, ...)`` declares one (see ``docs/commands.md``). The
``{name}`` placeholders of the command, of ``env`` values and ``stdin`` are the
task's inputs (upstream tasks or flow parameters), plus ``{job_dir}``. A string
command runs with ``sh -c`` and gets every value shell-quoted; a list runs
without a shell and gets each value as whole arguments.

The command runs in its own process group, in the run's job directory
(``jobdir.py``); a cancel, a timeout or an interrupt kills the group (SIGTERM,
then SIGKILL). stdout and stderr stream into the task's captured output while it
runs; the task's value is a :class:`CommandResult`.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import childproc, containers, jobdir
from .errors import CommandFailed, CommandOutputError, InvalidOptionError
from .task import Task, check_name

__all__ = ["CommandResult", "CommandSpec", "command_task", "declared"]

#: the placeholder that is not an input: the run's job directory
JOB_DIR = "job_dir"


@dataclass(frozen=True)
class CommandResult:
    """What a command task returns: exit code, stdout, stderr's tail and output files."""

    returncode: int
    #: the whole stdout: text when the task has ``text=True`` (the default), else bytes
    stdout: str | bytes
    #: the last lines of stderr
    stderr_tail: str
    #: the declared output files, by name, as paths in the job directory
    outputs: Mapping[str, Path] = field(default_factory=dict)
    #: the command line that ran (placeholders filled in)
    command: str = ""
    #: the host it ran on
    host: str = ""
    #: the container image it ran in, if any
    image: str | None = None

    def path(self, name: str) -> Path:
        """The declared output file ``name``."""
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"no output named {name!r}; outputs: {sorted(self.outputs)}") from None


@dataclass(frozen=True)
class CommandSpec:
    """A command task as declared (``flow.command``'s arguments): see :func:`declared`."""

    name: str
    command: str | tuple[str, ...]
    outputs: Mapping[str, str]
    stdin: str | None
    env: Mapping[str, str]
    text: bool
    timeout: float | None
    image: str | None
    #: a mapped command: each branch works in a folder of its own (see :func:`_workdir`)
    mapped: bool = False
    #: the shell that runs a string command (``shell -c line``)
    shell: str = "sh"


def command_task(
    name: str,
    command: str | Sequence[str],
    *,
    outputs: Mapping[str, str] | None = None,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    text: bool = True,
    shell: str = "sh",
    options: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> Task:
    """Build the :class:`~nbflow.Task` of a command (``Flow.command`` adds it to a flow)."""
    if isinstance(command, str):
        cmd: str | tuple[str, ...] = command
    elif isinstance(command, Sequence) and command and all(isinstance(a, str) for a in command):
        cmd = tuple(command)
    else:
        raise InvalidOptionError(name, "command", "must be a string (run by sh) or a non-empty "
                                 f"list of strings (run without a shell), got {command!r}")
    outs = dict(outputs or {})
    for key, rel in outs.items():
        if not isinstance(key, str) or not key.isidentifier() or not isinstance(rel, str) or not rel:
            raise InvalidOptionError(name, "outputs", "must map names to file paths relative to "
                                     f"the job directory, like {{'tif': 'warped.tif'}}; got {outs!r}")
    if stdin is not None and (not isinstance(stdin, str) or not stdin.isidentifier()):
        raise InvalidOptionError(name, "stdin", f"must name an upstream task or flow parameter, got {stdin!r}")
    envs = dict(env or {})
    for key, value in envs.items():
        if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
            raise InvalidOptionError(name, "env", "must map variable names to strings, which may "
                                     f"hold {{placeholders}}, like {{'RES': '{{res}}'}}; got {envs!r}")
    if not isinstance(text, bool):
        raise InvalidOptionError(name, "text", f"must be True or False, got {text!r}")
    if not isinstance(shell, str) or not shell.strip() or any(c.isspace() for c in shell):
        raise InvalidOptionError(name, "shell", "must name a shell that takes -c, like 'sh' or "
                                 f"'bash' (a name or a path), got {shell!r}")
    if shell != "sh" and not isinstance(cmd, str):
        raise InvalidOptionError(name, "shell", "is for a string command; a list runs without "
                                 "a shell")
    templates = [cmd] if isinstance(cmd, str) else list(cmd)
    names: list[str] = []
    for template in [*templates, *envs.values()]:
        for field_name in _fields(name, template):
            if field_name != JOB_DIR and field_name not in names:
                names.append(field_name)
    if stdin is not None and stdin not in names:
        names.append(stdin)
    opts = dict(options or {})
    spec = CommandSpec(name, cmd, outs, stdin, envs, text, opts.get("timeout"),
                       opts.get("image"), opts.get("map") is not None, shell)
    fn = _body(spec)
    fn.task_inputs = tuple(names)  # type: ignore[attr-defined]  # names, not identifiers
    key = hashlib.blake2b(repr(("command", cmd, sorted(outs.items()), stdin, sorted(envs.items()),
                                text, spec.image, shell)).encode(), digest_size=16).hexdigest()
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    return Task.from_function(fn, name=name, options=opts, code_key=key, source=source,
                              command=shown)


def _fields(task: str, template: str) -> list[str]:
    """The input names of a template's ``{placeholders}`` (``{a.b}`` is input ``a``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidOptionError(task, "command", f"has a malformed placeholder in {template!r} "
                                 f"({exc}); write a literal brace as '{{{{' or '}}}}'") from None
    out: list[str] = []
    for _, field_name, spec, conv in parsed:
        if field_name is None:
            continue
        head, _, rest = field_name.partition(".")
        if check_name(head) is not None or head.isdigit() or (rest and not rest.isidentifier()) \
                or spec or conv:
            raise InvalidOptionError(
                task, "command", f"has placeholder {{{field_name}}} in {template!r}: a placeholder "
                "is {name} (an upstream task or flow parameter), {name.output} (an output file "
                "of an upstream command) or {job_dir}")
        out.append(head)
    return out


def _workdir(spec: CommandSpec, job: Path, line: str) -> Path:
    """Where the command runs: the job directory, or for a branch of a mapped command a
    folder of its own, ``<job dir>/<task>/<digest of its command line>``, so that the
    branches' output files (same names) do not overwrite each other."""
    if not spec.mapped:
        return job
    digest = hashlib.blake2b(line.encode(), digest_size=6).hexdigest()
    work = job / spec.name / digest
    work.mkdir(parents=True, exist_ok=True)
    return work


def _text_of(value: Any, attr: str, where: str) -> str | list[str]:
    """A value as placeholder text; a list or tuple (a mapped upstream's results, say)
    gives several words, each item as text of its own."""
    if isinstance(value, (list, tuple)):
        words: list[str] = []
        for item in value:
            text = _text_of(item, attr, where)
            words.extend(text if isinstance(text, list) else [text])
        return words
    if attr:
        if not isinstance(value, CommandResult):
            raise TypeError(f"{{{where}}}: {type(value).__name__} has no output files")
        return str(value.path(attr))
    if isinstance(value, CommandResult):
        out = value.stdout.decode() if isinstance(value.stdout, bytes) else value.stdout
        return out.strip()
    return str(value)


def _render(template: str, values: Mapping[str, Any], quote: Callable[[str], str]) -> str:
    parts: list[str] = []
    for literal, field_name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if field_name is None:
            continue
        head, _, attr = field_name.partition(".")
        text = _text_of(values[head], attr, field_name)
        parts.append(" ".join(map(quote, text)) if isinstance(text, list) else quote(text))
    return "".join(parts)


def _argv(cmd: str | tuple[str, ...], values: Mapping[str, Any],
          shell: str = "sh") -> tuple[list[str], str]:
    """The argument list to run and the command line to show."""
    if isinstance(cmd, str):
        line = _render(cmd, values, shlex.quote)
        return ["/bin/sh" if shell == "sh" else shell, "-c", line], line
    argv: list[str] = []
    for arg in cmd:
        parsed = list(string.Formatter().parse(arg))
        if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] is not None:
            head, _, attr = parsed[0][1].partition(".")
            text = _text_of(values[head], attr, parsed[0][1])
            argv.extend(text if isinstance(text, list) else [text])
        else:
            argv.append(_render(arg, values, lambda s: s))
    return argv, shlex.join(argv)


def _body(spec: CommandSpec) -> Callable[..., CommandResult]:
    def run_command(**kwargs: Any) -> CommandResult:
        return _run(spec, kwargs)

    run_command.__name__ = spec.name
    run_command.__qualname__ = spec.name
    run_command.command_spec = spec  # type: ignore[attr-defined]  # read by declared()
    return run_command


def declared(task: Task) -> CommandSpec | None:
    """How a command task was declared (its command, outputs, stdin, env, text, shell),
    or None for a Python task; for writing it back out (a spec, an export)."""
    spec = getattr(task.fn, "command_spec", None)
    return spec if isinstance(spec, CommandSpec) else None


def _run(spec: CommandSpec, kwargs: dict[str, Any]) -> CommandResult:
    job = jobdir.current_job()
    if job is None:
        raise RuntimeError(f"command task {spec.name!r} runs only as a task of a running flow")
    where = job.path()
    values = {**kwargs, JOB_DIR: str(where)}
    argv, line = _argv(spec.command, values, spec.shell)
    work = _workdir(spec, where, line)
    extra = {k: _render(v, values, lambda s: s) for k, v in spec.env.items()}
    extra["NBFLOW_JOB_DIR"] = str(where)
    data: bytes | None = None
    if spec.stdin is not None:
        given = kwargs[spec.stdin]
        if isinstance(given, CommandResult):
            given = given.stdout
        data = given if isinstance(given, bytes) else str(given).encode()
    if spec.image is None:
        ended = childproc.run_child(spec.name, argv, cwd=work, env={**os.environ, **extra},
                                    stdin=data, timeout=spec.timeout)
    else:
        box = containers.Container(spec.name, spec.image, job)
        ended = box.run(argv, env=extra, mounts=containers.input_paths(kwargs), stdin=data,
                        timeout=spec.timeout, cwd=work)
    if ended.returncode != 0:
        raise CommandFailed(spec.name, line, ended.returncode, ended.stderr_tail, spec.image,
                            socket.gethostname())
    result_out: str | bytes = ended.stdout
    if spec.text:
        try:
            result_out = ended.stdout.decode()
        except UnicodeDecodeError as exc:
            raise CommandOutputError(spec.name, f"stdout is not valid UTF-8 text ({exc}); "
                                     "declare the task with text=False to get bytes") from None
    paths = {k: work / rel for k, rel in spec.outputs.items()}
    for key, path in paths.items():
        if not path.exists():
            raise CommandOutputError(spec.name, f"declared output {key!r} ({path}) does not "
                                     f"exist after the command ended.\n  command: {line}")
    return CommandResult(ended.returncode, result_out, ended.stderr_tail, paths, line,
                         socket.gethostname(), spec.image)
