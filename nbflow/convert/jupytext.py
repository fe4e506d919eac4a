"""``nbflow convert --to jupytext``: a workflow as a py:percent workflow notebook.

The text notebook has a ``%load_ext nbflow`` cell, a parameters cell, the workflow's
code, one ``%%nbflow task`` (or ``%%nbflow command``) cell per task and a final
``%nbflow run``. jupytext (or JupyterLab with jupytext) opens it as a notebook that
runs to the same results. A task cell's body is the task's code: a notebook task's
cell body as it was, or ``NAME = function(arg=upstream, ...)`` for a spec's task.
"""

from __future__ import annotations

import ast
import shlex
import textwrap
from typing import Any

from ..errors import ExportError
from ..task import check_variable_name
from .model import ConvTask, ConvWorkflow, Param, Ref
from .script import refuse_unsupported, setup_code

__all__ = ["to_jupytext"]

_HEADER = """\
# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""


def to_jupytext(wf: ConvWorkflow) -> str:
    """The py:percent text; :class:`ExportError` names a task a notebook cannot declare."""
    refuse_unsupported(wf, "jupytext")
    for name, what in [*((t.name, "task") for t in wf.tasks), *((p, "parameter")
                                                               for p in wf.params)]:
        problem = check_variable_name(name)
        if problem is not None:
            raise ExportError(f"{what} {name!r}: a notebook reads it as a variable, and the "
                              f"name {problem}; rename it to convert to jupytext")
    about = f"\n#\n# {wf.description}" if wf.description else ""
    cells = [f"# %% [markdown]\n# # {wf.name}{about}\n#\n# Converted by "
             "`nbflow convert --to jupytext`: run all cells to run the workflow.",
             "# %%\n# %load_ext nbflow\nimport nbflow as nf"]
    if wf.params:
        cells.append('# %% tags=["parameters"]\n' + "\n".join(
            _parameter(p) for p in wf.params.values()))
    cells += [f"# %%\n{code.strip()}" for code in setup_code(wf)]
    functions = []
    for t in wf.tasks:
        if t.command:
            cells.append(_command_cell(t))
        elif t.source is not None:
            cells.append(_task_cell(t, _source_body(t)))
        elif t.use and not t.run_if:
            cells.append(_task_cell(t, _call_body(t)))
        else:
            functions.append(_function_task(t))
    if functions:
        imports = [line for f in functions for line in f if line.startswith("from ")]
        calls = [line for f in functions for line in f if not line.startswith("from ")]
        cells.append("# %%\n" + "".join(f"{line}\n" for line in dict.fromkeys(imports))
                     + ("\n" if imports else "") + "# tasks declared from functions\nflow = nf.notebook_flow()\n"
                     + "\n".join(calls))
    cells.append("# %%\n# %nbflow run")
    # jupytext leaves two blank lines after a cell that ends with a def or a class
    return _HEADER + "\n" + "".join(c + ("\n\n\n" if _ends_with_def(c) else "\n\n")
                                     for c in cells).rstrip("\n") + "\n"


def _ends_with_def(cell: str) -> bool:
    try:
        tree = ast.parse(cell)
    except SyntaxError:
        return False
    return bool(tree.body) and isinstance(tree.body[-1], (ast.FunctionDef, ast.AsyncFunctionDef,
                                                          ast.ClassDef))


def _parameter(p: Param) -> str:
    if p.has_default:
        line = f"{p.name} = {p.default!r}"
        comment = p.description
    else:
        line = f"{p.name} = None"
        kind = p.schema.get("type", "any")
        comment = (f"required ({kind}): set it before running (papermill -p {p.name} VALUE)"
                   + (f"; {p.description}" if p.description else ""))
    return f"{line}  # {comment}" if comment else line


def _options(t: ConvTask, upstream_map: str | None) -> str:
    """The ``%%nbflow`` header's task options."""
    words: list[str] = []
    if upstream_map is not None:
        words += ["--map", upstream_map]
    if t.after:
        words += ["--after", ",".join(t.after)]
    if t.run_on != "success":
        words += ["--run-on", t.run_on]
    if t.retries:
        words += ["--retries", str(t.retries)]
    if t.retry_delay:
        words += ["--retry-delay", repr(t.retry_delay)]
    if t.timeout is not None:
        words += ["--timeout", repr(t.timeout)]
    if t.max_parallel is not None:
        words += ["--max-parallel", str(t.max_parallel)]
    if t.image:
        words += ["--image", t.image]
    if t.export:
        words.append("--export")
    return "".join(" " + shlex.quote(w) for w in words)


def _mapped_upstream(t: ConvTask) -> str | None:
    """The upstream task a cell maps over (a cell names it, not the argument)."""
    return None if t.map is None else str(t.args[t.map].value)


def _task_cell(t: ConvTask, body: str) -> str:
    return f"# %%\n# %%nbflow task {t.name}{_options(t, _mapped_upstream(t))}\n{body}"


def _source_body(t: ConvTask) -> str:
    """The function's body as a cell body: its last ``return X`` becomes ``NAME = X``."""
    source = t.source or ""
    fn = ast.parse(source).body[0]
    assert isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
    lines = source.splitlines()
    start = fn.body[0].lineno - 1
    while start - 1 >= fn.lineno and lines[start - 1].strip().startswith("#"):
        start -= 1  # comments at the top of the body
    body = textwrap.dedent("\n".join(lines[start:])).splitlines()
    last = fn.body[-1]
    if isinstance(last, ast.Return):
        i = last.lineno - 1 - start
        value = last.value
        if isinstance(value, ast.Name) and value.id == t.name:
            del body[i: (last.end_lineno or last.lineno) - start]
        else:
            body[i] = body[i].replace("return", f"{t.name} =" if value else f"{t.name} = None",
                                      1)
    text = "\n".join(body).strip("\n")
    return text or f"{t.name} = None"


def _argument(r: Ref) -> str:
    return str(r.value) if r.kind in ("task", "param") else repr(r.value)


def _call_body(t: ConvTask) -> str:
    module, _, qualname = (t.use or "").partition(":")
    first = qualname.partition(".")[0]
    imports = f"from {module} import {first}"
    if first == t.name:  # not `items = items(...)`: the module names the function
        imports, qualname = f"import {module}", f"{module}.{qualname}"
    args = ", ".join(f"{a}={_argument(r)}" for a, r in t.args.items())
    call = f"{t.name} = {qualname}({args})"
    if len(call) > 99:
        call = f"{t.name} = {qualname}(\n" + "".join(
            f"    {a}={_argument(r)},\n" for a, r in t.args.items()) + ")"
    return f"{imports}\n\n{call}"


def _function_task(t: ConvTask) -> list[str]:
    """``flow.task(fn, name=..., options)`` for a function the workflow's code defines, or an
    importable one with a ``run_if`` (no cell option says run_if)."""
    options: dict[str, Any] = {}
    if t.map is not None:
        options["map"] = _mapped_upstream(t)
    for key, default in (("after", []), ("run_on", "success"), ("retries", 0),
                         ("retry_delay", 0.0), ("timeout", None), ("max_parallel", None),
                         ("export", False)):
        if getattr(t, key) != default:
            options[key] = getattr(t, key)
    words = [f"{k}={v!r}" for k, v in options.items()]
    fn = t.function
    lines = []
    if t.use:
        # the function's parameters must be the names of its upstreams and parameters
        renamed = [a for a, r in t.args.items() if r.kind == "value" or r.value != a]
        if renamed:
            raise ExportError(f"task {t.name!r}: run_if on a task whose arguments are renamed "
                              f"or literal ({', '.join(renamed)}) has no notebook form; "
                              "keep the spec, or convert to script")
        module, _, fn = t.use.partition(":")
        lines.append(f"from {module} import {fn.partition('.')[0]}")
    if t.run_if:
        module, _, predicate = t.run_if.partition(":")
        lines.append(f"from {module} import {predicate.partition('.')[0]}")
        words.append(f"run_if={predicate}")
    if t.name != fn:
        words.insert(0, f"name={t.name!r}")
    lines.append(f"flow.task({', '.join([fn, *words])})")
    return lines


def _command_cell(t: ConvTask) -> str:
    spec = t.command or {}
    words: list[str] = []
    for name, path in spec.get("outputs", {}).items():
        words += ["--output", f"{name}={path}"]
    if spec.get("stdin"):
        words += ["--stdin", spec["stdin"]]
    for name, value in spec.get("env", {}).items():
        words += ["--env", f"{name}={value}"]
    if not spec.get("text", True):
        words.append("--bytes")
    command = spec.get("command", "")
    if not isinstance(command, str):  # the list form: placeholders stay whole words
        command = " ".join(w if "{" in w else shlex.quote(w) for w in command)
    shell = spec.get("shell", "sh")
    if shell != "sh":
        command = f"#!/usr/bin/env {shell}\n{command}"
    header = "".join(" " + shlex.quote(w) for w in words) + _options(t, _mapped_upstream(t))
    return f"# %%\n# %%nbflow command {t.name}{header}\n{command}"
