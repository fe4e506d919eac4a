"""``%%nbflow task`` and ``%nbflow ...``: parse, call the Python API, print one line.

Usage mistakes raise IPython's :class:`~IPython.core.error.UsageError` (one
line, no traceback). Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.utils.process import arg_split  # type: ignore[attr-defined]

from .. import graph
from ..errors import (
    DeclarationError,
    ExecutorError,
    MissingParameterError,
    NbflowError,
    ValidationError,
    suggest,
)
from ..events import TaskEvent
from ..run import Run
from ..task import RUN_ON_VALUES
from ..states import FINAL as TERMINAL
from ..states import OK
from .compiler import cell_of, cell_task, parse_cell
from .display import (
    OutputShower,
    failure,
    install_display_capture,
    live_widget,
    progress_text,
    summary_line,
)
from .history import code_stale, explain
from .state import NotebookFlow, notebook_flow

#: executors a task cell or a run can name
EXECUTOR_CHOICES = ("threads", "processes", "inline", "dask")
#: seconds a blocking run may take before a progress line appears
PROGRESS_AFTER = 0.5


class _Help(Exception):
    """``--help`` was printed; nothing else to do."""


class _Parser(MagicArgumentParser):
    #: the subcommand parsers (on the top-level parser)
    subcommands: dict[str, _Parser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("add_help", True)
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = "%" + self.prog  # MagicHelpFormatter adds the % to usage lines the same way
        raise UsageError(f"{prog}: {message} (see {prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            sys.stderr.write(message)
        raise _Help()


def _param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word is a string, as papermill's -p does
    return name.strip(), parsed


def _resources(text: str) -> dict[str, float]:
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


def build_parser() -> _Parser:
    """The ``%nbflow`` argument parser (subcommands and their options)."""
    parser = _Parser(prog="nbflow", description=(
        "Declare and run nbflow tasks from notebook cells. Tasks go to the kernel's default "
        "flow (nbflow.notebook_flow())."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    task = sub.add_parser("task", prog="%nbflow task", help="declare the cell body as a task", description=(
        "%%nbflow task NAME [options]: the cell body becomes task NAME. Names it reads that are "
        "tasks are its upstreams; other names come from the notebook. Its result is the variable "
        "NAME if the body assigns it, else the last expression. Declares, does not run."))
    task.add_argument("name", help="the task name (a Python identifier)")
    task.add_argument("--retries", type=int, default=0, help="retry a failed run this many times")
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

    sub.add_parser("status", prog="nbflow status", help="a table of tasks and their states",
                   description="A table of the flow's tasks: state, upstreams, duration.")
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
    parser.subcommands = dict(sub.choices)
    return parser


@magics_class
class NbflowMagics(Magics):
    """The ``nbflow`` line and cell magic."""

    def __init__(self, shell: Any, flow: NotebookFlow | None = None) -> None:
        super().__init__(shell)
        self.parser = build_parser()
        self._flow = flow
        #: the executor %nbflow cluster chose for later runs (None: the default)
        self._cluster: Any = None

    @property
    def ip(self) -> Any:
        """The shell (typed loosely: IPython's own annotations allow None)."""
        return self.shell

    @property
    def flow(self) -> NotebookFlow:
        flow = self._flow if self._flow is not None else notebook_flow()
        if flow.namespace is None:
            flow.namespace = self.ip.user_ns
        return flow

    @line_cell_magic
    def nbflow(self, line: str, cell: str | None = None) -> Any:
        """Declare and run nbflow tasks; ``%nbflow --help`` lists the subcommands."""
        try:
            argv = arg_split(line)
        except ValueError as exc:  # unbalanced quotes
            raise UsageError(f"%nbflow: {exc}") from None
        subparsers = self.parser.subcommands
        try:
            if argv and argv[0] in subparsers:
                args = subparsers[argv[0]].parse_args(argv[1:])
                args.command = argv[0]
            else:
                args = self.parser.parse_args(argv)
        except _Help:
            return None
        if args.command is None:
            raise UsageError("%nbflow: missing a subcommand: " + ", ".join(subparsers)
                             + " (see %nbflow --help)")
        if args.command == "task":
            if cell is None:
                raise UsageError("%nbflow task must be the first line of a cell: "
                                 "%%nbflow task NAME, then the task's code")
            return self._task(args, line, cell)
        if cell is not None:
            raise UsageError(f"%%nbflow {args.command} is a line magic: use %nbflow "
                             f"{args.command} (one %)")
        if args.command == "cluster":
            return self._cluster_command(args)
        return getattr(self, f"_{args.command}")(args)

    # -- task ------------------------------------------------------------------------------

    def _task(self, args: argparse.Namespace, line: str, body: str) -> None:
        name = args.name
        if not name.isidentifier():
            raise UsageError(f"%%nbflow task: {name!r} is not a valid task name (use a Python "
                             "identifier)")
        flow = self.flow
        ns = self.ip.user_ns
        count = self.ip.execution_count
        label = f"cell In[{count}]" if count else "cell"
        filename = f"<cell In[{count}]: task {name}>" if count else f"<nbflow-cell {name}>"
        try:
            cell = parse_cell(name, body, label=label, filename=filename,
                              header=f"%%nbflow {line.strip()}")
        except SyntaxError as exc:
            raise UsageError(_syntax_message(name, label, exc)) from None
        if not body.strip():
            raise UsageError(f"%%nbflow task {name}: the cell has no code")

        options: dict[str, Any] = {
            "retries": args.retries, "retry_delay": args.retry_delay, "timeout": args.timeout,
            "run_on": args.run_on, "priority": args.priority, "cache": not args.no_cache,
            "max_parallel": args.max_parallel, "export": args.export,
        }
        if args.executor is not None:
            options["executor"] = args.executor
        if args.after:
            options["after"] = tuple(a.strip() for a in args.after.split(",") if a.strip())
        if args.resources:
            merged: dict[str, float] = {}
            for r in args.resources:
                merged.update(r)
            options["resources"] = merged
        if args.map is not None:
            self._check_map(name, args.map, cell.reads, flow, ns)
            options["map"] = args.map

        old = flow.tasks.get(name)
        try:
            task = cell_task(cell, flow, ns, options)
        except DeclarationError as exc:
            raise UsageError(str(exc)) from None
        flow.replace(task)
        flow.sync()
        task = flow.tasks[name]
        print(self._declared_line(flow, name, old, task))

    def _check_map(self, name: str, target: str, reads: dict[str, int], flow: NotebookFlow,
                   ns: dict[str, Any]) -> None:
        if target in reads and (target in flow or target not in ns):
            return  # a task, or one declared later (the run validates it)
        ups = [r for r in reads if r in flow]
        have = ", ".join(ups) if ups else "none"
        hint = suggest(target, ups)
        why = "is a notebook variable, not a task" if target in reads else \
            "is not read by the cell"
        raise UsageError(f"%%nbflow task {name}: --map {target!r} must be an upstream task the "
                         f"cell reads; {target!r} {why}.{hint} Upstreams: {have}.")

    def _declared_line(self, flow: NotebookFlow, name: str, old: Any, task: Any) -> str:
        ups = list(flow.upstreams(name))
        params = [i for i in task.inputs if i not in flow]
        if old is None:
            verdict = "new"
        elif old.code_key != task.code_key:
            down = sorted(graph_descendants(flow, name))
            verdict = "changed" + (f"; stale downstream: {', '.join(down)}" if down else "")
        elif old.options != task.options:
            verdict = "options changed"
        else:
            verdict = "unchanged"
        parts = [f"upstream: {', '.join(ups) if ups else 'none'}"]
        if params:
            ns = self.ip.user_ns
            parts.append("notebook: " + ", ".join(
                p if p in ns else f"{p} (not defined yet)" for p in params))
        return f"nbflow: task {name!r} ({'; '.join(parts)}): {verdict}"

    # -- run -------------------------------------------------------------------------------

    def _run(self, args: argparse.Namespace) -> Run | None:
        flow = self.flow
        params = dict(args.param)
        binder = _Binder(flow, self.ip.user_ns)
        executor: Any = args.executor
        if args.cluster is not None:
            from ..executors.dask import DaskExecutor

            executor = DaskExecutor(None if args.cluster == "local" else args.cluster)
        elif executor is None:
            executor = self._cluster
        try:
            run = flow.run(args.targets or None, params=params, executor=executor,
                           background=True, observers=[binder])
        except MissingParameterError as exc:
            raise UsageError(self._missing_message(flow, exc)) from None
        except (ValidationError, ExecutorError) as exc:
            raise UsageError(str(exc)) from None
        binder.run = run
        widget = live_widget(flow, run, self._start_for_widget)
        if args.background:
            if widget is not None:
                from IPython.display import display

                display(widget)  # type: ignore[no-untyped-call]
            return run
        self._follow(run, widget)
        return None

    def _start_for_widget(self, targets: Sequence[str] | None, force: Sequence[str]) -> Run:
        """Runs started by the widget's node actions: in the background, binding results."""
        from ..widget.model import start_run

        binder = _Binder(self.flow, self.ip.user_ns)
        run = start_run(self.flow, targets, force, observers=[binder])
        binder.run = run
        return run

    def _cancel(self, args: argparse.Namespace) -> None:
        run = self.flow.last_run
        if run is None:
            raise UsageError("%nbflow cancel: nothing has run yet")
        if run.done:
            print(f"nbflow: the last run has ended ({run.status}); nothing to cancel")
            return
        if args.task is not None and args.task not in run.plan.by_name:
            raise UsageError(f"%nbflow cancel: the last run has no task {args.task!r}."
                             + suggest(args.task, run.plan.by_name))
        run.cancel(args.task)
        what = "the run" if args.task is None else f"task {args.task!r}"
        print(f"nbflow: cancelling {what}; %nbflow wait shows how the run ends")

    def _wait(self, args: argparse.Namespace) -> None:
        run = self.flow.last_run
        if run is None:
            raise UsageError("%nbflow wait: nothing has run yet")
        self._follow(run)

    def _follow(self, run: Run, widget: Any = None) -> None:
        """Block until ``run`` ends, showing progress (the live widget, else a text line)
        and task output under this cell."""
        from IPython.display import DisplayHandle

        __tracebackhide__ = True
        shower = OutputShower(run)
        handle: Any = None  # an IPython DisplayHandle, once shown
        if widget is not None:
            handle = DisplayHandle()  # type: ignore[no-untyped-call]
            handle.display(widget)
        shown_text = ""
        started = time.monotonic()
        try:
            while True:
                try:
                    run.wait(timeout=0.2)
                    finished = True
                except TimeoutError:
                    finished = False
                shower.poll()
                if widget is not None:
                    if finished:  # store the final DAG (its static SVG) as the cell's output
                        handle.update(widget)
                        break
                    continue
                text = progress_text(run)
                if finished:
                    if handle is not None and text != shown_text:
                        handle.update({"text/plain": text}, raw=True)
                    break
                if time.monotonic() - started >= PROGRESS_AFTER and text != shown_text:
                    if handle is None:
                        handle = DisplayHandle()  # type: ignore[no-untyped-call]
                        handle.display({"text/plain": text}, raw=True)
                    else:
                        handle.update({"text/plain": text}, raw=True)
                    shown_text = text
        except KeyboardInterrupt:
            run.cancel()
            try:
                run.wait(timeout=10)
            except (TimeoutError, KeyboardInterrupt):
                pass
            shower.poll()
            if widget is not None:
                handle.update(widget)
            elif handle is not None:
                handle.update({"text/plain": progress_text(run)}, raw=True)
            print(f"nbflow: run cancelled by a kernel interrupt; {progress_text(run)[8:]}")
            raise
        print(summary_line(run))
        if run.failures:
            raise failure(run, self.flow.tasks)

    def _missing_message(self, flow: NotebookFlow, exc: MissingParameterError) -> str:
        ns = self.ip.user_ns
        known = [n for n in ns if not n.startswith("_") and n not in ("In", "Out")]
        known += list(flow.tasks)
        lines = []
        for name, users in sorted(exc.missing.items()):
            for user in users:
                task = flow.tasks.get(user)
                cell = cell_of(task) if task is not None else None
                if cell is not None:
                    line = cell.reads.get(name, 0)
                    lines.append(f"Task {user!r} ({cell.label}, line {line}) reads {name!r}, "
                                 f"which is neither a task nor defined in the notebook."
                                 + suggest(name, known))
                else:
                    lines.append(f"Task {user!r} needs parameter {name!r}, which is neither a "
                                 f"task, a notebook variable nor given with -p."
                                 + suggest(name, known))
        return " ".join(lines)

    # -- inspection ----------------------------------------------------------------------------

    def _status(self, args: argparse.Namespace) -> None:
        flow = self.flow
        run = flow.last_run
        live = run.states if run is not None else {}
        rows = [("task", "state", "upstream", "duration", "note")]
        for name in flow.tasks:
            note = ""
            duration = ""
            snap = flow.history.get(name)
            if name in live:
                state = live[name]
                view = run.task(name)  # type: ignore[union-attr]
                if view.mapped and view.branches is not None:
                    note = f"{view.done}/{view.branches} branches"
                if view.duration is not None and state in TERMINAL:
                    duration = f"{view.duration:.2f}s"
            elif snap is not None:
                state = snap.state
            else:
                state = "not run"
            if state in OK and code_stale(flow, flow.history, name):
                state, note = "stale", "code changed"
            elif state == "not run" or (run is not None and name not in live and snap is None):
                state = "new"
            ups = ", ".join(flow.dependencies()[name])
            rows.append((name, state, ups, duration, note))
        header = f"Flow {flow.name!r}: {len(flow)} tasks"
        if run is not None:
            header += f"; last run {run.id}: {run.status}"
        print(header)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())

    def _show(self, args: argparse.Namespace) -> None:
        flow = self.flow
        widget = live_widget(flow, None, self._start_for_widget)
        deps = flow.dependencies()
        print(f"Flow {flow.name!r}: {len(flow)} tasks")
        known = {n: [d for d in ds if d in deps] for n, ds in deps.items()}
        cycle = graph.find_cycle(known)
        order = list(known) if cycle is not None else graph.topological_order(known)
        width = max((len(n) for n in order), default=0)
        for name in order:
            task = flow.tasks[name]
            ups = deps[name]
            line = f"  {name.ljust(width)}"
            if ups:
                line += " <- " + ", ".join(ups)
            extras = []
            if task.options.map:
                extras.append(f"map over {task.options.map}")
            params = [i for i in task.inputs if i not in flow]
            if params:
                extras.append("reads " + ", ".join(params))
            if extras:
                line += "   [" + "; ".join(extras) + "]"
            print(line.rstrip())
        if cycle is not None:
            print("  cycle: " + " -> ".join(cycle))
        elif widget is not None:
            from IPython.display import display

            display(widget)  # type: ignore[no-untyped-call]

    def _why(self, args: argparse.Namespace) -> None:
        flow = self.flow
        self._known(args.name, "why")
        flow.sync()
        print(explain(flow, flow.history, args.name))

    def _drop(self, args: argparse.Namespace) -> None:
        flow = self.flow
        self._known(args.name, "drop")
        flow.drop(args.name)
        flow.history.drop(args.name)
        flow.sync()
        print(f"nbflow: dropped task {args.name!r}")

    def _reset(self, args: argparse.Namespace) -> None:
        flow = self.flow
        flow.cache.clear()
        flow.history.clear()
        if args.all:
            for name in list(flow.tasks):
                flow.drop(name)
            print("nbflow: removed every task and forgot cached results")
        else:
            print("nbflow: forgot cached results; the next run recomputes every task")

    def _output(self, args: argparse.Namespace) -> None:
        run = self.flow.last_run
        if run is None:
            raise UsageError("%nbflow output: nothing has run yet")
        for name in args.names:
            if name not in run.plan.by_name:
                raise UsageError(f"%nbflow output: {name!r} was not part of the last run."
                                 + suggest(name, run.plan.by_name))
        from .display import show_output

        for pt in run.plan.tasks:
            if args.names and pt.name not in args.names:
                continue
            rec = run.task(pt.name)
            for branch, out in sorted(rec.output.items(),
                                      key=lambda kv: (kv[0] is not None, kv[0] or 0)):
                show_output(pt.name if branch is None else f"{pt.name}[{branch}]", out)

    def _cluster_command(self, args: argparse.Namespace) -> None:
        from ..executors import dask_cluster
        from ..executors.dask import DaskExecutor
        from ..loop import get_loop_thread

        target = args.target
        if target == "close":
            was = self._cluster
            self._cluster = None
            if was is None or was.address is None:
                get_loop_thread().run_sync(dask_cluster.drop_connections(), timeout=30)
                dask_cluster.close_local_cluster()
                print("nbflow: closed the local dask cluster; runs use threads again")
            else:
                print(f"nbflow: disconnected from {was.address} (the cluster keeps running)")
            return
        if target == "local":
            cluster = dask_cluster.local_cluster(args.workers, args.threads)
            address, executor = str(cluster.scheduler_address), DaskExecutor()
        elif "://" in target or ":" in target:
            address, executor = target, DaskExecutor(target)
        else:
            raise UsageError(f"%nbflow cluster: expected local, close or a scheduler address "
                             f"like tcp://host:8786, got {target!r}")
        try:
            conn = get_loop_thread().run_sync(dask_cluster.connect(address))
        except ExecutorError as exc:
            raise UsageError(str(exc)) from None
        self._cluster = executor
        workers = len(conn.client.scheduler_info().get("workers", {}))
        link = dask_cluster.dashboard_link(conn) or "none"
        print(f"nbflow: dask cluster at {address} ({workers} workers); dashboard: {link}; "
              "%nbflow run uses it")

    def _known(self, name: str, command: str) -> None:
        if name not in self.flow:
            raise UsageError(f"%nbflow {command}: no task named {name!r}."
                             + suggest(name, self.flow.tasks))


def _syntax_message(name: str, label: str, exc: SyntaxError) -> str:
    text = f"{exc.msg} in task cell {name!r} ({label}, line {exc.lineno})"
    if exc.text:
        code = exc.text.rstrip("\n")
        stripped = code.lstrip()
        text += f":\n    {stripped}"
        if exc.offset:
            col = max(0, exc.offset - 1 - (len(code) - len(stripped)))
            text += "\n    " + " " * col + "^"
        if stripped.startswith(("%", "!")):
            text += ("\nIPython syntax (% magics, ! shell commands) cannot go in a task cell: "
                     "a task's body is plain Python, so that it can run on threads, processes "
                     "and dask workers. Call the Python behind it instead (subprocess.run([...]) "
                     "for a shell command), or keep the line in an ordinary cell.")
    return text + "\nNothing was declared."


def graph_descendants(flow: NotebookFlow, name: str) -> set[str]:
    """Tasks downstream of ``name`` (data and ``after=``)."""
    children: dict[str, list[str]] = {}
    for task, ups in flow.dependencies().items():
        for u in ups:
            children.setdefault(u, []).append(task)
    out: set[str] = set()
    stack = list(children.get(name, ()))
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(children.get(n, ()))
    return out


class _Binder:
    """Observer: binds each finished task's result into the notebook namespace, and
    records what it ran with (for ``%nbflow why``). Runs on the event dispatcher thread."""

    def __init__(self, flow: NotebookFlow, namespace: dict[str, Any]) -> None:
        self.flow = flow
        self.namespace = namespace
        self.run: Run | None = None

    def _run_for(self, run_id: str) -> Run | None:
        if self.run is not None:
            return self.run
        last = self.flow.last_run  # set before the run starts
        return last if last is not None and last.id == run_id else None

    def __call__(self, events: Sequence[Any]) -> None:
        for event in events:
            if not isinstance(event, TaskEvent) or event.branch is not None:
                continue
            if event.state not in TERMINAL:
                continue
            run = self._run_for(event.run_id)
            if run is None:
                continue
            if event.state in OK:
                try:
                    self.namespace[event.task] = run.results[event.task]
                except NbflowError:
                    continue
            if event.state in OK or event.state == "failed":
                self.flow.history.record(run, event.task)


def load(shell: Any) -> NbflowMagics:
    """Register the magics and the display capture in ``shell``."""
    flow = notebook_flow()
    if flow.namespace is None or flow.namespace is not shell.user_ns:
        flow.namespace = shell.user_ns
    install_display_capture(shell)
    magics = NbflowMagics(shell)
    shell.register_magics(magics)
    return magics
