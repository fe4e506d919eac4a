"""A workflow file's plan, made as a run would make it, without running a task.

``nbflow why`` compares what each task's cache key would be made of now with what
the run database recorded. It needs the same plan a run would make:

- a **spec** (``.yaml``/``.yml``/``.json``): loaded, its parameters resolved from
  ``-p``/``-f`` as ``nbflow run SPEC`` resolves them, then planned;
- a **notebook**: its setup code (the code cells before its first ``%nbflow run``:
  imports, helpers, the parameters cell) runs in a fresh namespace in the notebook's
  folder, as the kernel runs it, with ``-p``/``-f`` values set after the parameters
  cell as papermill sets them; then its ``%%nbflow task`` cells are declared (not run)
  into a :class:`~nbflow.notebook.NotebookFlow` named ``notebook``, and so are its
  ``%%nbflow command`` cells; then it is planned.

Planning computes each task's key parts (helpers, local modules, package versions,
globals) without calling a task (:meth:`nbflow.Flow.plan`).
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..cache_keys import task_key
from ..errors import BatchInputError, ExportError, NbflowError
from ..plan import Plan
from ..task import Task

__all__ = ["plan_workflow", "predicted_keys"]


def plan_workflow(path: str | Path, task: str, pairs: Sequence[tuple[str, str]] = (),
                  files: Iterable[str | Path] = ()) -> Plan:
    """The plan of a run of ``task`` (and what it needs) of the workflow at ``path``.

    Raises :class:`~nbflow.errors.BatchInputError` for a file that cannot be read, a bad
    parameter, or setup code that raises; :class:`~nbflow.errors.UnknownTaskError` (with
    close names) for a task the workflow does not declare.
    """
    from ..batch.spec_job import is_spec

    if not Path(path).is_file():
        raise BatchInputError(f"{path}: no such workflow file (give a notebook or a spec)")
    return _spec_plan(path, task, pairs, files) if is_spec(path) else \
        _notebook_plan(Path(path), task, pairs, files)


def predicted_keys(plan: Plan) -> dict[str, str | None]:
    """The cache key each task of ``plan`` will have, by name (None: it will not be
    cached), computed as the run computes it (:func:`nbflow.inputs.key_of_task`) on the
    assumption that its upstreams succeed."""
    keys: dict[str, str | None] = {}
    for pt in plan.tasks:
        keys[pt.name] = None
        if pt.stream or not pt.task.options.cache or pt.params_key is None \
                or pt.extra_key is None:
            continue
        source = pt.map_source if pt.elementwise else None
        ups = [keys[plan.tasks[d].name] for d in pt.deps if d != source]
        if source is not None:
            ups.append(keys[plan.tasks[source].name])
        if all(u is not None for u in ups):
            keys[pt.name] = task_key(pt.task.code_key, pt.params_key, pt.extra_key,
                                     [u for u in ups if u is not None])
    return keys


def _spec_plan(path: str | Path, task: str, pairs: Sequence[tuple[str, str]],
               files: Iterable[str | Path]) -> Plan:
    from ..batch.params import resolve
    from ..batch.spec_job import load, spec_parameters
    from ..batch.task_params import split_pairs, task_config
    from ..overrides import plan_with_config
    from ..spec import flow_from_spec

    spec = load(path)
    cell = spec_parameters(spec)
    plain, dotted = split_pairs(pairs)
    values = resolve(cell, str(path), plain, files)
    try:
        flow = flow_from_spec(spec)
    except NbflowError as exc:
        raise BatchInputError(str(exc)) from None
    if task not in flow.tasks:
        from ..errors import UnknownTaskError

        raise UnknownTaskError(flow.name, task, "the command line", flow.tasks)
    return plan_with_config(flow, task, values, config=task_config(cell, (), dotted))


def _notebook_plan(path: Path, task: str, pairs: Sequence[tuple[str, str]],
                   files: Iterable[str | Path]) -> Plan:
    from ..batch import params as P
    from ..batch.task_params import split_pairs, task_config
    from ..notebook.compiler import cell_task
    from ..notebook.export import read_workflow_notebook
    from ..notebook.state import NotebookFlow
    from ..overrides import plan_with_config

    raw = P.read_notebook(path)
    cell = P.parameters_cell(raw, str(path))
    plain, dotted = split_pairs(pairs)
    values = P.resolve(cell, str(path), plain, files)
    try:
        nb = read_workflow_notebook(path)
    except ExportError as exc:
        raise BatchInputError(str(exc)) from None
    namespace: dict[str, Any] = {"__name__": "__main__"}
    flow = NotebookFlow("notebook", namespace=namespace)
    namespace["flow"] = flow  # read_workflow_notebook wrote nf.notebook_flow() as flow
    pending = dict(values)
    with _inside(path.parent):
        for index, code in enumerate(nb.setup):
            try:
                exec(compile(code, f"<{path.name} setup {index + 1}>", "exec"), namespace)
            except Exception as exc:
                msg = (f"{path}: the notebook's setup code (before its first %nbflow run) "
                       f"raised {type(exc).__name__}: {exc}")
                raise BatchInputError(msg) from exc
            if pending and set(nb.parameters) & set(namespace):  # after the parameters cell
                namespace.update(pending)
                pending = {}
        namespace.update(pending)
        for t in nb.tasks:
            flow.add(cell_task(t.body, flow, namespace, t.options))
        for command in nb.commands:
            flow.add(_command_task(raw.cells[command.index].source, command.label))
        if task not in flow.tasks:
            from ..errors import UnknownTaskError

            raise UnknownTaskError(flow.name, task, "the command line", flow.tasks)
        return plan_with_config(flow, task, None, config=task_config(cell, (), dotted))


def _command_task(source: str, label: str) -> Task:
    """The task a ``%%nbflow command`` cell declares, as the magic declares it (the cell was
    checked when the notebook was read)."""
    from ..notebook.command_cells import command_cell_task
    from ..notebook.parser import build_parser

    header, _, body = source.lstrip().partition("\n")
    args = build_parser().parse_command(shlex.split(header[len("%%nbflow"):]))
    assert args is not None  # read_workflow_notebook refused a --help header
    return command_cell_task(args, body, label=label)


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Work in ``folder`` with it first on ``sys.path``, as the notebook's kernel does (its
    local modules import from there)."""
    where = str(folder.resolve())
    sys.path.insert(0, where)
    try:
        with contextlib.chdir(where):
            yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(where)
