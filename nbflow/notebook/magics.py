"""``%%nbflow task`` and ``%nbflow ...``: parse, call the Python API, print one line.

Each subcommand is one method: it parses with :mod:`.parser`, calls the flow,
the run or :mod:`.runner`, and prints what :mod:`.report` writes. Usage
mistakes raise IPython's :class:`~IPython.core.error.UsageError` (one line, no
traceback). Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
)
from IPython.utils.process import arg_split  # type: ignore[attr-defined]
from IPython.utils.text import DollarFormatter

from ..errors import DeclarationError, ExecutorError, MissingParameterError, ValidationError, suggest
from ..run import Run
from ..task import check_variable_name
from . import awaiting, history_magics, owners, report, runner
from .cells import cell_label, current_count
from .command_cells import CommandCellError, command_cell_task
from .compiler import cell_task, parse_cell
from .display import (
    install_display_capture,
    live_widget,
    show_run,
    show_task_output,
)
from .history import explain
from .parser import EXECUTOR_CHOICES, build_parser, task_options
from .report import graph_descendants
from .runner import PROGRESS_AFTER
from .state import NotebookFlow, builtin_problem, notebook_flow

__all__ = ("EXECUTOR_CHOICES", "PROGRESS_AFTER", "NbflowMagics", "build_parser",
           "graph_descendants", "load")


@magics_class
class NbflowMagics(Magics):
    """The ``nbflow`` line and cell magic.

    Parameters
    ----------
    shell
        The IPython shell the magics are registered in.
    flow
        The flow the magics declare into and run (default: the kernel's
        :func:`~nbflow.notebook_flow`, looked up at each use).
    """

    def __init__(self, shell: Any, flow: NotebookFlow | None = None) -> None:
        super().__init__(shell)
        self.parser = build_parser(UsageError)
        self._flow = flow
        #: the executor %nbflow cluster chose for later runs (None: the default)
        self._cluster: Any = None
        #: set by awaitable(): a blocking run is handed back to be awaited, not followed
        self._awaiting = False
        self._to_await: Callable[[], Awaitable[None]] | None = None

    @property
    def ip(self) -> Any:
        """The shell (typed loosely: IPython's own annotations allow None)."""
        return self.shell

    @property
    def flow(self) -> NotebookFlow:
        """The flow the magics work on, bound to the shell's namespace."""
        flow = self._flow if self._flow is not None else notebook_flow()
        if flow.namespace is None:
            flow.namespace = self.ip.user_ns
        return flow

    @no_var_expand  # the header of a command cell holds {placeholders}: see _expand
    @needs_local_scope
    @line_cell_magic
    def nbflow(self, line: str, cell: str | None = None,
               local_ns: dict[str, Any] | None = None) -> Any:
        """Declare and run nbflow tasks; ``%nbflow --help`` lists the subcommands."""
        if not (cell is not None and line.split()[:1] == ["command"]):
            line = self._expand(line, local_ns)
        return self._dispatch(line, cell)

    def _expand(self, line: str, local_ns: dict[str, Any] | None) -> str:
        """``{name}`` and ``$name`` of the line from the notebook, as IPython expands the
        line of every magic (``InteractiveShell.var_expand``). Not in a command cell's
        header, whose ``--env VAR={name}`` is a placeholder of the task, resolved at
        each run, not the notebook's value when the cell runs."""
        ns = dict(self.ip.user_ns)
        ns.update(local_ns or {})
        try:
            return str(DollarFormatter().vformat(line, args=[], kwargs=ns))
        except Exception:  # as IPython does: a line that cannot be expanded stays as it is
            return line

    def _dispatch(self, line: str, cell: str | None) -> Any:
        try:
            argv = arg_split(line)
            if argv[:1] == ["command"]:  # quotes are shell quotes, as in the cell's script
                argv = shlex.split(line)
        except ValueError as exc:  # unbalanced quotes
            raise UsageError(f"%nbflow: {exc}") from None
        args = self.parser.parse_command(argv)
        if args is None:
            return None  # --help was printed
        if args.command in ("task", "command"):
            if cell is None:
                what = "task's code" if args.command == "task" else "shell script"
                raise UsageError(f"%nbflow {args.command} must be the first line of a cell: "
                                 f"%%nbflow {args.command} NAME, then the {what}")
            if args.command == "command":
                return self._command(args, cell)
            return self._task(args, line, cell)
        if cell is not None:
            raise UsageError(f"%%nbflow {args.command} is a line magic: use %nbflow "
                             f"{args.command} (one %)")
        commands: dict[str, Callable[[argparse.Namespace], Any]] = {
            "run": self._run, "status": self._status, "show": self._show, "why": self._why,
            "drop": self._drop, "reset": self._reset, "output": self._output,
            "cluster": self._cluster_command, "cancel": self._cancel, "wait": self._wait,
            "runs": lambda a: history_magics.runs(self.flow, a), "diff": history_magics.diff,
        }
        return commands[args.command](args)

    async def awaitable(self, line: str) -> Any:
        """``%nbflow line``, with a blocking run followed on the kernel's event loop
        (:func:`.runner.follow_async`); what top-level ``%nbflow run`` lines become
        in a kernel (see :mod:`.awaiting`)."""
        # as run_line_magic does: {name} and $name from the cell (the frame awaiting this)
        line = self.ip.var_expand(line, 1)
        self._awaiting, self._to_await = True, None
        try:
            result = self._dispatch(line, None)
        finally:
            follow, self._awaiting, self._to_await = self._to_await, False, None
        if follow is not None:
            await follow()
        return result

    def _follow(self, run: Run, make_widget: Callable[[], Any] | None = None) -> None:
        """Follow ``run`` under the cell until it ends (awaited in :meth:`awaitable`)."""
        flow = self.flow
        if self._awaiting:
            self._to_await = lambda: runner.follow_async(run, flow, make_widget)
        else:
            runner.follow(run, flow, make_widget)

    # -- task ------------------------------------------------------------------------------

    def _check_name(self, command: str, name: str) -> None:
        if not name.isidentifier():
            raise UsageError(f"%%nbflow {command}: {name!r} is not a valid task name (use a "
                             "Python identifier)")
        problem = check_variable_name(name) or builtin_problem(name)
        if problem is not None:
            raise UsageError(f"%%nbflow {command}: {name!r} {problem}")

    def _command(self, args: argparse.Namespace, body: str) -> None:
        """``%%nbflow command NAME``: declare the cell's shell script as a command task."""
        name = args.name
        self._check_name("command", name)
        flow = self.flow
        old = flow.tasks.get(name)
        label = cell_label(current_count(self.ip))
        try:
            flow.add(command_cell_task(args, body, label=label, tasks=flow.tasks))
        except (CommandCellError, DeclarationError) as exc:
            raise UsageError(str(exc)) from None
        flow.sync()
        print(report.declared_line(flow, name, old, flow.tasks[name], self.ip.user_ns))

    def _task(self, args: argparse.Namespace, line: str, body: str) -> None:
        name = args.name
        self._check_name("task", name)
        flow = self.flow
        ns = self.ip.user_ns
        count = current_count(self.ip)
        label = cell_label(count)
        filename = f"<cell In[{count}]: task {name}>" if count else f"<nbflow-cell {name}>"
        try:
            cell = parse_cell(name, body, label=label, filename=filename,
                              header=f"%%nbflow {line.strip()}")
        except SyntaxError as exc:
            raise UsageError(report.syntax_message(name, label, exc)) from None
        if not body.strip():
            raise UsageError(f"%%nbflow task {name}: the cell has no code")
        if args.map is not None:
            self._check_map(name, args.map, cell.reads, flow, ns)
        old = flow.tasks.get(name)
        try:
            task = cell_task(cell, flow, ns, task_options(args))
            flow.add(task)  # and note the cell that declared it (see .owners)
        except DeclarationError as exc:
            raise UsageError(str(exc)) from None
        flow.sync()
        print(report.declared_line(flow, name, old, flow.tasks[name], ns))

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

    # -- run -------------------------------------------------------------------------------

    def _run(self, args: argparse.Namespace) -> Run | None:
        flow = self.flow
        executor: Any = args.executor
        if args.cluster is not None:
            from ..executors.dask import DaskExecutor

            if args.cluster != "local":
                self._connect(args.cluster, "run --cluster")  # a wrong address: one line now
            executor = DaskExecutor(None if args.cluster == "local" else args.cluster)
        elif executor is None:
            executor = self._cluster
        try:
            run = runner.start(flow, self.ip.user_ns, args.targets or None,
                               params=dict(args.param), executor=executor)
        except MissingParameterError as exc:
            raise UsageError(report.missing_message(flow, exc, self.ip.user_ns)) from None
        except (ValidationError, DeclarationError, ExecutorError) as exc:  # bad overrides too
            raise UsageError(str(exc)) from None
        def make_widget() -> Any:
            return live_widget(flow, run, self._start_for_widget)

        if args.background:
            widget = make_widget()
            if widget is not None:
                widget.show()  # its output gets the final picture once the run ended
            return run
        self._follow(run, make_widget)
        return None

    def _start_for_widget(self, targets: Sequence[str] | None, force: Sequence[str]) -> Run:
        """Runs started by the widget's node actions: in the background, binding results."""
        return runner.start(self.flow, self.ip.user_ns, targets, force=force,
                            executor=self._cluster)  # where %nbflow run would run it

    def _cancel(self, args: argparse.Namespace) -> None:
        run = self.flow.last_run
        if run is None:
            raise UsageError("%nbflow cancel: nothing has run yet; start a run with "
                             "%nbflow run --background")
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
            raise UsageError("%nbflow wait: nothing has run yet; start a run with "
                             "%nbflow run --background")
        self._follow(run)

    # -- inspection ----------------------------------------------------------------------------

    def _status(self, args: argparse.Namespace) -> None:
        print("\n".join(report.status_lines(self.flow)))

    def _show(self, args: argparse.Namespace) -> None:
        flow = self.flow
        widget = live_widget(flow, None, self._start_for_widget)
        lines, cycle = report.show_lines(flow)
        print("\n".join(lines))
        if widget is not None and not cycle:
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
            raise UsageError("%nbflow output: nothing has run yet; run the flow with %nbflow run")
        for name in args.names:
            if name not in run.plan.by_name:
                raise UsageError(f"%nbflow output: {name!r} was not part of the last run."
                                 + suggest(name, run.plan.by_name))
        for name, view in run.tasks.items():
            if not args.names or name in args.names:
                show_task_output(view)

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
        conn = self._connect(address, "cluster")
        self._cluster = executor
        workers = len(conn.client.scheduler_info().get("workers", {}))
        link = dask_cluster.dashboard_link(conn) or "none"
        print(f"nbflow: dask cluster at {address} ({workers} workers); dashboard: {link}; "
              "%nbflow run uses it")

    def _connect(self, address: str, command: str) -> Any:
        """The connection to the dask scheduler at ``address`` (made now, on the scheduler
        loop, where runs find it); a usage error saying why when there is none."""
        from ..executors import dask_cluster
        from ..loop import get_loop_thread

        try:
            return get_loop_thread().run_sync(dask_cluster.connect(address))
        except ExecutorError as exc:
            raise UsageError(f"%nbflow {command}: {exc}") from None

    def _known(self, name: str, command: str) -> None:
        if name not in self.flow:
            raise UsageError(f"%nbflow {command}: no task named {name!r}."
                             + suggest(name, self.flow.tasks))


def load(shell: Any) -> NbflowMagics:
    """Register the magics and the display capture in ``shell``.

    Binds the kernel's default flow to the shell's namespace, so task cells
    read notebook variables and results are bound there.
    """
    flow = notebook_flow()
    if flow.namespace is None or flow.namespace is not shell.user_ns:
        flow.namespace = shell.user_ns
    install_display_capture(shell)
    awaiting.install(shell)
    owners.install(shell)
    # a Run a cell evaluates to is shown as its repr, updated when the run ends
    shell.display_formatter.ipython_display_formatter.for_type(Run, show_run)
    magics = NbflowMagics(shell)
    shell.register_magics(magics)
    return magics
