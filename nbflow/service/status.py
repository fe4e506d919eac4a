"""What the status page shows, in the DAG widget's own terms: a layout, and node infos per job.

The status page (``GET /``, ``nbflow/service/static/``) draws a job's DAG with the
widget's view itself (``nbflow/widget/widget.js``), fed from HTTP instead of a
kernel. So this module hands it exactly what a :class:`~nbflow.widget.DagWidget`
syncs, built by the widget's code:

- :meth:`StatusPage.graph`: the workflow's structure laid out by Graphviz in the
  widget's layout process (:mod:`nbflow.widget.service`, never on the service's
  loop), with the states' styles, legend and rules (:mod:`nbflow.widget.layout`);
- :func:`job_nodes`: a job's per-task record as the widget's node infos
  (:mod:`nbflow.widget.nodes`: ``s`` state, ``a`` attempts, ``d``/``n`` branches).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import LayoutError
from ..widget.badges import mark_svg
from ..widget.layout import STATES, STYLES, Structure, state_rules, structure_of, to_graphviz
from .jobs import Job

if TYPE_CHECKING:
    from ..widget.service import LayoutService
    from .workflow import Workflow

__all__ = ["StatusPage", "job_nodes", "structure_for"]

logger = logging.getLogger(__name__)


def structure_for(workflow: Workflow) -> Structure:
    """The layout's input: the flow's own structure (mapped tasks, groups, commands) for a
    spec or module; the task names and edges read from a notebook otherwise."""
    if workflow.flow is not None:
        return structure_of(workflow.flow)
    graph = workflow.graph()
    names = tuple(graph["nodes"])
    index = {name: i for i, name in enumerate(names)}
    edges = tuple((index[u], index[d]) for u, d in graph["edges"] if u in index and d in index)
    return Structure(workflow.name, names, edges, frozenset())


class StatusPage:
    """The workflow's drawing for the status page, laid out once (the workflow is fixed).

    Parameters
    ----------
    workflow
        The served workflow.
    layouts
        Where Graphviz runs (default: the process-wide layout process of the widget).
    """

    def __init__(self, workflow: Workflow, layouts: LayoutService | None = None) -> None:
        self.workflow = workflow
        self.structure = structure_for(workflow)
        self._layouts = layouts
        self._svg: str | None = None

    async def graph(self) -> dict[str, Any]:
        """What the widget's view needs besides node infos (its traits, by name).

        ``svg`` is empty and ``layout_status`` says why when Graphviz is not installed
        or failed: the page still lists the jobs. A failed layout is tried again on the
        next call; a good one is kept.
        """
        status = "ready"
        if self._svg is None:
            try:
                self._svg = await self._layout()
            except (ImportError, LayoutError) as exc:
                status = " ".join(str(exc).split())
                logger.warning("nbflow serve: no DAG on the status page: %s", status)
        return {
            "flow_name": self.workflow.name,
            "workflow": {"name": self.workflow.name, "kind": self.workflow.kind,
                         "ref": self.workflow.ref},
            "svg": self._svg or "",
            "layout_status": status,
            "graph": self.structure.to_json(),
            "styles": STYLES,
            "legend": list(STATES),
            "state_rules": state_rules(),
        }

    async def _layout(self) -> str:
        from ..widget.service import get_service

        layouts = self._layouts or get_service()
        structure = self.structure
        # (the DOT is built on the layout thread, as the widget does: a large flow takes
        # tens of ms; without graphviz its ImportError comes back through the future)
        future = layouts.layout(structure.key, lambda: to_graphviz(structure).source)
        svg = await asyncio.wrap_future(future)
        return mark_svg(svg)  # command tasks' "$" badges, as the widget adds them


def job_nodes(job: Job) -> dict[str, Any]:
    """A job's tasks as the widget's node infos, with its status line.

    Returns
    -------
    dict
        ``id``, ``state`` (the job's; also the view's ``run_status``), ``nodes``
        (task -> node info; tasks that have not started are absent, so drawn as
        pending) and ``status_line`` (the job's id, state and duration).
    """
    nodes: dict[str, dict[str, Any]] = {}
    for name, task in job.tasks.items():
        info: dict[str, Any] = {"s": task.get("state") or "pending"}
        if task.get("attempts"):
            info["a"] = task["attempts"]
        branches = task.get("branches")
        if isinstance(branches, (list, tuple)) and len(branches) == 2:
            info["d"], info["n"] = int(branches[0]), int(branches[1])
        started = task.get("started")
        if isinstance(started, (int, float)):
            info["t0"] = started
            duration = task.get("duration")
            if isinstance(duration, (int, float)):
                info["t1"] = started + duration
        if info["s"] == "failed" and job.error:
            info["exc"] = job.error  # the job's one line, which names its failed tasks
        nodes[name] = info
    return {"id": job.id, "state": job.state, "nodes": nodes,
            "status_line": status_line(job)}


def status_line(job: Job) -> str:
    """``job 20261202-065237-1a2b3c succeeded in 3.2s`` (the page shows its error apart)."""
    line = f"job {job.id} {job.state}"
    if job.duration is not None:
        line += f" in {job.duration:.1f}s"
    return line
