"""Command tasks in a converted script: a shell command as a task function.

``nbflow convert --to script`` copies this module (without its imports, which it
writes at the top of the script) into a script whose workflow has command tasks.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CommandResult:
    """What a command task returns (a subset of nbflow's): exit code, stdout, stderr, files."""

    returncode: int
    stdout: str | bytes
    stderr_tail: str
    outputs: dict[str, Path]
    command: str = ""

    def path(self, name: str) -> Path:
        """The declared output file ``name``."""
        return self.outputs[name]


class CommandFailed(RuntimeError):
    """A command exited with a non-zero code."""


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)(?:\.(\w+))?\}")


def shell_command(template: str | list[str], *, outputs: dict[str, str] | None = None,
                  stdin: str | None = None, env: dict[str, str] | None = None,
                  text: bool = True, shell: str = "sh", mapped: bool = False,
                  timeout: float | None = None, name: str = "command") -> Callable[..., CommandResult]:
    """A task function running ``template``, its ``{placeholders}`` filled from its arguments.

    It runs in the current folder (its job directory; a mapped one in
    ``<task>/<digest of its command line>`` below it), with ``$NBFLOW_JOB_DIR`` set.
    """

    def run_command(**values: Any) -> CommandResult:
        job_dir = Path.cwd()
        values = {"job_dir": job_dir, **values}
        if isinstance(template, str):
            line = _fill(template, values, quote=True)
            argv = [shell, "-c", line]
        else:
            argv = [word for arg in template for word in _fill_arg(arg, values)]
            line = shlex.join(argv)
        workdir = job_dir
        if mapped:
            workdir = job_dir / name / hashlib.sha1(line.encode()).hexdigest()[:12]
            workdir.mkdir(parents=True, exist_ok=True)
        data = None if stdin is None else _stdin(values[stdin])
        if isinstance(data, bytes) and text:
            data = data.decode()
        extra = {k: _fill(v, values, quote=False) for k, v in (env or {}).items()}
        done = subprocess.run(argv, cwd=workdir, input=data, capture_output=True, text=text,
                              timeout=timeout, check=False,
                              env={**os.environ, "NBFLOW_JOB_DIR": str(job_dir), **extra})
        err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode(errors="replace")
        tail = "\n".join(err.splitlines()[-20:])
        if done.returncode != 0:
            raise CommandFailed(f"command {line!r} exited with {done.returncode}: {tail}")
        files = {k: workdir / p for k, p in (outputs or {}).items()}
        return CommandResult(done.returncode, done.stdout, tail, files, line)

    return run_command


def _word(value: Any, output: str | None) -> str:
    if isinstance(value, CommandResult):
        if output is not None:
            return str(value.path(output))
        out = value.stdout
        return (out.decode(errors="replace") if isinstance(out, bytes) else out).strip()
    return str(value)


def _words(values: dict[str, Any], match: re.Match[str]) -> list[str]:
    value = values[match.group(1)]
    items = value if isinstance(value, (list, tuple)) else [value]
    return [_word(v, match.group(2)) for v in items]


def _fill(template: str, values: dict[str, Any], *, quote: bool) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)[0]
        words = _words(values, match)
        return " ".join(shlex.quote(w) for w in words) if quote else " ".join(words)

    return _PLACEHOLDER.sub(replace, template)


def _fill_arg(arg: str, values: dict[str, Any]) -> list[str]:
    match = _PLACEHOLDER.fullmatch(arg)
    if match is not None and match.group(1) is not None:
        return _words(values, match)
    return [_fill(arg, values, quote=False)]


def _stdin(value: Any) -> str | bytes:
    if isinstance(value, CommandResult):
        return value.stdout
    return value if isinstance(value, (str, bytes)) else str(value)
