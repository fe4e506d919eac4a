"""Which notebook cell declared each task, so that a task its cell no longer declares goes away.

Renaming a task cell (``%%nbflow task a`` becomes ``%%nbflow task b``) used to
leave task ``a`` in the flow: a ghost that every ``%nbflow run`` ran, and that
failed runs once its code no longer made sense. Front ends that send a cell id
with each execution (JupyterLab, Notebook 7 and VS Code put ``cellId`` in the
execute request's metadata; IPython hands it to the ``pre_run_cell`` and
``post_run_cell`` events as ``info.cell_id``) say which cell runs, whatever its
text now is. So:

- each task remembers the cell that declared it last (:class:`CellOwners`, one
  per flow); a task another cell redeclared since belongs to that cell;
- when a cell has run to the end, the tasks it declared when it ran before and
  did not declare now (its ``%%nbflow task`` line names another task, it is no
  task cell any more, its ``@flow.task`` function was renamed) are dropped from
  the flow, with one line saying so. Their values stay in the notebook, and
  their cached results in the cache;
- a cell that fails part-way drops nothing: it may not have reached its
  declarations;
- without a cell id (IPython in a terminal; nbclient and papermill, which run a
  notebook once from the top) nothing is tracked: ``%nbflow drop NAME`` removes
  a task.

Nothing here imports IPython: :func:`install` registers :func:`pre_run_cell`
and :func:`post_run_cell` on the shell's events.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UnknownTaskError

if TYPE_CHECKING:
    from .state import NotebookFlow

__all__ = ("CellOwners", "install", "post_run_cell", "pre_run_cell", "record")


class CellOwners:
    """One flow's record of the tasks each cell (by front-end cell id) declared."""

    def __init__(self) -> None:
        #: cell id -> the tasks it declared when it last ran to the end
        self.tasks_of: dict[str, set[str]] = {}
        #: task name -> the cell that declared it last (absent: unknown)
        self.cell_of: dict[str, str] = {}

    def declared(self, name: str, cell_id: str | None) -> None:
        """Task ``name`` was just declared, by cell ``cell_id`` (None: no known cell)."""
        if cell_id is None:
            self.cell_of.pop(name, None)
        else:
            self.cell_of[name] = cell_id

    def cell_ran(self, cell_id: str, names: set[str], complete: bool) -> list[str]:
        """Cell ``cell_id`` ran and declared ``names``: the tasks it no longer declares.

        Those are tasks it declared when it last ran and still owns. A cell that did
        not run to the end (``complete`` false) gives none, and keeps what it had.
        """
        before = self.tasks_of.get(cell_id, set())
        if not complete:
            self.tasks_of[cell_id] = before | names
            return []
        gone = sorted(n for n in before - names if self.cell_of.get(n) == cell_id)
        for name in gone:
            del self.cell_of[name]
        if names:
            self.tasks_of[cell_id] = set(names)
        else:
            self.tasks_of.pop(cell_id, None)
        return gone


@dataclass(eq=False)
class _Running:
    """A cell being run: IPython's ``ExecutionInfo`` and what it declared so far."""

    info: Any
    cell_id: str | None
    declared: list[tuple[NotebookFlow, str]] = field(default_factory=list)


#: cells being run, innermost last (a cell may run another with shell.run_cell)
_running: list[_Running] = []
#: flows that were declared into by a cell with an id
_flows: weakref.WeakSet[NotebookFlow] = weakref.WeakSet()


def record(flow: NotebookFlow, name: str) -> None:
    """Note that the running cell (if any) declared task ``name`` into ``flow``."""
    cell = _running[-1] if _running else None
    cell_id = cell.cell_id if cell is not None else None
    flow.owners.declared(name, cell_id)
    if cell is not None and cell_id is not None:
        cell.declared.append((flow, name))
        _flows.add(flow)


def pre_run_cell(info: Any) -> None:
    """IPython's ``pre_run_cell`` event: a cell starts."""
    cell_id = getattr(info, "cell_id", None)
    _running.append(_Running(info, cell_id if isinstance(cell_id, str) and cell_id else None))


def post_run_cell(result: Any) -> None:
    """IPython's ``post_run_cell`` event: drop the tasks the cell no longer declares."""
    info = getattr(result, "info", None)
    for index in range(len(_running) - 1, -1, -1):
        if _running[index].info is info:
            break
    else:
        return  # a cell that started no pre_run_cell (an empty one)
    cell = _running[index]
    del _running[index:]  # and any inner cell whose end was never announced
    if cell.cell_id is None:
        return
    complete = bool(getattr(result, "success", False))
    for flow in list(_flows):
        names = {name for f, name in cell.declared if f is flow}
        gone = [n for n in flow.owners.cell_ran(cell.cell_id, names, complete) if n in flow]
        now = f"now declares {', '.join(repr(n) for n in sorted(names))}" if names \
            else "no longer declares it"
        for name in gone:
            try:
                flow.drop(name)
            except UnknownTaskError:  # dropped meanwhile (another thread)
                continue
            flow.history.drop(name)
            print(f"nbflow: dropped task {name!r}: its cell {now}")
        if gone:
            flow.sync()


def install(shell: Any) -> None:
    """Follow the cells ``shell`` runs (once per shell: ``%reload_ext`` calls it again)."""
    events = shell.events
    for name, callback in (("pre_run_cell", pre_run_cell), ("post_run_cell", post_run_cell)):
        if callback not in events.callbacks[name]:
            events.register(name, callback)
