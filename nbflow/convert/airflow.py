"""The Airflow target of ``nbflow convert``: a DAG module written with the TaskFlow API.

One Airflow task per nbflow task (``@task``, or ``@task.bash`` for a command, or a
``DockerOperator`` for a command with an image). Parameters become DAG params, read
from the context when a task runs; ``map`` becomes dynamic task mapping
(``.partial(...).expand(...)``); ``run_on`` becomes a trigger rule (:data:`TRIGGER_RULES`);
``run_if`` skips the task from inside it; retries and timeouts become operator arguments.
A task's function is imported when the task runs (``use``) or defined in the module
(a notebook cell's ``source``, after the notebook's ``setup`` code), so the DAG file
imports cheaply. What Airflow cannot express raises :class:`~nbflow.errors.ExportError`
naming the task and the feature. See ``docs/convert-airflow.md``.
"""

from __future__ import annotations

import ast
import keyword
import re
import shlex

from ..errors import ExportError
from . import airflow_helpers
from .model import ConvTask, ConvWorkflow, Param

__all__ = ["TRIGGER_RULES", "to_airflow"]

#: nbflow ``run_on`` -> Airflow trigger rule. ``failure`` waits for every upstream
#: (``all_done``) and then skips itself unless one failed, as nbflow does; Airflow's
#: ``one_failed`` would start before the other upstreams are done.
TRIGGER_RULES = {"success": "all_success", "failure": "all_done", "always": "all_done"}

#: the order in which helpers are copied into the module (each after what it uses)
_HELPER_ORDER = ("ERROR_KEY", "Failed", "Skipped", "_record_failure", "_upstream_states",
                 "_skip_unless_failed", "_upstream", "_declared", "_check_run_if", "_command")


def _py(name: str) -> str:
    """A task, argument or parameter name as a part of a Python name (``combined-output``
    -> ``combined_output``); :func:`to_airflow` checks that no two names meet."""
    return re.sub(r"\W", "_", name)


def _check_python_names(wf: ConvWorkflow) -> None:
    seen: dict[str, str] = {}
    for t in wf.tasks:
        other = seen.setdefault(_py(t.name), t.name)
        if other != t.name:
            raise ExportError(f"tasks {other!r} and {t.name!r} would both be {_py(t.name)!r} "
                              "in the DAG's Python code; rename one")


def to_airflow(wf: ConvWorkflow) -> str:
    """The text of an Airflow DAG module equivalent to ``wf``.

    Raises :class:`ExportError` for a feature Airflow cannot express (a streaming task,
    ``run_on`` other than success on a mapped task, a Python task in a container, a
    command with ``stdin``, declared ``outputs`` or bytes output, ...).
    """
    _check_python_names(wf)
    return _Writer(wf).module()


def _literal(value: object, where: str) -> str:
    """``value`` as Python source; only values that read back equal (JSON-like data)."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        same = False
    if not same:
        raise ExportError(f"{where}: {text[:80]} cannot be written into the DAG as a literal")
    return text


def _param(p: Param) -> str:
    """``Param(default, type=..., ...)`` from the parameter's JSON Schema fragment."""
    schema = {k: v for k, v in p.schema.items() if k != "default"}
    if p.description and "description" not in schema:
        schema["description"] = p.description
    kind = schema.get("type")
    if p.has_default and p.default is None and isinstance(kind, str) and kind != "null":
        schema["type"] = [kind, "null"]  # Airflow validates the default against the type
    where = f"parameter {p.name!r}"
    args = [_literal(p.default, where)] if p.has_default else []
    extra = {}
    for key, value in sorted(schema.items()):
        if key.isidentifier() and not keyword.iskeyword(key):
            args.append(f"{key}={_literal(value, where)}")
        else:
            extra[key] = value
    if extra:
        args.append(f"**{_literal(extra, where)}")
    return f"Param({', '.join(args)})"


class _Writer:
    """Builds the module text of one workflow; every refusal happens before any text."""

    def __init__(self, wf: ConvWorkflow) -> None:
        self.wf = wf
        self.tasks = wf.by_name
        self.mapped = {t.name for t in wf.tasks if t.map is not None}
        trigger = [t for t in wf.tasks if t.run_on != "success"]
        #: tasks whose failure a trigger-rule task reads (their errors are kept as XComs)
        self.watched = {u for t in trigger for u in t.upstreams}
        self.helpers: set[str] = set()
        self.docker = False
        self.defined = _top_level_names(wf.setup)
        for t in wf.tasks:
            self._check(t)

    # -- refusals --------------------------------------------------------------------------

    def _check(self, t: ConvTask) -> None:
        def refuse(feature: str) -> ExportError:
            return ExportError(f"task {t.name!r}: {feature} has no Airflow equivalent; "
                               "change the workflow or convert to another target")

        if t.stream:
            raise refuse("a streaming task (a generator read while it runs)")
        if t.run_on not in TRIGGER_RULES:
            raise refuse(f"run_on={t.run_on!r}")
        if t.map is not None and t.run_on != "success":
            raise refuse(f"run_on={t.run_on!r} on a mapped task (nbflow applies it per branch)")
        if t.run_if is not None and ":" not in t.run_if:
            raise refuse(f"run_if={t.run_if!r} (not an importable 'module:function')")
        if t.image is not None and t.command is None:
            raise refuse(f"a Python task in a container (image={t.image!r})")
        if t.use is None and t.source is None and t.command is None \
                and t.function not in self.defined:
            raise ExportError(f"task {t.name!r}: its function {t.function!r} is not defined by "
                              "the workflow's code (is it a task of another flow?)")
        if t.command is not None:
            c = t.command
            if c.get("stdin"):
                raise refuse("a command's stdin")
            if c.get("outputs"):
                raise refuse("a command's declared outputs (files in nbflow's job directory)")
            if c.get("text") is False:
                raise refuse("a command's bytes output (text=False)")
            if "job_dir" in str(c.get("command")):
                raise refuse("the {job_dir} placeholder (nbflow's job directory)")
            if re.search(r"(?<!\{)\{\w+\.\w+\}", str(c.get("command"))):
                raise refuse("an {upstream.output} placeholder (a command's output file)")
            if t.image is not None and (t.map is not None or t.run_if is not None):
                raise refuse("map or run_if on a command in a container")
        for arg, ref in t.args.items():
            if ref.kind == "task" and ref.value not in self.tasks:
                raise ExportError(f"task {t.name!r}: argument {arg!r} names an unknown task "
                                  f"{ref.value!r}")

    # -- the module ------------------------------------------------------------------------

    def module(self) -> str:
        """Header, helpers, setup code, task functions, then the DAG."""
        body = [self._task(t) for t in self.wf.tasks]
        wiring = self._wiring()
        dag_args = self._dag_args()
        sdk = ["Param"] if self.wf.params else []
        if any(r.kind == "param" for t in self.wf.tasks if t.image is None
               for r in t.args.values()):
            sdk.append("get_current_context")
        imports = ["from __future__ import annotations", "", "import datetime", "",
                   f"from airflow.sdk import {', '.join(sorted([*sdk, 'dag', 'task']))}"]
        if self.helpers:
            imports.insert(3, "from typing import Any")
        if "_declared" in self.helpers:
            imports.insert(3, "import inspect")
        if self.docker:
            imports.insert(3, "import shlex")
            imports.append("from airflow.providers.docker.operators.docker import "
                           "DockerOperator")
        parts = [self._docstring(), "\n".join(imports) + "\n"]
        if self.helpers:
            order = [n for n in _HELPER_ORDER if n in self.helpers]
            parts.append("# -- nbflow's semantics, kept by these helpers --\n\n"
                         + airflow_helpers.source(*order))
        setup = _without_unused_nbflow(self.wf)
        if setup:
            parts.append("# -- the workflow's setup code --\n\n"
                         + "\n\n".join(code.strip("\n") + "\n" for code in setup))
        sources = [t.source.strip("\n") + "\n" for t in self.wf.tasks if t.source]
        if sources:
            parts.append("# -- the task functions --\n\n" + "\n\n".join(sources))
        parts.append("\n".join([f"@dag(\n    {dag_args},\n)", "def nbflow_dag():",
                                *body, *wiring]))
        parts.append('the_dag = nbflow_dag()\n\nif __name__ == "__main__":\n    the_dag.test()')
        return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"

    def _docstring(self) -> str:
        wf = self.wf
        lines = [f"Airflow DAG {wf.name!r}, written by `nbflow convert --to airflow` from a "
                 f"{wf.kind}.", ""]
        if wf.description:
            lines += [wf.description, ""]
        if any(t.use or t.run_if for t in wf.tasks):
            lines += ["Its tasks import their modules when they run: the folder of the "
                      "workflow must be on the", f"workers' Python path ({wf.base_dir}).", ""]
        lines.append("`python THIS_FILE` runs it once with dag.test(), from Airflow's dags folder.")
        text = "\n".join(lines).replace('"""', "'''").replace("\\", "\\\\")
        return f'"""{text}\n"""'

    def _dag_args(self) -> str:
        dag_id = re.sub(r"[^A-Za-z0-9_.-]", "_", self.wf.name) or "nbflow"
        params = "".join(f"\n        {p.name!r}: {_param(p)}," for p in self.wf.params.values())
        args = [f"dag_id={dag_id!r}", "schedule=None",
                "start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)",
                "catchup=False", "tags=['nbflow']", f"params={{{params}\n    }}"]
        if self.docker:  # DockerOperator commands quote their placeholders with it
            args.append("user_defined_filters={'shquote': shlex.quote}")
        if self.wf.description:
            args.insert(1, f"description={self.wf.description!r}")
        return ",\n    ".join(args)

    # -- one task --------------------------------------------------------------------------

    def _options(self, t: ConvTask) -> list[str]:
        opts = [f"task_id={t.name!r}"]
        if t.run_on != "success":
            opts.append(f"trigger_rule={TRIGGER_RULES[t.run_on]!r}")
        if t.retries:
            opts.append(f"retries={int(t.retries)}")
            opts.append(f"retry_delay=datetime.timedelta(seconds={float(t.retry_delay)!r})")
        if t.timeout is not None:
            opts.append(f"execution_timeout=datetime.timedelta(seconds={float(t.timeout)!r})")
        if t.max_parallel is not None and t.map is not None:
            opts.append(f"max_active_tis_per_dagrun={int(t.max_parallel)}")
        return opts

    def _inputs(self, t: ConvTask) -> tuple[list[str], dict[str, str]]:
        """The Airflow function's parameters (one per upstream argument), and the
        expression of every argument inside it."""
        params: list[str] = []
        exprs: dict[str, str] = {}
        for arg, ref in t.args.items():
            if ref.kind == "param":
                exprs[arg] = f"params[{ref.value!r}]"
            elif ref.kind == "value":
                exprs[arg] = _literal(ref.value, f"task {t.name!r}: argument {arg!r}")
            elif t.run_on != "success":
                self.helpers.update({"ERROR_KEY", "Failed", "Skipped", "_upstream_states",
                                     "_upstream"})
                exprs[arg] = f"_upstream({ref.value!r}, mapped={ref.value in self.mapped})"
            else:
                params.append(f"arg_{_py(arg)}")
                fan_in = ref.value in self.mapped and arg != t.map
                exprs[arg] = f"list(arg_{_py(arg)})" if fan_in else f"arg_{_py(arg)}"
        return params, exprs

    def _task(self, t: ConvTask) -> str:
        if t.command is not None and t.image is not None:
            return self._docker(t)
        params, exprs = self._inputs(t)
        decorator = "task.bash" if t.command is not None else "task"
        lines = [f"    @{decorator}({', '.join(self._options(t))})",
                 f"    def task_{_py(t.name)}({', '.join(params)}):"]
        if any(r.kind == "param" for r in t.args.values()):
            lines.append('        params = get_current_context()["params"]')
        if t.run_on == "failure":
            self.helpers.add("_upstream_states")
            self.helpers.add("_skip_unless_failed")
            lines.append(f"        _skip_unless_failed({t.upstreams!r})")
        kwargs = "".join(f"\n            {a!r}: {e}," for a, e in exprs.items())
        lines.append(f"        kwargs = {{{kwargs}\n        }}" if kwargs else "        kwargs = {}")
        if t.run_if is not None:
            self.helpers.update({"_declared", "_check_run_if"})
            lines += self._import(t.run_if, "predicate")
            lines.append("        _check_run_if(predicate, kwargs)")
        if t.command is not None:
            self.helpers.add("_command")
            c = t.command
            lines.append(f"        return _command({_literal(c['command'], t.name)}, kwargs, "
                         f"{_literal(dict(c.get('env') or {}), t.name)}, "
                         f"{c.get('shell') or 'sh'!r})")
            return "\n".join(lines) + "\n"
        if t.use is not None:
            lines += self._import(t.use, "fn")
            call = "fn(**kwargs)"
        else:
            call = f"{t.function}(**kwargs)"
        if t.is_async:
            call = f"__import__('asyncio').run({call})"
        elif t.source is not None and _is_generator(t.source):
            call = f"list({call})"  # nbflow reads a generator's items into a list
        if t.name in self.watched:
            self.helpers.update({"ERROR_KEY", "_record_failure"})
            lines += ["        try:", f"            return {call}",
                      "        except BaseException as exc:",
                      "            _record_failure(exc)", "            raise"]
        else:
            lines.append(f"        return {call}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _import(spec: str, alias: str) -> list[str]:
        """``from module import head as alias`` (then ``.rest`` of a dotted qualname)."""
        module, _, qualname = spec.partition(":")
        head, _, rest = qualname.partition(".")
        lines = [f"        from {module} import {head} as {alias}"]
        if rest:
            lines.append(f"        {alias} = {alias}.{rest}")
        return lines

    def _docker(self, t: ConvTask) -> str:
        """A command in a container: ``DockerOperator`` running ``sh -c SCRIPT``, the
        placeholders rendered by Jinja (params, upstream XComs), shell-quoted."""
        self.docker = True
        c = t.command or {}
        if not isinstance(c.get("command"), str):
            raise ExportError(f"task {t.name!r}: a list-form command in a container has no "
                              "Airflow equivalent here; write it as a string")
        jinja = {}
        for arg, ref in t.args.items():
            if ref.kind == "param":
                jinja[arg] = f"{{{{ params[{ref.value!r}] | string | shquote }}}}"
            elif ref.kind == "task":
                jinja[arg] = f"{{{{ ti.xcom_pull(task_ids={ref.value!r}) | string | shquote }}}}"
            else:
                jinja[arg] = shlex.quote(str(ref.value))
        script = c["command"].replace("{{", "\0").replace("}}", "\1")
        script = re.sub(r"\{(\w+)\}", lambda m: jinja.get(m.group(1), m.group(0)), script)
        script = script.replace("\0", "{").replace("\1", "}")
        opts = self._options(t)
        opts += [f"image={t.image!r}", f"command=['sh', '-c', {script!r}]"]
        if c.get("env"):
            env = {k: re.sub(r"\{(\w+)\}", lambda m: jinja.get(m.group(1), m.group(0)), v)
                   for k, v in c["env"].items()}
            opts.append(f"environment={env!r}")
        return f"    task_{_py(t.name)} = DockerOperator({', '.join(opts)})\n"

    # -- the graph -------------------------------------------------------------------------

    def _wiring(self) -> list[str]:
        """Call the task functions in dependency order; ``>>`` for order-only edges."""
        used = {u for t in self.wf.tasks for u in t.upstreams}
        lines: list[str] = []
        for t in self.wf.tasks:
            docker = t.command is not None and t.image is not None
            edges = t.upstreams if docker or t.run_on != "success" else t.after
            if docker:
                call = f"task_{_py(t.name)}"  # an operator: already in the DAG
            else:
                data = {f"arg_{_py(a)}": f"out_{_py(r.value)}" for a, r in t.args.items()
                        if r.kind == "task" and t.run_on == "success"}
                if t.map is not None:
                    mapped = data.pop(f"arg_{_py(t.map)}")
                    partial = ", ".join(f"{k}={v}" for k, v in data.items())
                    call = f"task_{_py(t.name)}.partial({partial}).expand(arg_{_py(t.map)}={mapped})"
                else:
                    call = f"task_{_py(t.name)}({', '.join(f'{k}={v}' for k, v in data.items())})"
            if t.name in used or edges:
                lines.append(f"    out_{_py(t.name)} = {call}")
            elif not docker:
                lines.append(f"    {call}")
            lines += [f"    out_{_py(up)} >> out_{_py(t.name)}" for up in edges]
        return lines


def _top_level_names(code: list[str]) -> set[str]:
    """The names the setup code defines at module level (functions, classes, imports, ...)."""
    names: set[str] = set()
    for block in code:
        try:
            tree = ast.parse(block)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).partition(".")[0] for a in node.names)
            else:
                names.update(n.id for n in ast.walk(node)
                             if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names


def _is_generator(source: str) -> bool:
    """Whether the function defined by ``source`` yields (nested functions aside)."""
    fn = ast.parse(source).body[0]
    todo: list[ast.AST] = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                 ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def _without_unused_nbflow(wf: ConvWorkflow) -> list[str]:
    """The setup code without its ``import nbflow`` lines when no code uses the name (a
    notebook's boilerplate), so the DAG needs only Airflow and the workflow's imports."""
    code = [*wf.setup, *(t.source for t in wf.tasks if t.source)]
    read = set()
    for block in code:
        try:
            read |= {n.id for n in ast.walk(ast.parse(block)) if isinstance(n, ast.Name)}
        except SyntaxError:
            return list(wf.setup)
    out = []
    for block in wf.setup:
        lines = block.splitlines()
        for node in reversed(ast.parse(block).body):
            if isinstance(node, ast.Import) and all(
                    a.name.partition(".")[0] == "nbflow" and (a.asname or a.name) not in read
                    for a in node.names):
                del lines[node.lineno - 1:node.end_lineno]
        if "\n".join(lines).strip():
            out.append("\n".join(lines))
    return out
