"""The workflow a service serves: a notebook, a spec or a ``package.module:flow``.

Loaded once when the service starts, so an unreadable workflow is a one-line error
before anything listens. It knows its parameters (for the JSON Schema, and to check
each job's values before the job is queued) and its graph (for the status page).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchInputError, JobParamsError, NbflowError, ServiceError

if TYPE_CHECKING:
    from ..batch.params import ParametersCell
    from ..flow import Flow

__all__ = ["Workflow", "load_workflow", "of_flow"]

_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
          dict: "object"}


@dataclass
class Workflow:
    """A loaded workflow: what it is, its parameters, its tasks and their edges."""

    #: as the user named it (a path, or ``package.module:flow``)
    ref: str
    #: "notebook", "spec", "module" or "flow" (a Flow object: ``flow.serve()``)
    kind: str
    name: str
    cell: ParametersCell
    #: upstream -> downstream pairs between task names
    edges: list[tuple[str, str]]
    tasks: list[str]
    #: the flow a spec or module job runs in-process (None for a notebook)
    flow: Flow | None = None
    #: the notebook's path (None for a spec or module)
    path: Path | None = None

    def schema(self) -> dict[str, Any]:
        """The parameters as JSON Schema: what ``POST /jobs`` must send."""
        from ..batch.params import to_schema

        schema = to_schema(self.cell)
        schema["title"] = f"Parameters of {self.name}"
        for prop in schema["properties"].values():  # a notebook's own value: not a job's
            prop.pop("x-nbflow-expression", None)
        return schema

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` checked against the workflow's parameters; :class:`JobParamsError`
        names the first bad key. Values are JSON values, never code."""
        from ..batch.params import check_name, check_value

        if not isinstance(params, Mapping):
            raise JobParamsError("the parameters must be a JSON object of name: value")
        out: dict[str, Any] = {}
        for name, value in params.items():
            try:
                p = check_name(self.cell, str(name), self.name)
                out[p.name] = check_value(p, value, self.name)
            except BatchInputError as exc:
                raise JobParamsError(str(exc), key=str(name)) from None
        if self.kind != "notebook":
            for p in self.cell.parameters.values():
                if not p.has_default and p.name not in out:
                    raise JobParamsError(f"parameter {p.name!r} is required: it has no default",
                                         key=p.name)
        return out

    def graph(self) -> dict[str, Any]:
        """``{"nodes": [task, ...], "edges": [[upstream, downstream], ...]}``."""
        return {"nodes": list(self.tasks), "edges": [list(e) for e in self.edges]}


def load_workflow(ref: str | Path) -> Workflow:
    """Load a notebook (``.ipynb``), a spec (``.yaml``, ``.yml``, ``.json``) or a
    ``package.module:flow`` reference; :class:`ServiceError` in one line otherwise."""
    from ..batch.spec_job import is_spec

    text = str(ref)
    path = Path(text)
    try:
        if path.suffix.lower() == ".ipynb":
            return _notebook(path)
        if is_spec(path):
            return _spec(path)
        if ":" in text and not path.exists():
            return _module(text)
    except NbflowError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ServiceError(f"cannot serve {text}: {first}") from None
    raise ServiceError(f"cannot serve {text}: not a notebook (.ipynb), a spec (.yaml, .yml, "
                       ".json) or a package.module:flow reference")


def _notebook(path: Path) -> Workflow:
    from ..batch.params import ParametersCell, parameters_cell, read_notebook
    from ..notebook.export import read_workflow_notebook

    if not path.is_file():
        raise ServiceError(f"no notebook {path}")
    nb = read_notebook(path)
    cell = parameters_cell(nb, str(path)) or ParametersCell(str(path), 0, {})
    parsed = read_workflow_notebook(path)
    names = parsed.task_names
    edges: list[tuple[str, str]] = []
    for task in parsed.tasks:
        ups = [n for n in task.body.reads if n in names and n != task.name]
        ups += [a for a in task.options.get("after", ()) or () if a in names]
        edges += [(u, task.name) for u in dict.fromkeys(ups)]
    for fn_name, (inputs, options) in parsed.function_tasks.items():
        ups = [n for n in inputs if n in names] + list(options.get("after", ()) or ())
        edges += [(u, fn_name) for u in dict.fromkeys(ups) if u in names]
    tasks = [t.name for t in parsed.tasks] + [c.name for c in parsed.commands]
    tasks += [n for n in parsed.function_tasks if n not in tasks]
    return Workflow(str(path), "notebook", path.stem, cell, edges, tasks, path=path.resolve())


def _spec(path: Path) -> Workflow:
    from ..batch.spec_job import load, spec_parameters
    from ..spec import flow_from_spec

    spec = load(path)
    flow = flow_from_spec(spec)
    return _of_flow(str(path), "spec", flow, spec_parameters(spec))


def _module(ref: str) -> Workflow:
    from ..flow import Flow

    module_name, _, attr = ref.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: the folder you serve from
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ServiceError(f"cannot serve {ref}: importing {module_name} raised "
                           f"{type(exc).__name__}: {exc}") from None
    flow = getattr(module, attr, None)
    if not isinstance(flow, Flow):
        found = "nothing" if flow is None else f"a {type(flow).__name__}"
        raise ServiceError(f"cannot serve {ref}: {module_name}.{attr} is {found}, not an "
                           "nbflow Flow")
    return _of_flow(ref, "module", flow, _flow_parameters(ref, flow))


def of_flow(flow: Flow) -> Workflow:
    """A flow object (``flow.serve()`` in a notebook) as a served workflow."""
    return _of_flow(flow.name, "flow", flow, _flow_parameters(flow.name, flow))


def _of_flow(ref: str, kind: str, flow: Flow, cell: ParametersCell) -> Workflow:
    deps = flow.dependencies()
    edges = [(u, t) for t, ups in deps.items() for u in ups]
    return Workflow(ref, kind, flow.name, cell, edges, list(flow.tasks), flow=flow)


def _flow_parameters(ref: str, flow: Flow) -> ParametersCell:
    """A flow's parameters (inputs no task makes) as a parameters cell would describe them."""
    from ..batch.params import Parameter, ParametersCell

    params = {}
    namespace = flow.namespace or {}
    typed = flow.typed_parameters()
    for i, (name, default) in enumerate(flow.parameters().items()):
        if default is ... and name in namespace:  # a notebook's variable: its value now
            default = namespace[name]
        has = default is not ...
        t = typed.get(name)
        kind = _KINDS.get(type(default)) if has else None
        if t is not None:
            found = t.schema().get("type")
            kind = found if isinstance(found, str) else kind
        params[name] = Parameter(name=name, type=kind, default=default if has else None,
                                 has_default=has, source=repr(default) if has else "",
                                 help=t.description if t else "", line=i + 1, typed=t,
                                 declared=f"in {ref}")
    return ParametersCell(notebook=ref, index=0, parameters=params, kind="flow")
