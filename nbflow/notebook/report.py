"""The text the magics print about a flow: declarations, status and show tables, mistakes.

Every function here returns text and prints nothing, so the magics stay one
call and one ``print`` each, and the reports test without a shell. They read
the flow, its history and the last run's frozen task views only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import graph
from ..errors import MissingParameterError, suggest
from ..states import FINAL, OK
from .command_cells import is_command_cell, placeholder_line
from .compiler import cell_of

if TYPE_CHECKING:
    from ..task import Task
    from .state import NotebookFlow


def graph_descendants(flow: NotebookFlow, name: str) -> set[str]:
    """Tasks downstream of ``name`` (through data and ``after=``), without ``name`` itself."""
    deps = flow.dependencies()
    return graph.descendants(deps, graph.children_of(deps).get(name, ()))


def declared_line(flow: NotebookFlow, name: str, old: Task | None, task: Task,
                  namespace: Mapping[str, Any]) -> str:
    """``nbflow: task 'clean' (upstream: load): changed; stale downstream: total``.

    Says what the task reads (upstream tasks, notebook variables not defined
    yet) and how the declaration compares with the previous one, so an edit
    shows at once what the next run recomputes.
    """
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
        parts.append("notebook: " + ", ".join(
            p if p in namespace else f"{p} (not defined yet)" for p in params))
    return f"nbflow: task {name!r} ({'; '.join(parts)}): {verdict}"


def status_lines(flow: NotebookFlow) -> list[str]:
    """``%nbflow status``: a header, then a table of task, state, upstream, duration, note.

    A task's state is the last run's (its view), else what the history
    remembers, else ``new``. A task with a result whose code or an upstream's
    code changed since is ``stale``; the note says which (:meth:`NotebookFlow.stale`).
    """
    run = flow.last_run
    views = run.tasks if run is not None else {}
    deps = flow.dependencies()
    rows = [("task", "state", "upstream", "duration", "note")]
    for name in flow.tasks:
        note = ""
        duration = ""
        snap = flow.history.get(name)
        view = views.get(name)
        state: str
        if view is not None:
            state = view.state
            if view.mapped and view.branches is not None:
                note = f"{view.done}/{view.branches} branches"
            if view.duration is not None and state in FINAL:
                duration = f"{view.duration:.2f}s"
        elif snap is not None:
            state = snap.state
        else:
            state = "not run"
        why = flow.stale(name) if state in OK else None
        if why is not None:
            state, note = "stale", why.removeprefix("its ")
        elif state == "not run" or (run is not None and view is None and snap is None):
            state = "new"
        rows.append((name, state, ", ".join(deps[name]), duration, note))
    header = f"Flow {flow.name!r}: {len(flow)} tasks"
    if run is not None:
        header += f"; last run {run.id}: {run.status}"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [header] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if flow.service is not None:  # flow.serve(): its jobs
        lines += ["", *flow.service.status_lines()]
    return lines


def show_lines(flow: NotebookFlow) -> tuple[list[str], bool]:
    """``%nbflow show``: the tasks in dependency order with their upstreams.

    Returns the lines and whether the flow has a cycle (then the tasks are in
    declaration order and the last line is the cycle's path).
    """
    deps = flow.dependencies()
    lines = [f"Flow {flow.name!r}: {len(flow)} tasks"]
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
        lines.append(line.rstrip())
    if cycle is not None:
        lines.append("  cycle: " + " -> ".join(cycle))
    return lines, cycle is not None


def missing_message(flow: NotebookFlow, exc: MissingParameterError,
                    namespace: Mapping[str, Any]) -> str:
    """Why a run cannot start: each name a task reads that is neither a task nor defined.

    Names the task cell and line that reads it and suggests a close name of
    the notebook or the flow.
    """
    known = [n for n in namespace if not n.startswith("_") and n not in ("In", "Out")]
    known = list(dict.fromkeys([*known, *flow.tasks]))  # a run binds each task's result
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
            elif task is not None and is_command_cell(task):
                line = placeholder_line(task, name)
                lines.append(f"Command {user!r} ({task.source}, line {line}) uses {{{name}}}, "
                             f"which is neither a task nor defined in the notebook."
                             + suggest(name, known))
            else:
                lines.append(f"Task {user!r} needs parameter {name!r}, which is neither a "
                             f"task, a notebook variable nor given with -p."
                             + suggest(name, known))
    return " ".join(lines)


def syntax_message(name: str, label: str, exc: SyntaxError) -> str:
    """A task cell's syntax error: the cell line with a caret, and what to do about IPython
    syntax (which a task body cannot hold, as it may run in another process)."""
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
