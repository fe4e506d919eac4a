"""Where a run's output goes in a notebook: task captures, progress, summary, failures.

- :func:`install_display_capture` routes IPython ``display()`` calls made by a
  running task into that task's :class:`~nbflow.capture.Capture` (so a
  background run never draws into whichever cell is executing).
- :func:`show_output` replays a task's captured stdout, stderr and displays
  under the current cell (only ever called from the cell that runs the flow).
- :func:`failure` turns a run's failures into a :class:`~nbflow.FlowFailed`
  whose notebook traceback shows the task cells' lines, not nbflow's frames.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import capture
from ..errors import FlowFailed
from ..states import ACTIVE, FINAL_ORDER
from .cells import relabel_traceback
from .compiler import cell_of

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..capture import Capture
    from ..run import Run
    from ..views import TaskView

_NBFLOW_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the display publishers already routed through task captures (one per shell)
_wrapped: weakref.WeakSet[Any] = weakref.WeakSet()


# -- rich displays from tasks --------------------------------------------------------------


def install_display_capture(shell: Any) -> None:
    """Wrap ``shell.display_pub`` so displays made inside a task go to its capture (idempotent)."""
    pub = shell.display_pub
    if pub in _wrapped:
        return
    publish = pub.publish
    clear_output = pub.clear_output

    def nbflow_publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
        target = capture.current()
        if target is None:
            return publish(data, metadata, *args, **kwargs)
        if kwargs.get("update"):  # an update of a display made by the same task
            display_id = (kwargs.get("transient") or {}).get("display_id")
            for item in target.displays:
                if display_id is not None and item.get("display_id") == display_id:
                    item.update(data=dict(data), metadata=dict(metadata or {}))
                    return None
        item = {"data": dict(data), "metadata": dict(metadata or {})}
        display_id = (kwargs.get("transient") or {}).get("display_id")
        if display_id is not None:
            item["display_id"] = display_id
        target.displays.append(item)
        return None

    def nbflow_clear_output(*args: Any, **kwargs: Any) -> Any:
        target = capture.current()
        if target is None:
            return clear_output(*args, **kwargs)
        target.displays.clear()
        target.stdout.clear()
        return None

    pub.publish = nbflow_publish
    pub.clear_output = nbflow_clear_output
    _wrapped.add(pub)


def show_output(label: str, output: Capture) -> None:
    """Replay one task item's captured output under the current cell."""
    from IPython.display import publish_display_data

    if not output:
        return
    sys.stdout.write(f"[{label}]\n")
    text = output.text("stdout")
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
    err = output.text("stderr")
    if err:
        sys.stderr.write(err if err.endswith("\n") else err + "\n")
        sys.stderr.flush()
    for item in output.displays:
        publish_display_data(item["data"], item.get("metadata") or {})  # type: ignore[no-untyped-call]


def show_task_output(view: TaskView) -> None:
    """Replay what task ``view`` printed and displayed (each branch of a mapped task in order)."""
    for branch, out in sorted(view.output.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
        show_output(view.name if branch is None else f"{view.name}[{branch}]", out)


class OutputShower:
    """Shows each task's captured output once, as tasks of a run end."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.shown: set[str] = set()

    def poll(self) -> None:
        """Show the output of the tasks that ended since the last call, in run order."""
        for name, view in self.run.tasks.items():
            if name in self.shown or not view.final:
                continue
            self.shown.add(name)
            show_task_output(view)


# -- progress and summary ----------------------------------------------------------------------


def show_run(run: Run) -> None:
    """Display ``run`` in the notebook as its repr, updated in place when the run ends.

    IPython calls this for a :class:`~nbflow.Run` that a cell evaluates to
    (``run``, or ``%nbflow run --background``), so the output does not say
    "running" forever in the saved notebook.
    """
    from IPython.display import display

    handle = display({"text/plain": repr(run)}, raw=True, display_id=True)  # type: ignore[no-untyped-call]
    if handle is not None and not run.done:
        update_when_done(run, lambda: handle.update({"text/plain": repr(run)}, raw=True))


def update_when_done(run: Run, update: Callable[[], Any]) -> None:
    """Call ``update`` once ``run`` has ended (and its last events were delivered), from a
    thread of its own: the kernel's thread stays free."""

    def wait_then_update() -> None:
        try:
            run.wait()
        except Exception:  # the run's own error is shown where it was run
            pass
        try:
            update()
        except Exception:  # a display that cannot be updated keeps its first picture
            logger.warning("nbflow: could not update the output of run %s", run.id,
                           exc_info=True)

    threading.Thread(target=wait_then_update, name="nbflow-display-update", daemon=True).start()


def live_widget(flow: Any, run: Run | None, runner: Any = None) -> Any:
    """The live DAG widget of ``flow`` (following ``run``), or None without ``nbflow[widget]``."""
    try:
        from ..widget.model import DagWidget
    except ImportError:
        return None
    return DagWidget(flow, run, runner=runner)


def progress_text(run: Run) -> str:
    """``nbflow: 3/6 tasks finished (2 succeeded, 1 cached), 1 running``."""
    states = run.states
    total = len(states)
    final = dict.fromkeys(FINAL_ORDER, 0)
    running = 0
    for s in states.values():
        if s in final:
            final[s] += 1
        elif s in ACTIVE:
            running += 1
    done = sum(final.values())
    parts = ", ".join(f"{n} {s}" for s, n in final.items() if n)
    text = f"nbflow: {done}/{total} tasks finished"
    if parts:
        text += f" ({parts})"
    if running:
        text += f", {running} running"
    return text


def _names(names: list[str], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... (+{len(names) - limit})"


def summary_line(run: Run) -> str:
    """One line: the run's status, how long it took, which tasks were computed or reused."""
    by_state: dict[str, list[str]] = {}
    for name, state in run.states.items():
        by_state.setdefault(state, []).append(name)
    took = ""
    if run.started is not None:
        took = f" in {(run.ended or time.time()) - run.started:.2f}s"
    words = {s: "computed" if s == "succeeded" else s for s in FINAL_ORDER}
    parts = [f"{len(by_state[s])} {w} ({_names(by_state[s])})"
             for s, w in words.items() if by_state.get(s)]
    return f"nbflow: run {run.status}{took}: " + ", ".join(parts)


# -- failures -------------------------------------------------------------------------------


def interrupted() -> KeyboardInterrupt:
    """The kernel interrupt re-raised after a blocking run was cancelled: IPython shows it
    as one line (the run's state was printed just before), not nbflow's frames that
    happened to be running when the interrupt arrived."""
    error = KeyboardInterrupt("the nbflow run was cancelled")
    error._render_traceback_ = _Lines(  # type: ignore[attr-defined]
        ["KeyboardInterrupt: the nbflow run was cancelled"])
    return error


class _Lines(list):  # type: ignore[type-arg]
    """A picklable ``_render_traceback_``: IPython calls it for the error's traceback lines."""

    def __call__(self) -> list[str]:
        return list(self)


def strip_nbflow_frames(text: str) -> str:
    """Drop the frames of nbflow's own code from a formatted traceback."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith('  File "'):
            path = line[len('  File "'):].split('"', 1)[0]
            skipping = os.path.abspath(path).startswith(_NBFLOW_DIR + os.sep) if \
                not path.startswith("<") else False
            if skipping:
                continue
        elif skipping and line.startswith("    "):
            continue
        else:
            skipping = False
        out.append(line)
    return "\n".join(out)


def failure(run: Run, flow_tasks: Any) -> FlowFailed:
    """The run's :class:`~nbflow.FlowFailed`, rendered in a notebook as the tasks' tracebacks."""
    failures = run.failures
    err = FlowFailed(run.flow, failures, run)
    names = ", ".join(sorted({f.label for f in failures}))
    red, reset = "\x1b[31m", "\x1b[0m"
    head = f"{red}FlowFailed{reset}: {len(failures)} task(s) of flow {run.flow!r} failed: {names}"
    lines = [head]
    for f in failures:
        task = flow_tasks.get(f.task)
        cell = cell_of(task) if task is not None else None
        where = f", {cell.label}" if cell is not None else ""
        lines.append("")
        lines.append(f"--- {f.label} (attempt {f.attempt}{where}) ---")
        lines.extend(relabel_traceback(strip_nbflow_frames(f.traceback.rstrip())).splitlines())
    err._render_traceback_ = _Lines(lines)  # type: ignore[attr-defined]
    return err
