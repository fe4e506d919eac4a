"""The task and run states: one definition, used by the scheduler, the views, the
event log, the magics and the widget (which gets them from Python).

A task moves ``pending -> ready -> running`` and ends in one of :data:`FINAL`;
``retrying`` sits between two attempts. A mapped task's state sums up its
branches (see :func:`mapped_state`); :func:`aggregate` sums up a group of tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

TaskState = Literal[
    "pending", "ready", "running", "retrying", "succeeded", "cached", "failed", "skipped",
    "cancelled",
]
#: every task state, in the order a task goes through them
TASK_STATES: tuple[TaskState, ...] = get_args(TaskState)

RunStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)

#: states a task (or branch) ends in
FINAL: frozenset[str] = frozenset({"succeeded", "cached", "failed", "skipped", "cancelled"})
#: final states with a result
OK: frozenset[str] = frozenset({"succeeded", "cached"})
#: states of a task that has started and not ended
ACTIVE: frozenset[str] = frozenset({"running", "retrying"})
#: final states in the order reports list them
FINAL_ORDER: tuple[TaskState, ...] = ("succeeded", "cached", "failed", "skipped", "cancelled")


def aggregate(counts: Mapping[str, int], total: int) -> TaskState:
    """The state of a group of ``total`` ended tasks (a folded group in the widget), from
    their ``counts``: failed, cancelled, all cached, all skipped, else succeeded."""
    if counts.get("failed"):
        return "failed"
    if counts.get("cancelled"):
        return "cancelled"
    if counts.get("cached") == total:
        return "cached"
    if counts.get("skipped") == total:
        return "skipped"
    return "succeeded"


def mapped_state(counts: Mapping[str, int], total: int) -> TaskState:
    """The state of a mapped task whose ``total`` branches all ended, from their ``counts``.

    Its result is the list of its branch results, so it has one (``succeeded`` or
    ``cached``) only when every branch has: ``failed`` if a branch failed, else
    ``cancelled`` if one was cancelled, else ``skipped`` if one was skipped (by its
    ``run_if``, or because its upstream branch failed). What depends on it with the
    default ``run_on="success"`` is then skipped too; a ``run_on="always"`` task gets
    the list, with a :class:`~nbflow.Failed` or :class:`~nbflow.Skipped` in place of
    each missing branch result.
    """
    if counts.get("failed"):
        return "failed"
    if counts.get("cancelled"):
        return "cancelled"
    if counts.get("skipped"):
        return "skipped"
    if counts.get("cached") == total:
        return "cached"
    return "succeeded"


def run_status(states: frozenset[str] | set[str]) -> RunStatus:
    """The status of a run whose tasks all ended in ``states``."""
    if "failed" in states:
        return "failed"
    if "cancelled" in states:
        return "cancelled"
    return "succeeded"


def ended_verb(state: str) -> str:
    """How a state reads after "upstream X": ``failed``, ``was skipped``, ``is running``."""
    return {"failed": "failed", "skipped": "was skipped", "cancelled": "was cancelled"}.get(
        state, f"is {state}"
    )
