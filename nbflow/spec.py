"""Workflows as YAML or JSON files.

.. code-block:: yaml

    nbflow: 1
    name: climate
    parameters:
      path: {type: string, default: data.nc, help: the NetCDF file}
    tasks:
      ds:
        use: xarray.open_dataset            # a registered task ...
        args: {path: {$param: path}}
      seasonal:
        use: nbflow_xarray.tasks:seasonal_mean   # ... or an importable function
        args: {ds: {$task: ds}}
        retries: 2

An argument is a literal, ``{$param: NAME}`` (a flow parameter),
``{$task: NAME}`` (another task's result) or ``{$value: ...}`` (a literal that
would otherwise look like a reference). Every task option of the Python API is
a key of the task. Files are read with safe loaders only and never evaluated;
every problem is reported with the file, the key path and the line.
"""

from __future__ import annotations

import importlib
import importlib.resources
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .cache import hash_bytes, hash_value
from .errors import NbflowError, SpecError, suggest
from .registry import registry
from .task import OPTION_NAMES, Task, TaskOptions, code_hash

if TYPE_CHECKING:
    from .flow import Flow

KeyPath = tuple[str | int, ...]
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "list": (list,), "object": (dict,), "any": (object,),
}
_REFS = ("$task", "$param", "$value")
_DEFAULT_OPTIONS = TaskOptions()


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The published JSON Schema of the spec format (``nbflow/spec.schema.json``)."""
    text = importlib.resources.files("nbflow").joinpath("spec.schema.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


# -- reading ------------------------------------------------------------------------------


@dataclass
class Spec:
    """A parsed, schema-valid spec and where each key sits in its file."""

    data: dict[str, Any]
    file: str | None = None
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def error(self, problem: str, path: KeyPath = ()) -> SpecError:
        """A :class:`SpecError` pointing at ``path`` (or its closest parent with a line)."""
        line = None
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                break
        return SpecError(problem, self.file, path, line)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("parameters") or {})

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["tasks"])


def load_spec(source: str | os.PathLike[str] | Mapping[str, Any]) -> Spec:
    """Read and check a spec: a path to a ``.yaml``/``.yml``/``.json`` file, or a mapping."""
    if isinstance(source, Mapping):
        spec = Spec(dict(source))
    else:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"cannot read the spec: {exc.strerror or exc}", str(path)) from exc
        spec = parse_spec(text, str(path))
    _check_schema(spec)
    return spec


def parse_spec(text: str, file: str | None = None) -> Spec:
    """Parse YAML or JSON text (JSON is YAML) with the safe loader, keeping line numbers."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"not valid YAML/JSON: {problem}", file, (), line) from None
    if not isinstance(data, dict):
        raise SpecError("a spec must be a mapping with 'name' and 'tasks'", file, (), 1)
    lines: dict[KeyPath, int] = {}
    _index_lines(node, (), lines)
    return Spec(data, file, lines)


def _index_lines(node: Any, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    if node is None:
        return
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines[child] = key.start_mark.line + 1
            _index_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _index_lines(value, (*path, i), lines)


def _check_schema(spec: Spec) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(spec.data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    path = tuple(error.absolute_path)
    problem = error.message
    if error.validator == "additionalProperties" and path[:1] == ("tasks",) and len(path) == 2:
        unknown = [k for k in spec.data["tasks"][path[1]] if k not in _task_keys()]
        if unknown:
            path = (*path, unknown[0])
            problem = f"{unknown[0]!r} is not a task key." + suggest(unknown[0], _task_keys())
    elif error.validator == "additionalProperties" and not path:
        unknown = [k for k in spec.data if k not in schema()["properties"]]
        if unknown:
            path = (unknown[0],)
            problem = f"{unknown[0]!r} is not a spec key." + suggest(
                unknown[0], schema()["properties"])
    raise spec.error(problem, path)


def _task_keys() -> list[str]:
    return list(schema()["$defs"]["task"]["properties"])


# -- functions ----------------------------------------------------------------------------


def resolve_function(name: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """A registered task (``namespace.function``) or an importable ``package.module:function``.

    ``base_dir`` (the spec's directory) goes on ``sys.path``, so a spec can name
    functions of a module that sits next to it.
    """
    if ":" not in name:
        return registry.get(name).fn
    if base_dir is not None and str(base_dir.resolve()) not in sys.path:
        sys.path.insert(0, str(base_dir.resolve()))
    module_name, _, attr = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        msg = f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        raise SpecError(msg) from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            known = [n for n in dir(target) if not n.startswith("_")]
            msg = f"{module_name!r} has no attribute {part!r}." + suggest(part, known)
            raise SpecError(msg)
        target = getattr(target, part)
    if not callable(target):
        raise SpecError(f"{name!r} is not callable")
    return target  # type: ignore[no-any-return]


def importable_name(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` when ``fn`` can be imported back by that name, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is fn else None


class SpecCall:
    """The function of a spec task: binds references and literals to the target's arguments.

    Its signature lists the task's inputs (referenced tasks and parameters), so
    nbflow derives dependencies from it exactly as from a hand-written task.
    """

    def __init__(self, use: str, fn: Callable[..., Any], refs: dict[str, tuple[str, str]],
                 literals: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.use = use
        self.fn = fn
        #: target argument -> ("task" | "param", input name)
        self.refs = refs
        #: target argument -> literal value
        self.literals = literals
        inputs = list(dict.fromkeys(name for _, name in refs.values()))
        self.__signature__ = inspect.Signature([
            inspect.Parameter(i, inspect.Parameter.KEYWORD_ONLY,
                              default=defaults.get(i, inspect.Parameter.empty))
            for i in inputs
        ])

    def __call__(self, **inputs: Any) -> Any:
        kwargs = dict(self.literals)
        for arg, (_, name) in self.refs.items():
            kwargs[arg] = inputs[name]
        return self.fn(**kwargs)

    def args_spec(self) -> dict[str, Any]:
        """The ``args`` mapping this call was built from."""
        out: dict[str, Any] = {}
        for arg, value in self.literals.items():
            out[arg] = {"$value": value} if _looks_like_ref(value) else value
        for arg, (kind, name) in self.refs.items():
            out[arg] = {f"${kind}": name}
        return out

    def code_key(self) -> str:
        try:
            literals = hash_value(self.literals)
        except ValueError:
            literals = repr(self.literals)
        return hash_bytes(self.use, code_hash(self.fn), literals, repr(sorted(self.refs.items())))

    def __repr__(self) -> str:
        return f"SpecCall({self.use!r})"


class SpecCondition:
    """A spec task's ``run_if``: the predicate gets the task's arguments by their names.

    ``run_if: testtasks.is_big`` on a task with ``args: {value: {$task: total}}``
    calls ``is_big(value=<total's result>)``.
    """

    def __init__(self, use: str, predicate: Callable[..., Any], call: SpecCall) -> None:
        self.use = use
        self.predicate = predicate
        self.call = call
        self.__signature__ = call.__signature__
        params = inspect.signature(predicate).parameters.values()
        self._names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def __call__(self, **inputs: Any) -> Any:
        args = dict(self.call.literals)
        for arg, (_, name) in self.call.refs.items():
            args[arg] = inputs[name]
        return self.predicate(**{n: args[n] for n in self._names if n in args})

    def __repr__(self) -> str:
        return f"SpecCondition({self.use!r})"


class AsyncSpecCall(SpecCall):
    """A :class:`SpecCall` of an ``async def`` function."""

    async def __call__(self, **inputs: Any) -> Any:
        return await super().__call__(**inputs)


def _looks_like_ref(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _REFS


def _nested_ref(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in _REFS or _nested_ref(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_nested_ref(v) for v in value)
    return False


# -- spec -> flow ---------------------------------------------------------------------------


def flow_from_spec(source: str | os.PathLike[str] | Mapping[str, Any] | Spec) -> Flow:
    """Build a :class:`~nbflow.Flow` from a spec; every problem is a :class:`SpecError`."""
    from .flow import Flow

    spec = source if isinstance(source, Spec) else load_spec(source)
    params = spec.parameters
    for pname, pinfo in params.items():
        _check_default(spec, pname, pinfo)
    task_names = list(spec.tasks)
    clash = sorted(set(params) & set(task_names))
    if clash:
        raise spec.error(f"{clash[0]!r} is both a parameter and a task; rename one",
                         ("parameters", clash[0]))
    flow = Flow(spec.name)
    flow.description = str(spec.data.get("description", ""))
    flow.parameter_info = {p: dict(i) for p, i in params.items()}
    for name, entry in spec.tasks.items():
        flow.add(_build_task(spec, name, entry, params, task_names))
    try:
        flow.plan(params={p: i["default"] for p, i in params.items() if "default" in i})
    except NbflowError as exc:
        if isinstance(exc, SpecError):
            raise
        if type(exc).__name__ == "MissingParameterError":
            return flow  # a required parameter: given at run time
        path: KeyPath = ("tasks",)
        task = getattr(exc, "task", None) or (getattr(exc, "cycle", None) or [None])[0]
        if task:
            path = ("tasks", task)
        raise spec.error(str(exc), path) from exc
    return flow


def _check_default(spec: Spec, name: str, info: Mapping[str, Any]) -> None:
    kind = info.get("type", "any")
    if "default" in info and not _type_ok(kind, info["default"]):
        raise spec.error(
            f"default {info['default']!r} is not of type {kind!r}",
            ("parameters", name, "default"),
        )


def _type_ok(kind: str, value: Any) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, PARAM_TYPES[kind])


def _build_task(spec: Spec, name: str, entry: Mapping[str, Any],
                params: Mapping[str, Mapping[str, Any]], task_names: list[str]) -> Task:
    base: KeyPath = ("tasks", name)
    use = entry["use"]
    try:
        fn = resolve_function(use, Path(spec.file).parent if spec.file else None)
    except SpecError as exc:
        raise spec.error(exc.problem, (*base, "use")) from None
    except NbflowError as exc:
        raise spec.error(str(exc), (*base, "use")) from None
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise spec.error(f"{use!r} has no inspectable signature: {exc}", (*base, "use")) from None
    accepted = {p.name for p in signature.parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())

    refs: dict[str, tuple[str, str]] = {}
    literals: dict[str, Any] = {}
    for arg, value in (entry.get("args") or {}).items():
        where = (*base, "args", arg)
        if arg not in accepted and not takes_kwargs:
            raise spec.error(f"{use} takes no argument {arg!r}." + suggest(arg, accepted), where)
        if _looks_like_ref(value):
            (kind, target), = value.items()
            if kind == "$value":
                literals[arg] = target
            elif kind == "$task":
                if target not in task_names:
                    raise spec.error(f"{target!r} is not a task of this spec."
                                     + suggest(str(target), task_names), (*where, "$task"))
                refs[arg] = ("task", target)
            else:
                if target not in params:
                    raise spec.error(f"{target!r} is not a parameter of this spec."
                                     + suggest(str(target), params), (*where, "$param"))
                refs[arg] = ("param", target)
        elif _nested_ref(value):
            raise spec.error("a $task/$param reference must be the whole argument value, "
                             "not nested in a list or mapping", where)
        else:
            literals[arg] = value
    required = [p.name for p in signature.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [r for r in required if r not in refs and r not in literals]
    if missing:
        raise spec.error(f"{use} needs argument(s) {', '.join(map(repr, missing))}",
                         (*base, "args"))

    options: dict[str, Any] = {k: v for k, v in entry.items()
                               if k not in ("use", "args", "doc") and k in OPTION_NAMES}
    if "map" in options:
        upstreams = [t for kind, t in refs.values() if kind == "task"]
        if options["map"] not in upstreams:
            raise spec.error(
                f"map={options['map']!r} must name a task passed in args ({{$task: NAME}})."
                + suggest(options["map"], upstreams), (*base, "map"))
    predicate = None
    if "run_if" in options:
        try:
            predicate = resolve_function(options.pop("run_if"),
                                         Path(spec.file).parent if spec.file else None)
        except NbflowError as exc:
            problem = exc.problem if isinstance(exc, SpecError) else str(exc)
            raise spec.error(problem, (*base, "run_if")) from None
    for a in options.get("after", ()):
        if a not in task_names:
            raise spec.error(f"after names {a!r}, which is not a task."
                             + suggest(a, task_names), (*base, "after"))

    defaults = {p: info["default"] for p, info in params.items() if "default" in info}
    cls = AsyncSpecCall if inspect.iscoroutinefunction(fn) else SpecCall
    call = cls(use, fn, refs, literals, defaults)
    if predicate is not None:
        options["run_if"] = SpecCondition(entry["run_if"], predicate, call)
    try:
        task = Task.from_function(call, name=name, options=options, code_key=call.code_key(),
                                  source=f"{spec.file or '<spec>'}:{spec.lines.get(base, '?')}")
    except NbflowError as exc:
        raise spec.error(str(exc), base) from None
    if cls is AsyncSpecCall:
        task = replace(task, is_async=True)
    return task


# -- flow -> spec -------------------------------------------------------------------------------


def flow_to_spec(flow: Flow) -> dict[str, Any]:
    """The spec of a flow whose task functions can be imported by name (or came from a spec)."""
    tasks: dict[str, Any] = {}
    for name, task in flow.tasks.items():
        fn = task.fn
        if isinstance(fn, SpecCall):
            entry: dict[str, Any] = {"use": fn.use}
            args = fn.args_spec()
        else:
            use = importable_name(fn)
            if use is None:
                msg = (f"task {name!r}: its function cannot be named in a spec (it is defined in "
                       "__main__, a notebook, a closure or a lambda); move it to a module")
                raise SpecError(msg)
            entry = {"use": use}
            args = {i: ({"$task": i} if i in flow else {"$param": i}) for i in task.inputs}
        if args:
            entry["args"] = args
        entry.update(_options_spec(name, task.options))
        tasks[name] = entry
    data: dict[str, Any] = {"nbflow": 1, "name": flow.name}
    description = getattr(flow, "description", "")
    if description:
        data["description"] = description
    info = getattr(flow, "parameter_info", {}) or {}
    parameters: dict[str, Any] = {}
    for pname, default in flow.parameters().items():
        entry = dict(info.get(pname, {}))
        if default is not ... and "default" not in entry:
            entry["default"] = default
        parameters[pname] = entry
    if parameters:
        data["parameters"] = parameters
    data["tasks"] = tasks
    return data


def _options_spec(task: str, options: TaskOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in OPTION_NAMES:
        value = getattr(options, key)
        if value == getattr(_DEFAULT_OPTIONS, key):
            continue
        if key == "after":
            value = list(value)
        elif key == "run_if":
            value = value.use if isinstance(value, SpecCondition) else importable_name(value)
            if value is None:
                raise SpecError(f"task {task!r}: its run_if cannot be named in a spec; "
                                "use a function defined in a module")
        elif key == "executor" and not isinstance(value, str):
            raise SpecError(f"task {task!r}: executor objects cannot be written to a spec")
        elif key == "resources":
            value = dict(value)
        out[key] = value
    return out


def dump_spec(data: Mapping[str, Any], path: str | os.PathLike[str] | None = None,
              fmt: str | None = None) -> str:
    """Spec text as YAML (default) or JSON (``fmt="json"`` or a ``.json`` path); written if a path is given."""
    if fmt is None:
        fmt = "json" if path is not None and str(path).endswith(".json") else "yaml"
    if fmt == "json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text)
    return text
