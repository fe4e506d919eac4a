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

A task may run a command instead (``command:``, with ``outputs:``, ``stdin:``,
``env:``, ``text:``; see :mod:`nbflow.spec_commands`). An argument is a literal, ``{$param: NAME}`` (a flow parameter),
``{$task: NAME}`` (another task's result) or ``{$value: ...}`` (a literal that
would otherwise look like a reference). Every task option of the Python API is
a key of the task. Every problem is reported with the file, the key path and
the line.

A spec is code, like a script: it runs the functions it names. The file itself
is read with YAML's safe loader (it builds no Python objects, and aliases are
bounded: :mod:`nbflow.yaml_safe`), but loading a spec imports the modules it
names and running it calls their functions (:mod:`nbflow.spec_calls`).
:func:`flow_to_spec` and :func:`dump_spec` (:mod:`nbflow.spec_write`) go the
other way.
"""

from __future__ import annotations

import importlib.resources
import inspect
import json
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import yaml_safe
from .errors import InvalidParameterError, NbflowError, SpecError, suggest
from .key_parts import FunctionKey
from .spec_calls import (
    AsyncSpecCall,
    SpecCall,
    SpecCondition,
    importable_name,
    imported_modules,
    looks_like_ref,
    nested_ref,
    resolve_function,
    spec_call_class,
)
from .spec_commands import check_kinds, command_task_of
from .spec_write import dump_spec, flow_to_spec
from .task import OPTION_NAMES, Task

if TYPE_CHECKING:
    from .flow import Flow
    from .typed_params import TypedParam

KeyPath = tuple[str | int, ...]
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "list": (list,), "object": (dict,), "any": (object,),
}
__all__ = [
    "AsyncSpecCall", "Spec", "SpecCall", "SpecCondition", "dump_spec", "flow_from_spec",
    "flow_to_spec", "importable_name", "imported_modules", "load_spec", "parse_spec",
    "resolve_function", "schema",
]


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
    #: the file's own format ("nbflow", "ephemeral", "cryocloud", "ecoscope"): ``data`` is
    #: its nbflow translation when it is another one (see ``nbflow/formats``)
    source_format: str = "nbflow"

    def error(self, problem: str, path: KeyPath = ()) -> SpecError:
        """A :class:`SpecError` pointing at ``path`` (or its closest parent with a line)."""
        line = None
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                break
        shown = tuple(yaml_safe.short(p, 80) if isinstance(p, str) else p for p in path)
        return SpecError(yaml_safe.short(problem, 1000), self.file, shown, line)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("parameters") or {})

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["tasks"])

    @property
    def base_dir(self) -> Path | None:
        """The spec's directory, where modules it names may sit (None for a mapping)."""
        return Path(self.file).parent if self.file else None

    @property
    def uses(self) -> list[str]:
        """Every function the spec names (``use:`` and ``run_if:``), in order, once each."""
        names = [n for entry in self.tasks.values()
                 for n in (entry.get("use"), entry.get("run_if")) if isinstance(n, str)]
        if self.source_format != "nbflow":  # and the functions the adapters call
            from .formats import own_uses

            names += own_uses(self.source_format, self.data)
        return list(dict.fromkeys(names))


def load_spec(source: str | os.PathLike[str] | Mapping[str, Any]) -> Spec:
    """Read and check a spec: a path to a ``.yaml``/``.yml``/``.json`` file, or a mapping."""
    from .formats import to_nbflow

    if isinstance(source, Mapping):
        spec = Spec(dict(source))
    else:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"cannot read the spec: {exc.strerror or exc}", str(path)) from exc
        spec = parse_spec(text, str(path))
    spec = to_nbflow(spec)  # another system's workflow file: read into an nbflow spec
    _check_schema(spec)
    return spec


def parse_spec(text: str, file: str | None = None) -> Spec:
    """Parse YAML or JSON text (JSON is YAML) with the bounded safe loader, keeping line numbers."""
    try:
        data, node = yaml_safe.load_with_nodes(text)
    except yaml.YAMLError as exc:
        problem, line = yaml_safe.describe(exc)
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

    check_kinds(spec)  # use: or command:, said plainly (the schema's oneOf would not)
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
    flow.parameter_types = {p: spec_param(spec, p, i) for p, i in params.items()}
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
            f"default {yaml_safe.short(repr(info['default']))} is not of type {kind!r}",
            ("parameters", name, "default"),
        )
    try:
        spec_param(spec, name, info).check_default()
    except InvalidParameterError as exc:
        raise spec.error(exc.constraint.partition(" (the default")[0] + f": the default "
                         f"{yaml_safe.short(repr(info.get('default')))} breaks it",
                         ("parameters", name, "default")) from None
    except Exception as exc:  # a pattern that is not a regular expression, say
        raise spec.error(f"cannot use these constraints: {exc}".splitlines()[0],
                         ("parameters", name)) from None


def spec_param(spec: Spec, name: str, info: Mapping[str, Any]) -> TypedParam:
    """A spec parameter block as a typed parameter (pydantic checks its values)."""
    from .typed_params import TypedParam, annotation_from_spec

    where = f"{spec.file or '<spec>'}:{spec.lines.get(('parameters', name), '?')}"
    return TypedParam(name, annotation_from_spec(info), info.get("default"),
                      "default" in info, str(info.get("description") or info.get("help") or ""),
                      where)


def _type_ok(kind: str, value: Any) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, PARAM_TYPES[kind])


def _build_task(spec: Spec, name: str, entry: Mapping[str, Any],
                params: Mapping[str, Mapping[str, Any]], task_names: list[str]) -> Task:
    base: KeyPath = ("tasks", name)
    if "command" in entry:
        command_options = {k: v for k, v in entry.items() if k in OPTION_NAMES}
        _check_options(spec, base, command_options, task_names)
        return command_task_of(spec, name, entry, command_options, params, task_names)
    use = entry["use"]
    try:
        fn = resolve_function(use, spec.base_dir)
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
        if looks_like_ref(value):
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
        elif nested_ref(value):
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
    _check_executor(spec, base, options)
    if "map" in options:
        upstreams = [t for kind, t in refs.values() if kind == "task"]
        if options["map"] not in upstreams:
            raise spec.error(
                f"map={options['map']!r} must name a task passed in args ({{$task: NAME}})."
                + suggest(options["map"], upstreams), (*base, "map"))
    predicate = None
    if "run_if" in options:
        try:
            predicate = resolve_function(options.pop("run_if"), spec.base_dir)
        except NbflowError as exc:
            problem = exc.problem if isinstance(exc, SpecError) else str(exc)
            raise spec.error(problem, (*base, "run_if")) from None
    _check_after(spec, base, options, task_names)

    defaults = {p: info["default"] for p, info in params.items() if "default" in info}
    cls = spec_call_class(fn)
    call = cls(use, fn, refs, literals, defaults)
    if predicate is not None:
        options["run_if"] = SpecCondition(entry["run_if"], predicate, call)
    target = inspect.unwrap(fn)
    # the helpers, local modules, package versions and globals the function reaches are
    # part of the key too (nbflow.key_parts), as for a @flow.task function
    key_extra = FunctionKey(target) if isinstance(target, types.FunctionType) else None
    try:
        task = Task.from_function(call, name=name, options=options, code_key=call.code_key(),
                                  key_extra=key_extra,
                                  source=f"{spec.file or '<spec>'}:{spec.lines.get(base, '?')}")
    except NbflowError as exc:
        raise spec.error(str(exc), base) from None
    if cls is AsyncSpecCall:
        task = replace(task, is_async=True)
    return task


def _check_options(spec: Spec, base: KeyPath, options: Mapping[str, Any],
                   task_names: list[str]) -> None:
    _check_executor(spec, base, options)
    _check_after(spec, base, options, task_names)


def _check_executor(spec: Spec, base: KeyPath, options: Mapping[str, Any]) -> None:
    executor = options.get("executor")
    if executor is not None:
        from .executors import EXECUTORS

        if executor not in EXECUTORS:
            raise spec.error(f"executor {yaml_safe.short(executor)!r} is not an executor."
                             + suggest(executor, EXECUTORS)
                             + f" Executors: {', '.join(sorted(EXECUTORS))}.",
                             (*base, "executor"))


def _check_after(spec: Spec, base: KeyPath, options: Mapping[str, Any],
                 task_names: list[str]) -> None:
    for a in options.get("after", ()):
        if a not in task_names:
            raise spec.error(f"after names {a!r}, which is not a task."
                             + suggest(a, task_names), (*base, "after"))
