"""The ``%nbflow`` command line: subcommands, their options, and task options from them.

This module does not import IPython, so ``nbflow export`` can read the
``%%nbflow task NAME [options]`` headers and ``%nbflow run`` lines of a
notebook without it. Whoever parses chooses the error raised for a usage
mistake (``build_parser(error=...)``): the magics pass IPython's
``UsageError`` (one line, no traceback); the export turns a ``ValueError``
into an :class:`~nbflow.errors.ExportError` naming the notebook cell.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable, Sequence
from textwrap import dedent
from typing import Any

from ..errors import suggest
from ..task import RUN_ON_VALUES

#: executors a task cell or a run can name
EXECUTOR_CHOICES = ("threads", "processes", "inline", "dask")

#: builds the exception a usage mistake raises, from its one-line message
ErrorFactory = Callable[[str], Exception]

_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]*$")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """IPython's ``MagicHelpFormatter``, without IPython: help reads the same either way.

    Descriptions are dedented, option placeholders that are not plain names are
    wrapped in ``<>``, and usage lines start with the ``%`` of a magic.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return super()._fill_text(dedent(text), width, indent)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        args = self._format_args(action, action.dest.upper())
        if not _NAME.match(args):
            args = f"<{args}>"
        return ", ".join(f"{option} {args}" for option in action.option_strings)

    def add_usage(self, usage: str | None, actions: Any, groups: Any,
                  prefix: str | None = "::\n\n  %") -> None:
        super().add_usage(usage, actions, groups, prefix)


class _HelpShown(Exception):
    """``--help`` was printed; :meth:`CommandParser.parse_command` returns None."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser that raises instead of exiting (as a magic must).

    A usage mistake raises ``error(message)`` of :func:`build_parser`, with a
    message that names the command and points at its ``--help``.
    """

    #: the subcommand parsers, by name (on the top-level parser)
    subcommands: dict[str, CommandParser]

    def __init__(self, *args: Any, error: ErrorFactory = ValueError, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.make_error = error
        self.subcommands = {}

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = "%" + self.prog  # the formatter adds the % to usage lines the same way
        raise self.make_error(f"{prog}: {message}{self._close_options(message)} "
                              f"(see {prog} --help)")

    def _close_options(self, message: str) -> str:
        """`` Did you mean '--retries'?`` for an unrecognized option, else ``""``."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [o for action in self._actions for o in action.option_strings]
        for word in message.removeprefix("unrecognized arguments:").split():
            if word.startswith("--"):
                hint = suggest(word.partition("=")[0], known)
                if hint:
                    return "." + hint
        return ""

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            sys.stderr.write(message)
        raise _HelpShown()

    def parse_command(self, argv: Sequence[str]) -> argparse.Namespace | None:
        """Parse one ``%nbflow`` line (its words after ``%nbflow``).

        Returns the arguments with ``command`` set to the subcommand, or None
        when ``--help`` was printed instead. A subcommand's mistakes are
        reported by that subcommand (``%nbflow run: ...``), so the message
        points at the right ``--help``.
        """
        argv = list(argv)
        try:
            if argv and argv[0] in self.subcommands:
                args = self.subcommands[argv[0]].parse_args(argv[1:])
                args.command = argv[0]
            else:
                args = self.parse_args(argv)
        except _HelpShown:
            return None
        if args.command is None:
            raise self.make_error("%nbflow: missing a subcommand: " + ", ".join(self.subcommands)
                                  + " (see %nbflow --help)")
        return args


def _param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``-p``: a Python literal, else the bare word as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word is a string, as papermill's -p does
    return name.strip(), parsed


def _resources(text: str) -> dict[str, float]:
    """``GPU=1,MEM=2`` of ``--resources``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, amount = part.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {part!r}") from None
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {part!r}")
    return out


def _add_task_command(sub: Any) -> None:
    task = sub.add_parser("task", prog="%nbflow task", help="declare the cell body as a task", description=(
        "%%nbflow task NAME [options]: the cell body becomes task NAME. Names it reads that are "
        "tasks are its upstreams; other names come from the notebook. Its result is the variable "
        "NAME if the body assigns it, else the last expression. Declares, does not run."))
    task.add_argument("name", help="the task name (a Python identifier)")
    _add_task_options(task)


def _add_command_command(sub: Any) -> None:
    command = sub.add_parser("command", prog="%nbflow command",
                             help="declare the cell body as a shell command task", description=(
        "%%nbflow command NAME [options]: the cell body is a shell script, run with sh -c as "
        "command task NAME (see docs/commands.md). Its {placeholders} are its inputs: upstream "
        "tasks or notebook variables, inserted shell-quoted; {name.output} is an output file of "
        "an upstream command, {job_dir} the run's job directory; a literal brace is {{ or }}. "
        "The task's value is an nbflow.CommandResult. Declares, does not run."))
    command.add_argument("name", help="the task name (a Python identifier)")
    command.add_argument("--output", type=_pair, action="append", default=None,
                         metavar="NAME=PATH", help="a file the command writes, relative to the "
                         "job directory, like tif=warped.tif (repeatable)")
    command.add_argument("--stdin", default=None, metavar="INPUT",
                         help="an upstream task or notebook variable fed to standard input")
    command.add_argument("--env", type=_pair, action="append", default=None,
                         metavar="VAR=VALUE", help="an environment variable; VALUE may hold "
                         "{placeholders}, inserted unquoted (repeatable)")
    command.add_argument("--bytes", action="store_true",
                         help="keep stdout as bytes (default: UTF-8 text)")
    _add_task_options(command)


def _pair(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--output`` and ``--env`` (VALUE kept as written)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _add_task_options(task: CommandParser) -> None:
    """The options a task cell and a command cell share (the task options of ``flow.task``)."""
    task.add_argument("--retries", type=int, default=0, help="retry a failed run this many times")
    task.add_argument("--image", default=None, metavar="IMAGE",
                      help="run the task in this container image (docs/containers.md)")
    task.add_argument("--retry-delay", type=float, default=0.0, metavar="S",
                      help="seconds to wait before a retry")
    task.add_argument("--timeout", type=float, default=None, metavar="S",
                      help="fail the task after this many seconds")
    task.add_argument("--map", default=None, metavar="UPSTREAM",
                      help="run once per item of this upstream task's result")
    task.add_argument("--run-on", choices=RUN_ON_VALUES, default="success",
                      help="run when upstreams succeeded (default), failed, or always")
    task.add_argument("--after", default=None, metavar="A,B",
                      help="tasks that must finish first (no data passed)")
    task.add_argument("--max-parallel", type=int, default=None, metavar="N",
                      help="at most N branches of a mapped task at once")
    task.add_argument("--priority", type=int, default=0, help="higher runs first")
    task.add_argument("--resources", type=_resources, action="append", default=None,
                      metavar="NAME=AMOUNT", help="resources for dask, like GPU=1 (repeatable)")
    task.add_argument("--no-cache", action="store_true", help="always recompute this task")
    task.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None,
                      help="run this task here instead of on the run's executor (e.g. threads "
                      "in the kernel for a plot while the rest runs on dask)")
    task.add_argument("--export", action="store_true",
                      help="report the result in batch outputs (event log, sweep summary)")
    task.add_argument("--group", default=None, metavar="GROUP",
                      help="a label shared by related cells' tasks: the widget draws them in "
                      "one box that collapses into a single node")
    task.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help="with --map of a stream (a generator task): take its items N at a "
                      "time, joined into one batch (docs/streams.md)")
    task.add_argument("--buffer", type=int, default=None, metavar="N",
                      help="a streaming task (a body with yield): run at most N items ahead of "
                      "the tasks that map it (default: the stream_buffer setting)")


def _add_run_command(sub: Any) -> None:
    run = sub.add_parser("run", prog="nbflow run", help="run tasks and bind their results",
                         description=(
        "Run what TARGETS need (every task when none is named), show each task's output, bind "
        "each finished task's result into the notebook under its name, and print a summary. "
        "Blocks until the run ends; a failed task is the cell's error."))
    run.add_argument("targets", nargs="*", help="tasks to run (with what they need)")
    run.add_argument("--background", action="store_true",
                     help="return the Run at once; follow it with %%nbflow status")
    run.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None,
                     help="where task bodies run (default: threads, or the %%nbflow cluster)")
    run.add_argument("--cluster", default=None, metavar="ADDRESS",
                     help="run on this dask scheduler (tcp://host:8786), or 'local'")
    run.add_argument("-p", "--param", type=_param, action="append", default=[],
                     metavar="NAME=VALUE", help="a flow parameter for this run (repeatable)")


def _add_history_commands(sub: Any) -> None:
    """``%nbflow runs`` and ``%nbflow diff A B``: the run history (docs/history.md)."""
    db_help = "the run database (default: the one this kernel records its runs in)"
    ref_help = "a run id, a unique prefix of one, or -1 (the latest run), -2, ..."
    runs = sub.add_parser("runs", prog="nbflow runs", help="a table of the recent runs",
                          description="The recent recorded runs of this notebook's flow, "
                          "newest first: id, status, start, duration, task states, parameters "
                          "(as nbflow runs prints them).")
    runs.add_argument("-n", "--limit", type=int, default=10, metavar="N",
                      help="how many runs (default: 10; 0 for all)")
    runs.add_argument("--all", action="store_true", help="the runs of every flow, not only "
                      "this notebook's")
    runs.add_argument("--db", metavar="PATH", default=None, help=db_help)
    diff = sub.add_parser("diff", prog="nbflow diff", help="what differs between two runs",
                          description="Which parameters, code or package versions differ "
                          "between recorded runs A and B, which tasks re-ran because of them, "
                          "and which results differ (as nbflow runs diff prints it).")
    diff.add_argument("a", metavar="A", help=ref_help)
    diff.add_argument("b", metavar="B", help=ref_help)
    diff.add_argument("--db", metavar="PATH", default=None, help=db_help)


def build_parser(error: ErrorFactory = ValueError) -> CommandParser:
    """The ``%nbflow`` argument parser: every subcommand, each option with its help.

    Parameters
    ----------
    error
        Builds the exception raised for a usage mistake from its message
        (IPython's ``UsageError`` in the magics; ``ValueError`` by default).
    """
    parser = CommandParser(prog="nbflow", error=error, add_help=True, description=(
        "Declare and run nbflow tasks from notebook cells. Tasks go to the kernel's default "
        "flow (nbflow.notebook_flow())."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    _add_task_command(sub)
    _add_run_command(sub)
    sub.add_parser("status", prog="nbflow status", help="a table of tasks and their states",
                   description="A table of the flow's tasks: state, upstreams, duration; a "
                   "stale task's note says whether its code or an upstream's changed.")
    sub.add_parser("show", prog="nbflow show", help="the DAG, as text",
                   description="The flow's tasks in dependency order, with their upstreams.")
    why = sub.add_parser("why", prog="nbflow why", help="why a task re-runs or is reused",
                         description="Why task NAME was recomputed or reused, and whether the "
                         "next run will recompute it (code, parameter, global or upstream).")
    why.add_argument("name")
    drop = sub.add_parser("drop", prog="nbflow drop", help="remove a task from the flow",
                          description="Remove task NAME from the flow.")
    drop.add_argument("name")
    reset = sub.add_parser("reset", prog="nbflow reset", help="forget cached results",
                           description="Forget cached results and run history, so the next "
                           "run recomputes everything. --all also removes every task.")
    reset.add_argument("--all", action="store_true", help="also remove every task")
    output = sub.add_parser("output", prog="nbflow output",
                            help="show captured output of the last run",
                            description="Show what tasks of the last run printed or displayed.")
    output.add_argument("names", nargs="*", help="tasks (default: all)")
    cluster = sub.add_parser("cluster", prog="nbflow cluster", help="use a dask cluster",
                             description=(
        "%nbflow cluster local|ADDRESS|close: start nbflow's local dask cluster (or connect to a "
        "scheduler at ADDRESS); later %nbflow run commands use it. close stops the local "
        "cluster (a remote one is only disconnected)."))
    cluster.add_argument("target", metavar="local|ADDRESS|close")
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="worker processes of the local cluster")
    cluster.add_argument("--threads", type=int, default=None, metavar="N",
                         help="threads per worker of the local cluster")
    cancel = sub.add_parser("cancel", prog="nbflow cancel", help="cancel the last run, or a task",
                            description="Cancel the last run (a background run, or one started "
                            "from the widget). With TASK, cancel only that task: what depends "
                            "on it is skipped, the rest of the run goes on.")
    cancel.add_argument("task", nargs="?", default=None, help="a task of the run (default: all)")
    sub.add_parser("wait", prog="nbflow wait", help="wait for the last run, like a blocking run",
                   description="Block until the last run ends, show its output and summary; a "
                   "failed task is the cell's error.")
    _add_history_commands(sub)
    _add_command_command(sub)  # last: the subcommands are listed in this order
    parser.subcommands = dict(sub.choices)
    for command in parser.subcommands.values():
        command.make_error = error
    return parser


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options a parsed ``%%nbflow task`` header sets, defaults left out.

    The one translation from header flags to :class:`~nbflow.task.TaskOptions`
    names: the magic declares the task with it, the export writes it into
    ``@flow.task(...)`` and the spec. ``after`` is a list (a spec stays plain
    YAML); the task makes it a tuple.
    """
    options: dict[str, Any] = {}
    defaults = {"retries": 0, "retry_delay": 0.0, "timeout": None, "run_on": "success",
                "priority": 0, "max_parallel": None, "map": None, "group": None,
                "batch_size": None, "buffer": None}
    for key, default in defaults.items():
        value = getattr(args, key, default)
        if value != default:
            options[key] = value
    if getattr(args, "no_cache", False):
        options["cache"] = False
    if getattr(args, "export", False):
        options["export"] = True
    if getattr(args, "after", None):
        options["after"] = [a.strip() for a in args.after.split(",") if a.strip()]
    if getattr(args, "resources", None):
        merged: dict[str, float] = {}
        for r in args.resources:
            merged.update(r)
        options["resources"] = merged
    executor = getattr(args, "executor", None)
    if isinstance(executor, str):
        options["executor"] = executor
    image = getattr(args, "image", None)
    if isinstance(image, str):
        options["image"] = image
    return options
