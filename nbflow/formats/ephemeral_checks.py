"""Checks of an Ephemeral job map's function tasks against their functions.

A function task names a function (``namespace``, ``method``); before anything
runs, it must exist, take the input dict first and accept the ``init_args``
(by name, and by type where the function annotates them), and return dicts
where it annotates its return. ``consumes`` and ``produces`` are checked as
Ephemeral checks them: against what the function declares (``consumes`` and
``produces`` attributes, a string or a list of strings, as in Ephemeral's task
definition files), and along each edge between function tasks, where the
parent's ``produces`` must be the child's ``consumes``.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, NbflowError, SpecError, suggest
from ..spec import Spec
from .ephemeral_runtime import resolve

__all__ = ("check_types", "function_of")


def function_of(spec: Spec, info: dict[str, Any], base_dir: str | None) -> Callable[..., Any]:
    """The function of a function task, its ``init_args`` checked against its signature."""
    where: tuple[str | int, ...] = ("tasks", info["index"])
    namespace, method = info["namespace"], info["method"]
    try:
        fn = resolve(namespace, method, base_dir, fresh=True)
    except SpecError as exc:
        key = "method" if " has no attribute " in exc.problem else "namespace"
        problem = exc.problem
        if key == "namespace":
            problem = (f"{namespace!r} is neither the namespace of a registered task "
                       f"'{namespace}.{method}' nor an importable module ({problem})."
                       + _namespace_hint(spec, namespace))
        raise spec.error(problem, (*where, key)) from None
    except NbflowError as exc:
        raise spec.error(str(exc), (*where, "namespace")) from None
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        raise spec.error(f"{namespace}.{method} has no inspectable signature: {exc}",
                         (*where, "method")) from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise spec.error(f"{namespace}.{method} takes no positional argument; an Ephemeral "
                         "function takes the input dict first", (*where, "method"))
    keywords = {p.name: p for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                              p.KEYWORD_ONLY)}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    init_args = info.get("init_args") or {}
    for arg in init_args:
        if arg not in keywords and not takes_kwargs:
            raise spec.error(f"{namespace}.{method} takes no keyword argument {arg!r}."
                             + suggest(str(arg), keywords), (*where, "init_args", arg))
    missing = [n for n, p in keywords.items() if p.default is p.empty and n not in init_args]
    if missing:
        raise spec.error(f"{namespace}.{method} needs init_args {', '.join(map(repr, missing))}",
                         (*where, "init_args" if "init_args" in info else "method"))
    _check_annotations(spec, info, fn, params[0] if positional else None)
    return fn


def _check_annotations(spec: Spec, info: Mapping[str, Any], fn: Callable[..., Any],
                       first: inspect.Parameter | None) -> None:
    """Where the function annotates them: it takes a dict first, it returns a dict or a
    list of dicts, and each of the ``init_args`` is of its parameter's type."""
    from ..typed_params import function_params

    where: tuple[str | int, ...] = ("tasks", info["index"])
    name = f"{info['namespace']}.{info['method']}"
    try:
        hints = typing.get_type_hints(inspect.unwrap(fn))
    except Exception:  # a hint naming what the module does not have: nothing to check
        return
    if first is not None and first.name in hints and not _takes_dict(hints[first.name]):
        raise spec.error(f"{name} takes {_show(hints[first.name])} first; an Ephemeral "
                         "function takes the input dict", (*where, "method"))
    if "return" in hints and not _gives_dicts(hints["return"]):
        raise spec.error(f"{name} returns {_show(hints['return'])}; an Ephemeral function "
                         "returns a dict or a list of dicts", (*where, "method"))
    typed = function_params(fn)
    for arg, value in (info.get("init_args") or {}).items():
        if arg in typed:
            try:
                typed[arg].check(value)
            except InvalidParameterError as exc:
                raise spec.error(f"{name} takes {arg} of type {_show(typed[arg].annotation)}: "
                                 f"{value!r} {exc.constraint}",
                                 (*where, "init_args", arg)) from None


def _show(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation).replace("typing.", "")


def _takes_dict(annotation: Any) -> bool:
    """Whether a parameter of this type may be given a dict."""
    if annotation in (Any, object):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_dict(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_takes_dict(a) for a in typing.get_args(annotation))
    if typing.is_typeddict(annotation):
        return True
    target = origin or annotation
    return isinstance(target, type) and issubclass(dict, target)


def _gives_dicts(annotation: Any) -> bool:
    """Whether a function annotated to return this returns a dict or a list of dicts."""
    if _takes_dict(annotation):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _gives_dicts(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return all(_gives_dicts(a) for a in typing.get_args(annotation))
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable,
                  collections.abc.Collection, collections.abc.MutableSequence):
        args = typing.get_args(annotation)
        return not args or _takes_dict(args[0])
    return annotation in (list, collections.abc.Sequence)


def _namespace_hint(spec: Spec, namespace: str) -> str:
    """Close names among the registered namespaces and the modules beside the job file."""
    from ..registry import registry

    names = {n.rpartition(".")[0] for n in registry}
    if spec.file:  # the modules and packages beside the job, and those of its package
        base = Path(spec.file).parent
        names |= {p.stem for p in base.iterdir()
                  if (p.suffix == ".py" and p.stem.isidentifier()) or (p / "__init__.py").is_file()}
        package = base / namespace.partition(".")[0]
        if (package / "__init__.py").is_file():
            for i, file in enumerate(package.rglob("*.py")):
                if i >= 2000:  # a huge tree: enough candidates
                    break
                parts = file.relative_to(base).with_suffix("").parts
                names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return suggest(namespace, names)


def _declared(fn: Callable[..., Any], key: str) -> list[str] | None:
    """What a function says it consumes or produces, when it says so."""
    value = getattr(fn, key, None)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def check_types(spec: Spec, tasks: Mapping[str, dict[str, Any]],
                functions: Mapping[str, Callable[..., Any]]) -> None:
    """``consumes``/``produces`` against the functions' declarations and along the edges."""
    for name, fn in functions.items():
        info = tasks[name]
        for key in ("consumes", "produces"):
            declared = _declared(fn, key)
            if declared is not None and key in info and info[key] not in declared:
                raise spec.error(f"{info['namespace']}.{info['method']} {key} "
                                 f"{' or '.join(map(repr, declared))}, not {info[key]!r}."
                                 + suggest(info[key], declared), ("tasks", info["index"], key))
    edges = spec.data["workflow"]
    for i, (src, dst) in enumerate(edges):
        up, down = tasks[src], tasks[dst]
        if up["type"] == down["type"] == "function" and "produces" in up and "consumes" in down \
                and up["produces"] != down["consumes"]:
            raise spec.error(f"{src!r} produces {up['produces']!r} but {dst!r} consumes "
                             f"{down['consumes']!r}", ("workflow", i))
