"""What every compile target reads: a workflow as plain data, from a notebook or a spec.

``nbflow convert`` loads the source once into a :class:`ConvWorkflow` (its parameters
with their JSON Schema, its tasks in dependency order, each with where its arguments
come from and its options), and each target (``script``, ``jupytext``, ``airflow``)
writes that out. A task's code is either an importable function (``use``, from a
spec) or a function's source (``source``, from a notebook cell), so a target never
needs nbflow's own task objects.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError, NbflowError

__all__ = ["ConvTask", "ConvWorkflow", "Param", "Ref", "load"]


@dataclass(frozen=True)
class Param:
    """One workflow parameter: its JSON Schema fragment says type, default and limits."""

    name: str
    schema: dict[str, Any]
    default: Any
    has_default: bool
    description: str = ""


@dataclass(frozen=True)
class Ref:
    """Where an argument's value comes from: a task's result, a parameter, or a literal."""

    kind: str  # "task" | "param" | "value"
    value: Any


@dataclass
class ConvTask:
    """One task, as a target needs it."""

    name: str
    #: the name the generated code calls (imported as, or defined as)
    function: str
    #: ``module:qualname`` to import (a spec's task), else None
    use: str | None = None
    #: the function's whole source (``def NAME(...):``), from a notebook cell, else None;
    #: with neither, ``function`` is defined by the workflow's ``setup`` code
    source: str | None = None
    is_async: bool = False
    args: dict[str, Ref] = field(default_factory=dict)
    #: the argument mapped element-wise (its Ref is a task), None when not mapped
    map: str | None = None
    batch_size: int | None = None
    after: list[str] = field(default_factory=list)
    run_on: str = "success"
    #: ``module:qualname`` of a predicate called with the task's arguments, else None
    run_if: str | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    export: bool = False
    image: str | None = None
    max_parallel: int | None = None
    #: a command task: ``{"command", "outputs", "stdin", "env", "text", "shell"}``
    command: dict[str, Any] | None = None
    #: True for a generator that streams: no target can express it yet
    stream: bool = False

    @property
    def upstreams(self) -> list[str]:
        """Tasks whose results it takes, then those it only waits for."""
        data = [r.value for r in self.args.values() if r.kind == "task"]
        return list(dict.fromkeys([*data, *self.after]))


@dataclass
class ConvWorkflow:
    """A workflow for the compile targets: parameters, tasks in dependency order, setup."""

    name: str
    description: str
    params: dict[str, Param]
    tasks: list[ConvTask]
    #: code the tasks' sources need (imports, helpers), in order; empty for a spec
    setup: list[str]
    #: the folder of the source (a spec's ``use`` modules are importable from it)
    base_dir: Path
    #: "notebook" or "spec"
    kind: str = "spec"

    @property
    def by_name(self) -> dict[str, ConvTask]:
        return {t.name: t for t in self.tasks}


def load(path: str | Path) -> ConvWorkflow:
    """A notebook (``.ipynb``) or an nbflow spec as a :class:`ConvWorkflow`.

    Raises :class:`ExportError` with the file (and task) when it cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".ipynb":
        return _from_notebook(path)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        return _from_spec(path)
    raise ExportError(f"{path}: convert a notebook (.ipynb) or a spec (.yaml, .yml, .json)")


def _ordered(tasks: list[ConvTask]) -> list[ConvTask]:
    """Dependency order, declaration order among tasks that could go either way."""
    by_name = {t.name: t for t in tasks}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for t in tasks:
        sorter.add(t.name, *[u for u in t.upstreams if u in by_name])
    rank = {t.name: i for i, t in enumerate(tasks)}
    sorter.prepare()
    out: list[ConvTask] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=rank.__getitem__)
        out.extend(by_name[n] for n in ready)
        sorter.done(*ready)
    return out


def _params(cell: Any) -> dict[str, Param]:
    from ..batch.params import to_schema

    schema = to_schema(cell)["properties"]
    return {name: Param(name, {k: v for k, v in schema[name].items()
                               if not k.startswith("x-nbflow")},
                        p.default, p.has_default, p.help)
            for name, p in cell.parameters.items()}


# -- a spec -----------------------------------------------------------------------------------


def _from_spec(path: Path) -> ConvWorkflow:
    from ..batch.spec_job import spec_parameters
    from ..spec import flow_from_spec, load_spec

    try:
        spec = load_spec(path)
        flow = flow_from_spec(spec)
    except NbflowError as exc:
        raise ExportError(str(exc)) from None
    tasks = [_spec_task(spec.file or str(path), name, task, set(flow.tasks))
             for name, task in flow.tasks.items()]
    return ConvWorkflow(flow.name, flow.description, _params(spec_parameters(spec)),
                        _ordered(tasks), [], (spec.base_dir or path.parent).resolve(), "spec")


def _spec_task(file: str, name: str, task: Any, names: set[str]) -> ConvTask:
    from ..commands import declared
    from ..spec_calls import importable_name

    o = task.options
    out = ConvTask(name=name, function=name, is_async=task.is_async, after=list(o.after),
                   run_on=o.run_on, retries=o.retries, retry_delay=o.retry_delay,
                   timeout=o.timeout, export=o.export, image=o.image,
                   max_parallel=o.max_parallel, batch_size=o.batch_size, stream=task.is_stream)
    command = declared(task)
    if command is not None:
        out.command = {"command": command.command, "outputs": dict(command.outputs),
                       "stdin": command.stdin, "env": dict(command.env),
                       "text": command.text, "shell": command.shell}
        out.args = _refs(list(task.inputs), names)
    else:
        call = task.fn
        use = importable_name(call.fn)
        if use is None:
            raise ExportError(f"{file}: task {name!r}: {call.use} cannot be imported by name "
                              "(defined in __main__ or a closure), so no target can call it")
        out.use, out.function = use, use.rpartition(":")[2].rpartition(".")[2]
        out.args = {arg: Ref(kind, value) for arg, (kind, value) in call.refs.items()}
        out.args.update({arg: Ref("value", v) for arg, v in call.literals.items()})
    if o.map is not None:
        out.map = next(a for a, r in out.args.items() if r.kind == "task" and r.value == o.map)
    if o.run_if is not None:
        predicate = getattr(o.run_if, "predicate", o.run_if)
        out.run_if = importable_name(predicate)
        if out.run_if is None:
            raise ExportError(f"{file}: task {name!r}: its run_if predicate cannot be "
                              "imported by name")
    return out


# -- a notebook ------------------------------------------------------------------------------


def _from_notebook(path: Path) -> ConvWorkflow:
    from ..batch.params import ParametersCell, parameters_cell, read_notebook
    from ..notebook.export import function_source, read_workflow_notebook

    nb = read_workflow_notebook(path)
    if not nb.tasks and not nb.function_tasks and not nb.commands:
        raise ExportError(f"{path}: no %%nbflow task cells, %%nbflow command cells or "
                          "@flow.task functions to convert")
    cell = parameters_cell(read_notebook(path), str(path)) or ParametersCell(str(path), 0, {})
    names, params = nb.task_names, set(cell.parameters)
    tasks: list[ConvTask] = []
    for tc in nb.tasks:
        inputs = [n for n in tc.body.reads if n in names or n in params]
        inputs += [n for n in tc.body.rebound if n not in inputs]
        task = _with_options(ConvTask(
            name=tc.name, function=tc.name, source=function_source(tc, inputs),
            is_async=tc.body.is_async, args=_refs(inputs, names)), tc.options)
        task.stream = task.map is None and _yields(tc.body.tree)
        tasks.append(task)
    _refuse_code_options(nb.setup)
    for fn_name, (inputs, options) in nb.function_tasks.items():
        tasks.append(_with_options(ConvTask(name=fn_name, function=fn_name,
                                            args=_refs(inputs, names)), options))
    for command in nb.commands:
        spec = {"command": command.script, "outputs": {}, "stdin": None, "env": {},
                "text": True, "shell": "sh", **command.arguments}
        tasks.append(_with_options(ConvTask(name=command.name, function=command.name,
                                            args=_refs(list(command.inputs), names),
                                            command=spec), command.options))
    setup = [_without_task_decorators(code) for code in nb.setup]
    return ConvWorkflow(nb.name, "", _params(cell), _ordered(tasks),
                        [c for c in setup if c.strip()], path.parent.resolve(), "notebook")


def _yields(tree: ast.AST) -> bool:
    """True when a cell body yields at its own level: the cell's task is a stream."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                 ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _refs(inputs: list[str], tasks: set[str]) -> dict[str, Ref]:
    return {n: Ref("task" if n in tasks else "param", n) for n in inputs}


def _with_options(task: ConvTask, options: dict[str, Any]) -> ConvTask:
    known = {"map", "after", "run_on", "retries", "retry_delay", "timeout", "export",
             "image", "max_parallel", "batch_size"}
    for key, value in options.items():
        if key == "run_if":
            raise ExportError(f"task {task.name!r}: a notebook's run_if is a Python "
                              "expression of the notebook; convert a spec for run_if")
        if key in known and value is not None:
            setattr(task, key, list(value) if key == "after" else value)
    return task


def _refuse_code_options(setup: list[str]) -> None:
    """A ``@flow.task(option=<code>)`` option (``run_if=any_long``) cannot be carried to a
    target as a value: refuse it by name rather than drop it."""
    for code in setup:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                        and dec.func.attr == "task" and isinstance(dec.func.value, ast.Name)
                        and dec.func.value.id == "flow"):
                    continue
                for kw in dec.keywords:
                    try:
                        ast.literal_eval(kw.value)
                    except ValueError:
                        raise ExportError(
                            f"task {node.name!r}: its option {kw.arg}={ast.unparse(kw.value)} "
                            "is notebook code, which a converted workflow cannot carry; "
                            "declare it in a spec (run_if: module:function)") from None


def _without_task_decorators(code: str) -> str:
    """``code`` without ``@flow.task`` decorators: the functions stay plain functions."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.splitlines()
    drop: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr == "task":
                    drop.update(range(dec.lineno - 1, (dec.end_lineno or dec.lineno)))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)
