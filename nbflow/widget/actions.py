"""What the widget's buttons start: the runner, and which tasks each action runs.

The widget's node and toolbar actions start runs only through a :data:`Runner`,
so they plan, cache and log like any other run. The functions here decide the
targets and the forced tasks of each action; the widget follows the run started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..graph import descendants
from .layout import Structure

if TYPE_CHECKING:
    from ..events import Observer
    from ..flow import Flow
    from ..run import Run
    from ..views import TaskView

__all__ = ("Runner", "default_runner", "downstream", "rerun_failed", "rerun_task")

#: ``runner(targets, force)`` starts a background run of the flow and returns it
Runner = Callable[[Sequence[str] | None, Sequence[str]], "Run"]


def default_runner(flow: Flow, observers: Iterable[Observer] = ()) -> Runner:
    """The runner of a widget given no other: ``flow.run(targets, force=force, background=True)``.

    The widget's actions then start runs the way any other code does (planning,
    executor setting, event log), and the forced tasks replace their cached results.
    ``observers`` observe each run from its start (the widget passes itself).
    """
    watching = list(observers)

    def run(targets: Sequence[str] | None, force: Sequence[str]) -> Run:
        return flow.run(targets, force=force, background=True, observers=watching)

    return run


def downstream(structure: Structure | None, name: str) -> set[str]:
    """The tasks drawn below ``name`` (not ``name`` itself)."""
    if structure is None or name not in structure.names:
        return set()
    return descendants(structure.parents(), [name]) - {name}


def rerun_task(structure: Structure | None, name: str) -> list[str]:
    """"Re-run": the task and what depends on it, all forced (targets = force)."""
    return [name, *sorted(downstream(structure, name))]


def rerun_failed(run: Run, views: Mapping[str, TaskView],
                 structure: Structure | None) -> tuple[list[str], list[str]]:
    """"Re-run failed": targets and forced tasks.

    The run's tasks again; its failed tasks and what depends on them forced, the
    rest from the cache. Descendants the run did not plan stay out.
    """
    failed = [name for name, view in views.items() if view.state == "failed"]
    if not failed:
        raise ValueError(f"run {run.id} has no failed task to re-run")
    again = set(failed)
    for name in failed:
        again |= downstream(structure, name)
    return list(views), [name for name in views if name in again]
