"""Notebook -> a plain Python module (and optionally a workflow spec).

The module runs the notebook's workflow without Jupyter:

- the code cells before the first ``%nbflow run`` (imports, helper functions,
  the ``parameters`` cell) run at import;
- every ``%%nbflow task`` cell becomes a ``@flow.task`` function whose
  parameters are its upstream tasks and the notebook parameters it reads;
  other names it reads are module globals, as in the notebook;
- every ``%%nbflow command`` cell becomes a ``flow.command(...)`` call (a
  ``command:`` entry in a spec);
- under ``if __name__ == "__main__":`` come ``-p NAME VALUE`` overrides from
  the command line, then the rest of the notebook in order, where each
  ``%nbflow run`` becomes ``flow.run(...)`` and binds the results as globals,
  as the magic does. Other magics are dropped.

A spec export writes the module next to the spec and names its functions
(``use: module:task``), with the ``parameters`` cell as spec parameters.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeclarationError, ExportError
from ..task import check_variable_name, make_options
from .command_cells import CommandCell, CommandCellError, command_call, command_cell
from .command_cells import command_spec_entry
from .compiler import CellBody, parse_cell
from .parser import CommandParser, build_parser, task_options
from .state import builtin_problem


@dataclass
class TaskCell:
    """One ``%%nbflow task`` cell: its name, analysed body, options and cell index."""

    name: str
    body: CellBody
    options: dict[str, Any]
    index: int


@dataclass
class Notebook:
    """The parts of a workflow notebook that matter for an export."""

    name: str
    setup: list[str] = field(default_factory=list)
    tasks: list[TaskCell] = field(default_factory=list)
    main: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    #: @flow.task functions declared in code cells: name -> (parameter names, options)
    function_tasks: dict[str, tuple[list[str], dict[str, Any]]] = field(default_factory=dict)
    commands: list[CommandCell] = field(default_factory=list)

    @property
    def task_names(self) -> set[str]:
        """Every task the notebook declares: task cells, command cells, @flow.task functions."""
        return {t.name for t in self.tasks} | {c.name for c in self.commands} | \
            set(self.function_tasks)


def read_workflow_notebook(path: str | Path) -> Notebook:
    """Split a notebook into setup code, task cells and the code after the first run.

    Raises :class:`~nbflow.errors.ExportError` naming the cell (and line) for a
    task header the magic would refuse, or a task body that is not Python.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read the notebook: {exc}") from exc
    parser = build_parser()
    nb = Notebook(name=path.stem.replace("-", "_"))
    seen_run = False
    for index, cell in enumerate(data.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        label = f"{path.name} cell {index + 1}"
        stripped = source.lstrip()
        if stripped.startswith("%%nbflow"):
            header, _, body = stripped.partition("\n")
            try:
                args = parser.parse_command(shlex.split(header[len("%%nbflow"):]))
            except ValueError as exc:  # a usage mistake, or unbalanced quotes
                raise ExportError(f"{label}: {header.strip()}: {exc}") from exc
            if args is None:
                raise ExportError(f"{label}: {header.strip()}: --help in a task cell header; "
                                  "remove it to export the task")
            if args.command not in ("task", "command"):
                continue
            problem = _name_problem(args.name)
            if problem is not None:
                raise ExportError(f"{label}: {header.strip()}: {args.name!r} {problem}")
            if args.command == "command":
                try:
                    nb.commands.append(command_cell(args, body, label=label, index=index))
                except CommandCellError as exc:
                    raise ExportError(str(exc)) from None
                continue
            try:
                make_options(args.name, task_options(args))
            except DeclarationError as exc:  # an option value the magic refuses (nan, inf)
                raise ExportError(f"{label}: {header.strip()}: {exc}") from None
            try:
                parsed = parse_cell(args.name, body, label=label, header=header)
            except SyntaxError as exc:
                raise ExportError(f"{label}, line {exc.lineno}: {exc.msg}") from exc
            nb.tasks.append(TaskCell(args.name, parsed, task_options(args), index))
            continue
        if stripped.startswith("%%"):
            continue  # another cell magic: IPython only
        tags = cell.get("metadata", {}).get("tags", [])
        code, runs = _translate(source, parser)
        # the notebook's default flow is the module's flow
        code = code.replace("nf.notebook_flow()", "flow").replace("nbflow.notebook_flow()", "flow")
        code = "\n".join(line for line in code.splitlines() if line.strip() != "flow = flow")
        if "parameters" in tags:
            nb.parameters.update(_literal_assignments(code))
        nb.function_tasks.update(_decorated_tasks(code))
        if runs and not seen_run:
            seen_run = True
        (nb.main if seen_run else nb.setup).append(code)
    return nb


def _name_problem(name: str) -> str | None:
    """Why the magic refuses ``name`` as a task cell's name, or None."""
    if not name.isidentifier():
        return "is not a valid task name (use a Python identifier)"
    return check_variable_name(name) or builtin_problem(name)


def _translate(source: str, parser: CommandParser) -> tuple[str, bool]:
    """IPython-only lines out, ``%nbflow run`` into ``flow.run``; True if it ran."""
    out: list[str] = []
    ran = False
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("%nbflow") and not text.startswith("%nbflow_"):
            try:
                words = shlex.split(text[len("%nbflow"):])
            except ValueError:
                continue  # unbalanced quotes: the magic refuses it too
            if words and words[0] == "run":
                try:
                    args = parser.parse_command(words)
                except ValueError:
                    continue  # a mistaken run line: the notebook fails there too
                if args is None:
                    continue  # --help
                call = _run_call(args)
                indent = line[: len(line) - len(line.lstrip())]
                out.append(f"{indent}_run = {call}")
                out.append(f"{indent}globals().update(_run.results)")
                ran = True
            continue
        if text.startswith(("%", "!")):
            continue
        if _RUN_CALL.search(line):  # the notebook's flow run from Python: flow.run(...)
            ran = True
        out.append(line)
    return "\n".join(out).strip("\n"), ran


#: a Python call that runs the notebook's flow (``flow.run(``, ``nf.notebook_flow().run(``)
_RUN_CALL = re.compile(r"\b(flow|notebook_flow\(\))\.run(_async)?\(")


def _run_call(args: Any) -> str:
    parts = []
    if args.targets:
        parts.append(repr(list(args.targets)))
    params = dict(args.param or [])
    if params:
        parts.append(f"params={params!r}")
    if args.executor:
        parts.append(f"executor={args.executor!r}")
    return f"flow.run({', '.join(parts)})"


def _literal_assignments(code: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return values
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name) and stmt.value is not None:
                try:
                    values[targets[0].id] = ast.literal_eval(stmt.value)
                except ValueError:
                    continue
    return values


def _decorated_tasks(code: str) -> dict[str, tuple[list[str], dict[str, Any]]]:
    found: dict[str, tuple[list[str], dict[str, Any]]] = {}
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return found
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in stmt.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr == "task" \
                        and isinstance(target.value, ast.Name) and target.value.id == "flow":
                    # the notebook's flow only: `@feed.task` declares a task of another flow
                    options: dict[str, Any] = {}
                    for kw in dec.keywords if isinstance(dec, ast.Call) else []:
                        try:
                            options[str(kw.arg)] = ast.literal_eval(kw.value)
                        except ValueError:
                            continue
                    a = stmt.args
                    names = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
                    name = options.pop("name", stmt.name)
                    found[str(name)] = (names, options)
    return found


def _function_source(cell: TaskCell, inputs: list[str]) -> str:
    options = "".join(f", {k}={v!r}" for k, v in cell.options.items())
    decorator = f"@flow.task(name={cell.name!r}{options})"
    return decorator + "\n" + function_source(cell, inputs)


def function_source(cell: TaskCell, inputs: list[str]) -> str:
    """A task cell as a plain function ``def NAME(inputs):`` returning what the cell makes."""
    body = cell.body
    lines = body.source.splitlines()
    tree = ast.parse(body.source)
    if body.result == "expr" and tree.body:
        last = tree.body[-1]
        i = last.lineno - 1
        lines[i] = lines[i][: last.col_offset] + "return " + lines[i][last.col_offset:]
    elif body.result == "name":
        lines.append(f"return {cell.name}")
    if not any(line.strip() for line in lines):
        lines = ["return None"]
    kind = "async def" if body.is_async else "def"
    signature = f"{kind} {cell.name}({', '.join(inputs)}):"
    return "\n".join([signature, textwrap.indent("\n".join(lines), "    ")])


def export_module(nb: Notebook, source_name: str, file_name: str | None = None) -> str:
    """The Python module text of a workflow notebook."""
    task_names = nb.task_names
    params = set(nb.parameters)
    parts = [
        f'"""The workflow of {source_name}, exported by `nbflow export`.\n\n'
        f"Run it with: python {file_name or nb.name + '.py'} [-p NAME VALUE ...]\n"
        '"""\n',
        "import nbflow as nf",
        "",
        "flow = nf.Flow(" + repr(nb.name) + ", namespace=globals())",
        "",
        "# -- notebook code before the first run: imports, helpers, parameters",
        *[c + "\n" for c in nb.setup if c.strip()],
        "# -- task cells",
    ]
    for cell in nb.tasks:
        inputs = [n for n in cell.body.reads if n in task_names or n in params]
        inputs += [n for n in cell.body.rebound if n not in inputs]
        parts.append(_function_source(cell, inputs) + "\n")
    parts += [command_call(cell) + "\n" for cell in nb.commands]
    main = [c for c in nb.main if c.strip()]
    if not any("flow.run(" in c for c in main):
        main.append("_run = flow.run()\nglobals().update(_run.results)")
    parts += [
        "",
        "def _parameters(argv):",
        '    """-p NAME VALUE pairs; values are Python literals, else strings."""',
        "    import ast",
        "    out = {}",
        "    while argv:",
        "        flag, name, value, *argv = argv",
        "        if flag not in ('-p', '--param'):",
        "            raise SystemExit(f'usage: python {__file__} [-p NAME VALUE ...]')",
        "        try:",
        "            out[name] = ast.literal_eval(value)",
        "        except (ValueError, SyntaxError):",
        "            out[name] = value",
        "    return out",
        "",
        "",
        'if __name__ == "__main__":',
        "    import sys",
        "",
        "    globals().update(_parameters(sys.argv[1:]))",
        textwrap.indent("\n\n".join(main), "    "),
        "    print(_run.summary())",
        "",
    ]
    return "\n".join(parts)


def export_spec(nb: Notebook, module: str) -> dict[str, Any]:
    """A spec naming the exported module's task functions (and the command cells' commands)."""
    task_names = nb.task_names
    params = nb.parameters
    tasks: dict[str, Any] = {}
    declared = [(c.name, list(c.body.reads), c.options) for c in nb.tasks]
    declared += [(name, names, opts) for name, (names, opts) in nb.function_tasks.items()]
    for task, reads, options in declared:
        args: dict[str, Any] = {}
        for name in reads:
            if name in task_names:
                args[name] = {"$task": name}
            elif name in params:
                args[name] = {"$param": name}
        entry: dict[str, Any] = {"use": f"{module}:{task}"}
        if args:
            entry["args"] = args
        entry.update(options)
        tasks[task] = entry
    for command in nb.commands:
        try:
            tasks[command.name] = command_spec_entry(command, task_names, params)
        except CommandCellError as exc:
            raise ExportError(str(exc)) from None
    parameters = {name: {"type": _type_name(value), "default": value}
                  for name, value in params.items()}
    data: dict[str, Any] = {"nbflow": 1, "name": nb.name}
    if parameters:
        data["parameters"] = parameters
    data["tasks"] = tasks
    return data


def _type_name(value: Any) -> str:
    for kind, types_ in (("boolean", bool), ("integer", int), ("number", float),
                         ("string", str), ("list", list), ("object", dict)):
        if isinstance(value, types_):
            return kind
    return "any"


def export_notebook(notebook: str | Path, out: str | Path) -> list[Path]:
    """Write ``out`` (``.py``, or ``.yaml``/``.yml``/``.json`` plus its module); return the files."""
    from ..spec import dump_spec

    notebook, out = Path(notebook), Path(out)
    nb = read_workflow_notebook(notebook)
    if not nb.tasks and not nb.function_tasks and not nb.commands:
        raise ExportError(f"{notebook}: no %%nbflow task cells, %%nbflow command cells or "
                          "@flow.task functions to export")
    if out.suffix == ".py":
        out.write_text(export_module(nb, notebook.name, out.name))
        return [out]
    if out.suffix not in (".yaml", ".yml", ".json"):
        raise ExportError(f"{out}: export to a .py, .yaml, .yml or .json file")
    module = out.with_name(out.stem.replace("-", "_") + "_tasks.py")
    module.write_text(export_module(nb, notebook.name, module.name))
    dump_spec(export_spec(nb, module.stem), out)
    return [out, module]

