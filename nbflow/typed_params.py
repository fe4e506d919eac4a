"""Typed workflow parameters: types, constraints and descriptions, checked by pydantic.

A parameter's type comes from where it is declared:

- a Python task's signature: ``days: Annotated[int, Field(ge=1, description="...")] = 30``
  or a plain hint (``days: int = 30``);
- a notebook's ``parameters`` cell: the same annotation on the assignment
  (``days: Annotated[int, Field(ge=1)] = 30  # how far back``);
- a spec's ``parameters`` block: ``days: {type: integer, default: 30, minimum: 1,
  description: ...}`` (JSON Schema's own keywords).

Each becomes a :class:`TypedParam`, whose JSON Schema (types, default, description,
constraints) goes into the workflow's schema, and whose :meth:`TypedParam.check`
validates and coerces every value (``run(params=)``, ``-p``, ``-f``, an HTTP body, a
sweep grid) before anything runs. A default that breaks its own constraint is refused
where it is declared. pydantic is imported on first use.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from .errors import InvalidParameterError

__all__ = ["TypedParam", "annotation_from_spec", "check_params", "eval_annotation",
           "function_params"]

#: a spec's JSON Schema keywords -> pydantic ``Field`` arguments
SPEC_CONSTRAINTS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt",
                    "exclusiveMaximum": "lt", "minLength": "min_length",
                    "maxLength": "max_length", "pattern": "pattern",
                    "multipleOf": "multiple_of", "minItems": "min_length",
                    "maxItems": "max_length"}
_SPEC_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float,
                               "boolean": bool, "list": list, "object": dict, "any": Any}


@dataclass(frozen=True)
class TypedParam:
    """One parameter with a type pydantic checks (``annotation``), its default and help."""

    name: str
    annotation: Any
    default: Any = None
    has_default: bool = False
    description: str = ""
    #: where it was declared, for messages ("flow.yaml:4", "cell 2, line 3", "clean()")
    where: str = ""
    _adapter: Any = field(default=None, compare=False, repr=False)

    @property
    def adapter(self) -> Any:
        if self._adapter is None:
            from pydantic import TypeAdapter

            object.__setattr__(self, "_adapter", TypeAdapter(self.annotation))
        return self._adapter

    def schema(self) -> dict[str, Any]:
        """This parameter's JSON Schema: ``{}`` (any value) for a type JSON Schema cannot
        describe, with a warning naming the parameter."""
        from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError

        try:
            out = dict(self.adapter.json_schema())
        except (PydanticInvalidForJsonSchema, PydanticSchemaGenerationError) as exc:
            warnings.warn(f"parameter {self.name!r}{_at(self.where)}: its type cannot be "
                          f"described in JSON Schema ({exc}); it accepts any value there",
                          stacklevel=2)
            out = {}
        out.pop("title", None)
        if self.description:
            out["description"] = self.description
        if self.has_default:
            from .jsonvalues import jsonable

            out["default"] = jsonable(self.default)
        return out

    def check(self, value: Any) -> Any:
        """``value`` validated and coerced; :class:`InvalidParameterError` names the
        parameter, the value and the constraint it breaks."""
        from pydantic import ValidationError

        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidParameterError(self.name, value, _problem(exc)) from None

    def check_default(self) -> None:
        """Refuse a default that breaks the parameter's own type or constraints."""
        if not self.has_default:
            return
        try:
            self.check(self.default)
        except InvalidParameterError as exc:
            raise InvalidParameterError(self.name, self.default,
                                        f"{exc.constraint} (the default{_at(self.where)})"
                                        ) from None

    @property
    def constrained(self) -> bool:
        """True when the annotation carries metadata (``Annotated[..., Field(...)]``)."""
        return bool(getattr(self.annotation, "__metadata__", None))


def _at(where: str) -> str:
    return f" at {where}" if where else ""


def _problem(exc: Any) -> str:
    """pydantic's first error as one line: its message, and the constraint when it has one."""
    error = exc.errors()[0]
    message = str(error.get("msg", exc))
    ctx = {k: v for k, v in (error.get("ctx") or {}).items() if k != "error"}
    if ctx:
        message += " (" + ", ".join(f"{k}={v!r}" for k, v in ctx.items()) + ")"
    loc = [str(part) for part in error.get("loc", ())]
    return (f"at {'.'.join(loc)}: " if loc else "") + message


# -- where types come from -----------------------------------------------------------------


def annotation_from_spec(info: Mapping[str, Any]) -> Any:
    """The annotation a spec parameter block describes: its type with its constraints."""
    from pydantic import Field

    base = _SPEC_TYPES[str(info.get("type", "any"))]
    if "enum" in info:
        base = typing.Literal[tuple(info["enum"])]
    limits = {arg: info[key] for key, arg in SPEC_CONSTRAINTS.items() if key in info}
    return Annotated[base, Field(**limits)] if limits else base


#: names an annotation in a notebook's parameters cell may use (it is evaluated, so only
#: these: types and the pydantic Field that carries constraints)
def _annotation_names() -> dict[str, Any]:
    import datetime
    import pathlib

    from pydantic import Field

    names: dict[str, Any] = {t.__name__: t for t in (int, float, str, bool, list, dict,
                                                     tuple, set, bytes)}
    names.update({n: getattr(typing, n) for n in ("Annotated", "Literal", "Optional", "Union",
                                                  "Any", "List", "Dict", "Tuple")})
    names.update(Field=Field, datetime=datetime, date=datetime.date,
                 Path=pathlib.Path, typing=typing)
    return names


def eval_annotation(text: str, where: str) -> Any:
    """The annotation written as ``text`` in a parameters cell, or None (with a warning)
    when it uses anything but types, ``Annotated``, ``Literal`` and ``Field``.

    The notebook is not run: the annotation's syntax tree is checked to hold only those
    names, literals, subscripts, ``|`` and ``Field(keyword=literal)`` calls, and only
    then evaluated, with no builtins.
    """
    names = _annotation_names()
    try:
        tree = ast.parse(text, mode="eval")
        _check_annotation(tree.body, names)
        return eval(compile(tree, where, "eval"), {"__builtins__": {}}, names)
    except Exception as exc:
        warnings.warn(f"{where}: the annotation {text!r} cannot be read here ({exc}); the "
                      "parameter is untyped", stacklevel=2)
        return None


def _check_annotation(node: ast.expr, names: Mapping[str, Any]) -> None:
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"{node.id!r} is not a type nbflow knows here")
    elif isinstance(node, ast.Constant):
        return
    elif isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id in ("typing", "datetime")
                and not node.attr.startswith("_")):
            raise ValueError(f"{ast.unparse(node)!r} is not a type nbflow knows here")
    elif isinstance(node, ast.Subscript):
        _check_annotation(node.value, names)
        _check_annotation(node.slice, names)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for item in node.elts:
            _check_annotation(item, names)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        _check_annotation(node.left, names)
        _check_annotation(node.right, names)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        return  # -1
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "Field" and not node.args:
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ValueError("Field(**...) cannot be read here")
            _check_annotation(keyword.value, names)
    else:
        raise ValueError(f"{ast.unparse(node)!r} cannot be read without running the notebook")


@functools.lru_cache(maxsize=4096)
def function_params(fn: Callable[..., Any]) -> dict[str, TypedParam]:
    """The annotated parameters of a task function (hints resolved, extras kept)."""
    target = inspect.unwrap(fn)
    raw = getattr(target, "__annotations__", None)
    if not raw:
        return {}
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # a hint naming something the module does not have
        return {}
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    where = f"{getattr(target, '__qualname__', '?')}()"
    out = {}
    for p in signature.parameters.values():
        if p.name in hints and p.name != "return":
            has = p.default is not p.empty
            out[p.name] = TypedParam(p.name, hints[p.name], p.default if has else None, has,
                                     _description(hints[p.name]), where)
    return out


def _description(annotation: Any) -> str:
    for meta in getattr(annotation, "__metadata__", ()):
        text = getattr(meta, "description", None)
        if text:
            return str(text)
    return ""


def check_params(typed: Mapping[str, TypedParam], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each typed one validated and coerced (see :class:`TypedParam`)."""
    out = dict(params)
    for name, value in params.items():
        p = typed.get(name)
        if p is not None:
            out[name] = p.check(value)
            if isinstance(out[name], float) and not math.isfinite(out[name]):
                raise InvalidParameterError(name, value, "not a finite number")
    return out
